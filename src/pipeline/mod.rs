//! Pipeline step execution: one decoded job through route → provider calls → a result, or a
//! classified failure. Kafka stays outside: this module neither reads nor writes records.
//!
//! Attempts: each allowed candidate in route order gets up to `worker.provider_attempts` calls.
//! A retryable error (timeout, connection, 5xx, 429, invalid output) waits an exponential
//! backoff with jitter, or the provider's Retry-After when that is longer (up to a cap), then
//! retries the same model; a model-specific error (bad credentials, context too long) moves to
//! the next candidate; a request error (content filter, other 4xx) fails the job at once.
//! Every billed attempt counts toward the job's cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use serde_json::Value;

use crate::config::{Config, ContentFilterPolicy, RouteConfig, StepConfig};
use crate::envelope::{ClassifierCall, ErrorClass, Job, JobResult, Output};
use crate::fallback::limits::{Grant, ModelLimits};
use crate::fallback::{Admission, CircuitState, Circuits};
use crate::providers::{ChatRequest, Disposition, Provider, ProviderError};
use crate::router::latency::LatencyBook;
use crate::router::{self, ClassChoice, DecideInput, Prompt};
use crate::telemetry;

/// How long a job whose every allowed model's circuit is open waits for a half-open model's
/// probe to decide, before going to a retry tier.
pub const PROBE_WAIT: Duration = Duration::from_secs(3);

/// The longest Retry-After honoured in process; a longer one ends this model's attempts.
pub const MAX_IN_PROCESS_RETRY_AFTER: Duration = Duration::from_secs(10);

/// How a guarded call went.
enum Guarded {
    /// The model's circuit is open: not called.
    CircuitOpen,
    /// No rate-limit capacity came in time: not called.
    NoCapacity,
    /// Called: the result and how long it took.
    Called(
        Result<crate::providers::Completion, ProviderError>,
        Duration,
    ),
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// A model answered.
    Done(Box<JobResult>),
    /// No model could; the job is dead-lettered.
    Failed(StepFailure),
}

/// A failed step: what a dead letter says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFailure {
    /// The error class.
    pub class: ErrorClass,
    /// A readable message (never the prompt).
    pub message: String,
    /// The last model tried.
    pub last_model: Option<String>,
    /// Provider calls made.
    pub attempts: u32,
    /// The job's A/B variant, when its route has variants.
    pub variant: Option<String>,
    /// The provider asked to wait this long (a Retry-After beyond the in-process cap): the
    /// job's retry tier is due no sooner.
    pub retry_after: Option<Duration>,
    /// What this round billed anyway (a classification, answers that failed validation), USD.
    pub cost_usd: f64,
}

/// What a step needs: the config and one provider client per model (same indices).
#[derive(Debug, Clone)]
pub struct StepRunner {
    config: Arc<Config>,
    providers: Arc<Vec<Provider>>,
    latency: Arc<LatencyBook>,
    circuits: Arc<Circuits>,
    limits: Arc<Vec<ModelLimits>>,
}

impl StepRunner {
    /// A runner over `providers`, which must be indexed like `config.models`.
    pub fn new(config: Arc<Config>, providers: Vec<Provider>) -> Self {
        assert_eq!(
            config.models.len(),
            providers.len(),
            "one provider per model"
        );
        // Load the tokenizers now rather than on the first job (tens of milliseconds each).
        let mut kinds = Vec::new();
        for m in &config.models {
            if !kinds.contains(&m.tokenizer) {
                kinds.push(m.tokenizer);
            }
        }
        for k in kinds {
            router::tokens::count_text(k, "warm up");
        }
        StepRunner {
            latency: Arc::new(LatencyBook::new(config.models.len())),
            circuits: Arc::new(Circuits::new(
                config.models.len(),
                config.circuit_breaker,
                config.out_of_rotation,
            )),
            limits: Arc::new(
                config
                    .models
                    .iter()
                    .map(|m| ModelLimits::new(m.rate_limit))
                    .collect(),
            ),
            config,
            providers: Arc::new(providers),
        }
    }

    /// Builds every model's provider (reading API keys from the environment).
    pub fn from_config(config: Arc<Config>) -> Result<Self, crate::config::ConfigErrors> {
        let http = crate::providers::http_client();
        let mut providers = Vec::new();
        let mut errors = Vec::new();
        for m in &config.models {
            match Provider::new(m, http.clone()) {
                Ok(p) => providers.push(p),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(crate::config::ConfigErrors {
                source_name: None,
                errors,
            });
        }
        Ok(StepRunner::new(config, providers))
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The latency medians the router reads.
    pub fn latency(&self) -> &Arc<LatencyBook> {
        &self.latency
    }

    /// Asks the route's classifier for the class of `job` (one call, no retries: a failed or
    /// off-label answer means the default class). Returns the choice, the call's record, and
    /// what it cost.
    async fn classify(
        &self,
        step: &StepConfig,
        route: &RouteConfig,
        job: &Job,
        prompt: &Prompt,
        spent_before: f64,
        variant: Option<&str>,
    ) -> (ClassChoice, Option<ClassifierCall>, f64) {
        let gated =
            router::gated_classifier_request(&self.config, route, job, prompt, spent_before);
        let (Some(gated), Some(c)) = (gated, route.classifier.as_ref()) else {
            return (ClassChoice::Default("no rule matched".into()), None, 0.0);
        };
        let model = &self.config.models[c.model];
        let (m, request, prompt_tokens) = match gated {
            Ok(r) => r,
            Err(why) => {
                let (choice, call) = router::classifier_skipped(&model.name, why);
                return (choice, Some(call), 0.0);
            }
        };
        let tokens = prompt_tokens + u64::from(request.max_tokens.unwrap_or(0));
        let (result, elapsed) = match self.guarded_call(m, &request, tokens, None, step).await {
            Guarded::Called(result, elapsed) => (result, elapsed),
            skipped => {
                let why = match skipped {
                    Guarded::CircuitOpen => format!("{}'s circuit is open", model.name),
                    _ => format!("no rate-limit capacity on {}", model.name),
                };
                let (choice, call) = router::classifier_skipped(&model.name, why);
                return (choice, Some(call), 0.0);
            }
        };
        let outcome = result
            .as_ref()
            .map_or_else(|e| e.class().as_str(), |_| "ok");
        telemetry::provider_call(model, &step.pipeline, &step.name, variant, outcome, elapsed);
        // Not recorded in the latency window: a one-word answer is not the model's latency for
        // real work.
        match result {
            Ok(c) => {
                let cost = model.usage_cost_usd(&c.usage);
                telemetry::provider_usage(model, &step.pipeline, variant, c.usage, cost);
                let (choice, call) = router::classifier_answered(route, &model.name, &c.text, cost);
                (choice, Some(call), cost)
            }
            Err(e) => {
                let call = ClassifierCall {
                    model: model.name.clone(),
                    error: Some(format!("{} ({})", e.class().as_str(), e)),
                    ..ClassifierCall::default()
                };
                let why = format!("classifier failed: {}", e.class().as_str());
                (ClassChoice::Default(why), Some(call), 0.0)
            }
        }
    }

    /// One call to model `m` behind its circuit and its rate limit: admitted by the circuit,
    /// given capacity for `tokens`, bounded by `limit` when given; the circuit and the limit then
    /// learn how it went.
    async fn guarded_call(
        &self,
        m: usize,
        request: &ChatRequest,
        tokens: u64,
        limit: Option<Duration>,
        step: &StepConfig,
    ) -> Guarded {
        let admission = self.circuits.admit(m, Instant::now());
        if let Admission::Skip(_) = admission {
            telemetry::circuit_skip(&self.config.models[m].name, &step.pipeline, &step.name);
            return Guarded::CircuitOpen;
        }
        let Some(grant) = self.capacity(m, tokens, step).await else {
            return Guarded::NoCapacity;
        };
        let started = Instant::now();
        let call = self.providers[m].complete(request);
        let result = match limit {
            None => call.await,
            Some(left) => tokio::time::timeout(left, call)
                .await
                .unwrap_or(Err(ProviderError::Timeout(left))),
        };
        let elapsed = started.elapsed();
        self.record_circuit(m, admission, result.as_ref().err());
        if let Some(g) = grant {
            let used = result.as_ref().map_or(0, |c| c.usage.total_tokens);
            self.limits[m].settle(g, used);
        }
        Guarded::Called(result, elapsed)
    }

    /// Waits for model `m`'s rate-limit capacity: `Some(None)` when it has no limits,
    /// `Some(grant)` when capacity was granted, `None` when none came within the wait.
    async fn capacity(&self, m: usize, tokens: u64, step: &StepConfig) -> Option<Option<Grant>> {
        let limits = &self.limits[m];
        if !limits.is_limited() {
            return Some(None);
        }
        let name = &self.config.models[m].name;
        let started = Instant::now();
        match limits
            .acquire(tokens, self.config.worker.rate_limit_wait)
            .await
        {
            Ok(g) => {
                telemetry::rate_limit_wait(name, started.elapsed());
                Some(Some(g))
            }
            Err(e) => {
                telemetry::rate_limit_wait(name, e.waited);
                telemetry::rate_limit_saturated(name, &step.pipeline, &step.name);
                None
            }
        }
    }

    /// Tells model `m`'s circuit how a call admitted as `admission` went.
    fn record_circuit(&self, m: usize, admission: Admission, error: Option<&ProviderError>) {
        let now = Instant::now();
        let changed = match error {
            None => self.circuits.succeeded(m, now, admission),
            Some(e) => self.circuits.failed(m, now, admission, e),
        };
        if let Some(state) = changed {
            let name = &self.config.models[m].name;
            match state {
                CircuitState::Open => tracing::warn!(
                    model = %name,
                    "circuit opened: calls skip this model until a probe succeeds"
                ),
                _ => tracing::info!(model = %name, ?state, "circuit changed"),
            }
            telemetry::circuit_state(name, state);
        }
    }

    /// Runs `job` through `step`; `key` is the record key (the job id when the record has none),
    /// which keeps a job's A/B variant sticky.
    ///
    /// `spent_before` is what earlier steps of the pipeline billed for this job: the job's cost
    /// ceiling covers the whole pipeline.
    pub async fn run(
        &self,
        step: &StepConfig,
        job: &Job,
        key: &str,
        spent_before: f64,
    ) -> StepOutcome {
        let started = Instant::now();
        let started_at = crate::util::now_rfc3339();
        let route = &self.config.routes[step.route];
        let prompt = Prompt::new(step, job);
        let variant = router::pick_variant(route, key);
        let (choice, classifier, mut cost) =
            match router::classify_by_rules(&self.config, route, job, &prompt) {
                Some(m) => (ClassChoice::Rule(m), None, 0.0),
                None => {
                    let v = route.variants[variant.0].name.as_deref();
                    self.classify(step, route, job, &prompt, spent_before, v)
                        .await
                }
            };
        let latency = &self.latency;
        let decided = router::decide(
            &self.config,
            job,
            DecideInput {
                step,
                prompt: &prompt,
                key,
                variant,
                choice: &choice,
                spent_usd: spent_before + cost,
            },
            classifier,
            &|m| latency.p50(m),
        );
        let decision = match decided {
            Ok(d) => d,
            Err(e) => {
                return StepOutcome::Failed(StepFailure {
                    class: ErrorClass::PolicyUnsatisfiable,
                    message: e.to_string(),
                    last_model: None,
                    attempts: 0,
                    variant: e.decision.record.variant.clone(),
                    retry_after: None,
                    cost_usd: cost,
                })
            }
        };
        let variant_name = decision.record.variant.clone();
        if let Some(&first) = decision.candidates.first() {
            telemetry::routed(
                &step.pipeline,
                &step.name,
                &self.config.models[first].name,
                variant_name.as_deref(),
            );
        }
        let max_cost = job.policy.as_ref().and_then(|p| p.max_cost_usd);
        let base_request = &prompt.request;
        let mut attempts = 0u32;
        let mut last: Option<(usize, ProviderError)> = None;
        let mut out_of_budget = None;
        let mut circuit_open: Vec<String> = Vec::new();
        let mut saturated: Vec<String> = Vec::new();
        let deadline = started + self.config.worker.round_deadline;
        let mut deadline_passed = false;
        // After a context-length refusal only a model with a larger window may help.
        let mut window_exceeded: Option<u32> = None;
        let mut retry_after: Option<Duration> = None;
        // Provider endpoints whose content filter refused the job (when the route moves on).
        let mut filtered_by: Vec<&str> = Vec::new();
        let mut waited_for_probe = false;
        let mut stuck;
        'round: loop {
            'models: for &m in &decision.candidates {
                let model = &self.config.models[m];
                if window_exceeded.is_some_and(|w| model.context_window <= w)
                    || filtered_by.contains(&model.base_url.as_str())
                {
                    continue 'models;
                }
                let mut backoff = attempt_backoff();
                for attempt in 1..=self.config.worker.provider_attempts {
                    if Instant::now() >= deadline {
                        deadline_passed = true;
                        break 'models;
                    }
                    // The cost ceiling holds per call: the answer may not outgrow what is left.
                    let mut request = base_request.clone();
                    let prompt_tokens = prompt.tokens(model.tokenizer);
                    match router::output_cap_within_budget(
                        model,
                        prompt_tokens,
                        max_cost.map(|m| m - spent_before - cost),
                    ) {
                        Some(cap) if cap < 1 => {
                            out_of_budget = Some(model.name.clone());
                            continue 'models;
                        }
                        Some(cap) => {
                            request.max_tokens = Some(
                                request
                                    .max_tokens
                                    .map_or(cap, |t| u64::from(t).min(cap))
                                    .min(u64::from(u32::MAX))
                                    as u32,
                            )
                        }
                        None => {}
                    }
                    let estimate = prompt_tokens
                        + u64::from(
                            request
                                .max_tokens
                                .unwrap_or(router::DEFAULT_EXPECTED_OUTPUT_TOKENS),
                        );
                    let left = deadline.saturating_duration_since(Instant::now());
                    let (result, elapsed) = match self
                        .guarded_call(m, &request, estimate, Some(left), step)
                        .await
                    {
                        Guarded::Called(result, elapsed) => (result, elapsed),
                        Guarded::CircuitOpen => {
                            circuit_open.push(model.name.clone());
                            continue 'models;
                        }
                        Guarded::NoCapacity => {
                            saturated.push(model.name.clone());
                            continue 'models;
                        }
                    };
                    attempts += 1;
                    match result {
                        Ok(c) => {
                            self.latency.record(m, elapsed);
                            let call_cost = model.usage_cost_usd(&c.usage);
                            cost += call_cost;
                            let v = variant_name.as_deref();
                            telemetry::provider_call(
                                model,
                                &step.pipeline,
                                &step.name,
                                v,
                                "ok",
                                elapsed,
                            );
                            telemetry::provider_usage(model, &step.pipeline, v, c.usage, call_cost);
                            let json = parse_json(&c.text);
                            return StepOutcome::Done(Box::new(JobResult {
                                id: job.id.clone(),
                                pipeline: step.pipeline.clone(),
                                step: step.name.clone(),
                                tenant: job.tenant.clone(),
                                conversation_id: job.conversation_id.clone(),
                                output: Output {
                                    text: c.text,
                                    json,
                                    finish_reason: c.finish_reason,
                                },
                                model: model.name.clone(),
                                provider: model.provider.as_str().to_string(),
                                variant: variant_name,
                                usage: c.usage,
                                cost_usd: router::round_usd(cost),
                                latency_ms: started.elapsed().as_millis() as u64,
                                attempts,
                                retries: 0,
                                route: decision.record,
                                started_at,
                                finished_at: crate::util::now_rfc3339(),
                                metadata: job.metadata.clone(),
                            }));
                        }
                        Err(e) => {
                            telemetry::provider_call(
                                model,
                                &step.pipeline,
                                &step.name,
                                variant_name.as_deref(),
                                e.class().as_str(),
                                elapsed,
                            );
                            // A model that times out is at least that slow.
                            if matches!(e, ProviderError::Timeout(_)) {
                                self.latency.record(m, elapsed);
                            }
                            let mut disposition = e.disposition();
                            if let ProviderError::ContextLength(_) = e {
                                window_exceeded = window_exceeded.max(Some(model.context_window));
                            }
                            if let ProviderError::ContentFilter(_) = e {
                                if route.content_filter == ContentFilterPolicy::OtherProvider {
                                    filtered_by.push(model.base_url.as_str());
                                    disposition = Disposition::NextModel;
                                }
                            }
                            let wait = match (disposition, e.retry_after()) {
                                (Disposition::RetrySameModel, Some(ra))
                                    if ra > MAX_IN_PROCESS_RETRY_AFTER =>
                                {
                                    // Too long to hold a slot: the retry tier waits instead.
                                    retry_after = retry_after.max(Some(ra));
                                    None
                                }
                                (Disposition::RetrySameModel, ra) => {
                                    let b =
                                        backoff.next_backoff().unwrap_or(Duration::from_secs(5));
                                    Some(ra.map_or(b, |ra| ra.max(b)))
                                }
                                _ => None,
                            };
                            let class = e.class().as_str();
                            last = Some((m, e));
                            let last_attempt = attempt == self.config.worker.provider_attempts;
                            match (disposition, wait) {
                                (Disposition::DeadLetter, _) => break 'models,
                                (Disposition::NextModel, _) | (_, None) => {
                                    telemetry::fallback(&model.name, class);
                                    continue 'models;
                                }
                                // Out of attempts on this model: the next one needs no wait.
                                (Disposition::RetrySameModel, Some(_)) if last_attempt => {
                                    telemetry::fallback(&model.name, class);
                                }
                                (Disposition::RetrySameModel, Some(w)) => {
                                    if Instant::now() + w >= deadline {
                                        deadline_passed = true;
                                        break 'models;
                                    }
                                    telemetry::retry_in_process(&model.name);
                                    tokio::time::sleep(w).await
                                }
                            }
                        }
                    }
                }
            }
            // Every allowed model's circuit was open. If one is half-open (its probe is out, or
            // due), its verdict is a moment away: wait for it once rather than send the job to a
            // retry tier just before the model comes back.
            // Stuck on open circuits: no call was made, or the calls made only said "not this
            // model" (context too long, bad credentials) and the models left are open.
            stuck = !circuit_open.is_empty()
                && last
                    .as_ref()
                    .is_none_or(|(_, e)| e.disposition() == Disposition::NextModel);
            if stuck && !waited_for_probe && !deadline_passed {
                let now = Instant::now();
                let probing: Vec<usize> = decision
                    .candidates
                    .iter()
                    .copied()
                    .filter(|&m| self.circuits.state(m, now) == CircuitState::HalfOpen)
                    .collect();
                if !probing.is_empty() {
                    waited_for_probe = true;
                    let until = now + PROBE_WAIT.min(deadline.saturating_duration_since(now));
                    while Instant::now() < until
                        && probing.iter().all(|&m| {
                            self.circuits.state(m, Instant::now()) == CircuitState::HalfOpen
                        })
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    circuit_open.clear();
                    continue 'round;
                }
            }
            break;
        }
        if last.is_none() && deadline_passed {
            return StepOutcome::Failed(StepFailure {
                class: ErrorClass::ProviderTimeout,
                message: format!(
                    "the round's deadline of {:?} passed before any call",
                    self.config.worker.round_deadline
                ),
                last_model: None,
                attempts,
                variant: variant_name,
                retry_after: None,
                cost_usd: cost,
            });
        }
        if last.is_none() && !saturated.is_empty() {
            return StepOutcome::Failed(StepFailure {
                class: ErrorClass::RateLimited,
                message: format!(
                    "no rate-limit capacity within {:?} on any allowed model ({})",
                    self.config.worker.rate_limit_wait,
                    saturated.join(", ")
                ),
                last_model: saturated.last().cloned(),
                attempts,
                variant: variant_name,
                retry_after: None,
                cost_usd: cost,
            });
        }
        if stuck {
            return StepOutcome::Failed(StepFailure {
                class: ErrorClass::ProviderUnavailable,
                message: format!(
                    "{}the circuits of the remaining allowed models are open ({})",
                    last.as_ref().map_or(String::new(), |(m, e)| format!(
                        "{} refused ({}); ",
                        self.config.models[*m].name,
                        e.class().as_str()
                    )),
                    circuit_open.join(", ")
                ),
                last_model: circuit_open.last().cloned(),
                attempts,
                variant: variant_name,
                retry_after: None,
                cost_usd: cost,
            });
        }
        match (last, out_of_budget) {
            (Some((m, e)), _) => StepOutcome::Failed(StepFailure {
                class: e.class(),
                message: format!(
                    "{} (model {}){}",
                    e,
                    self.config.models[m].name,
                    if deadline_passed {
                        format!(
                            "; the round's deadline of {:?} passed",
                            self.config.worker.round_deadline
                        )
                    } else {
                        String::new()
                    }
                ),
                last_model: Some(self.config.models[m].name.clone()),
                attempts,
                variant: variant_name.clone(),
                retry_after,
                cost_usd: cost,
            }),
            (None, model) => StepOutcome::Failed(StepFailure {
                class: ErrorClass::PolicyUnsatisfiable,
                message: format!(
                    "max_cost_usd {} leaves no budget for any allowed model (${} spent)",
                    max_cost.unwrap_or_default(),
                    router::usd(cost)
                ),
                last_model: model,
                attempts,
                variant: variant_name,
                retry_after: None,
                cost_usd: cost,
            }),
        }
    }
}

/// Exponential backoff with full jitter for in-process retries.
fn attempt_backoff() -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(100))
        .with_multiplier(2.0)
        // Full jitter: each wait is drawn from [0, 2 × the exponential interval], so clients
        // that failed together do not retry together.
        .with_randomization_factor(1.0)
        .with_max_interval(Duration::from_secs(5))
        .with_max_elapsed_time(None)
        .build()
}

/// The provider request for `job` on `step`: the step's system prompt, then the job's messages.
pub fn build_request(step: &StepConfig, job: &Job) -> ChatRequest {
    let mut messages = Vec::new();
    if let Some(sp) = &step.system_prompt {
        messages.push(crate::envelope::ChatMessage {
            role: "system".into(),
            content: sp.clone(),
        });
    }
    messages.extend(job.chat_messages());
    let params = job.params.clone().unwrap_or_default();
    ChatRequest {
        messages,
        max_tokens: params.max_tokens.or(step.max_tokens),
        temperature: params.temperature,
        top_p: params.top_p,
        seed: params.seed,
        stop: params.stop,
        response_format: job.response_format.clone(),
    }
}

/// The answer parsed as JSON when it is a JSON object or array (optionally in a code fence).
pub fn parse_json(text: &str) -> Option<Value> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(t);
    if !(t.starts_with('{') || t.starts_with('[')) {
        return None;
    }
    serde_json::from_str(t).ok()
}

/// The job the next step of a pipeline receives: this step's answer as its input, everything
/// else (id, policy, tenant, metadata...) carried over.
pub fn next_step_job(job: &Job, result: &JobResult) -> Job {
    Job {
        messages: None,
        input: Some(result.output.text.clone()),
        ..job.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_are_parsed() {
        assert_eq!(parse_json(r#" {"a":1} "#), Some(serde_json::json!({"a":1})));
        assert_eq!(
            parse_json("```json\n[1,2]\n```"),
            Some(serde_json::json!([1, 2]))
        );
        assert_eq!(parse_json("plain text"), None);
        assert_eq!(parse_json("{broken"), None);
    }

    #[test]
    fn request_puts_the_system_prompt_first() {
        let c = Config::from_toml(crate::demo::SAMPLE_CONFIG, None).unwrap();
        let job: Job =
            serde_json::from_str(r#"{"id":"1","input":"help","params":{"max_tokens":50}}"#)
                .unwrap();
        let r = build_request(&c.steps[0], &job);
        assert_eq!(r.messages[0].role, "system");
        assert_eq!(r.messages.last().unwrap().content, "help");
        assert_eq!(r.max_tokens, Some(50));
    }
}
