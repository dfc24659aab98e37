//! One round of a job on a step: every allowed candidate in route order, each up to
//! `worker.provider_attempts` calls, until one answers or the round gives up. After each failed
//! call the fallback policy says what follows (call again after a wait, the next candidate, or
//! the end of the round); after a context-length refusal only a model with a larger window is
//! tried, after a content-filter refusal the route may let another provider endpoint try. An
//! answer goes through the output parser before it can be a result: one that fails the step's
//! schema is sent back to the same model once with what is wrong (the repair), and one that is
//! still wrong, truncated, empty or refused moves the round to the next candidate. Every billed
//! call counts toward the job's cost. The round ends at its deadline. A round stuck on open circuits waits once for a half-open
//! model's probe before it gives up.

use std::time::Duration;

use tokio::time::Instant;

use super::call::{CallSpec, Skipped};
use super::fit::{FitFor, Fitted};
use super::{now, StepFailure, StepOutcome, StepRunner, PROBE_WAIT};
use crate::config::{ErrorClass, ModelConfig, RouteConfig, StepConfig};
use crate::context::{ChatRequest, Prompt};
use crate::envelope::{ChatMessage, Job, JobResult, Output};
use crate::fallback::retry::{self, Next};
use crate::fallback::{CircuitState, Fate};
use crate::output::{self, Completion, Expect, Rejection};
use crate::providers::ProviderError;
use crate::router::{self, Decision};
use crate::telemetry;
use crate::util::{round_usd, usd};

/// An answer the output parser accepted.
pub(super) struct Answer {
    /// The completion.
    completion: Completion,
    /// Its JSON, when it has some.
    json: Option<serde_json::Value>,
    /// How long the answering call took.
    latency: Duration,
}

/// The last failure of a round: which model, why, and what it meant.
struct Last {
    model: usize,
    class: ErrorClass,
    message: String,
    fate: Fate,
}

/// How trying one candidate ended.
enum Tried {
    /// It answered.
    Answered(Answer),
    /// Try the next candidate; why this one was left (an error class, or why it was
    /// skipped: `circuit_open`, `no_capacity`, `over_budget`).
    NextModel(&'static str),
    /// End the round.
    Stop,
}

/// When a round starts, and what the job had been billed before its calls.
pub(super) struct Start {
    /// When the step picked the job up.
    pub at: Instant,
    /// The same, RFC 3339, for the result.
    pub at_rfc3339: String,
    /// USD billed by earlier steps and rounds.
    pub spent_before: f64,
    /// USD billed by this step's classification.
    pub classified: f64,
}

/// A round in progress: what it was given, and what it has seen so far.
pub(super) struct Round<'a> {
    runner: &'a StepRunner,
    step: &'a StepConfig,
    route: &'a RouteConfig,
    job: &'a Job,
    prompt: &'a Prompt,
    decision: Decision,
    started: Instant,
    started_at: String,
    deadline: Instant,
    /// USD billed before the round's calls: earlier steps and rounds, and the classification.
    spent: f64,
    /// USD billed in this step so far (the classification, then the calls).
    cost: f64,
    attempts: u32,
    /// The last failed call (or unusable answer).
    last: Option<Last>,
    /// The last model the cost ceiling left no budget for.
    out_of_budget: Option<String>,
    circuit_open: Vec<String>,
    saturated: Vec<String>,
    deadline_passed: bool,
    /// After a context-length refusal only a model with a larger window may help.
    window_exceeded: Option<u32>,
    /// The longest Retry-After that was too long to honour in process.
    retry_after: Option<Duration>,
    /// Provider endpoints whose content filter refused the job (when the route moves on).
    filtered_by: Vec<&'a str>,
    /// The candidate just left and why: counted as a move once the next one gets its turn.
    pending_move: Option<(usize, &'static str)>,
    /// Whether the candidate being tried is the round's last.
    last_candidate: bool,
}

impl<'a> Round<'a> {
    /// A round of `job` on `step` over `decision`'s candidates.
    pub(super) fn new(
        runner: &'a StepRunner,
        step: &'a StepConfig,
        job: &'a Job,
        prompt: &'a Prompt,
        decision: Decision,
        start: Start,
    ) -> Self {
        Round {
            runner,
            step,
            route: &runner.config.routes[step.route],
            job,
            prompt,
            decision,
            deadline: start.at + runner.config.worker.round_deadline,
            started: start.at,
            started_at: start.at_rfc3339,
            spent: start.spent_before,
            cost: start.classified,
            attempts: 0,
            last: None,
            out_of_budget: None,
            circuit_open: Vec::new(),
            saturated: Vec::new(),
            deadline_passed: false,
            window_exceeded: None,
            retry_after: None,
            filtered_by: Vec::new(),
            pending_move: None,
            last_candidate: false,
        }
    }

    /// Runs the round to an answer or a failure.
    pub(super) async fn run(mut self) -> StepOutcome {
        let mut waited_for_probe = false;
        loop {
            let n = self.decision.candidates.len();
            for i in 0..n {
                let m = self.decision.candidates[i];
                self.last_candidate = i + 1 == n;
                match self.try_model(m).await {
                    Tried::Answered(c) => return StepOutcome::Done(Box::new(self.result(m, c))),
                    Tried::NextModel(cause) if i + 1 < n => self.pending_move = Some((m, cause)),
                    Tried::NextModel(_) => {}
                    Tried::Stop => break,
                }
            }
            self.pending_move = None;
            if !waited_for_probe && self.stuck_on_open_circuits() && !self.deadline_passed {
                waited_for_probe = self.wait_for_probe().await;
                if waited_for_probe {
                    self.circuit_open.clear();
                    continue;
                }
            }
            return StepOutcome::Failed(self.failure());
        }
    }

    /// Up to `provider_attempts` calls to candidate `m`.
    async fn try_model(&mut self, m: usize) -> Tried {
        let runner = self.runner;
        // The previous candidate was left for this one: a move, if this one gets its turn
        // (the round's deadline may have passed meanwhile).
        if let Some((from, cause)) = self.pending_move.take() {
            if Instant::now() < self.deadline {
                telemetry::fallback(&runner.config.models[from].name, cause);
            }
        }
        let model = &runner.config.models[m];
        if self
            .window_exceeded
            .is_some_and(|w| model.context_window <= w)
        {
            return Tried::NextModel(ErrorClass::ContextLengthExceeded.as_str());
        }
        if self.filtered_by.contains(&model.base_url.as_str()) {
            return Tried::NextModel(ErrorClass::ContentFilter.as_str());
        }
        let (fitted, fitted_tokens) = match self.fitted(m).await {
            Ok(f) => f,
            Err(next) => return next,
        };
        let mut backoff = retry::attempt_backoff();
        let attempts = runner.config.worker.provider_attempts;
        for attempt in 1..=attempts {
            if Instant::now() >= self.deadline {
                self.deadline_passed = true;
                return Tried::Stop;
            }
            let Some((request, prompt_tokens)) = self.request_for(model, &fitted, fitted_tokens)
            else {
                self.out_of_budget = Some(model.name.clone());
                return Tried::NextModel("over_budget");
            };
            let spec = self.spec(&request, prompt_tokens);
            let made = match runner.guarded_call(m, &request, spec).await {
                Ok(made) => made,
                Err(skipped) => {
                    let (list, cause) = match skipped {
                        Skipped::CircuitOpen => (&mut self.circuit_open, "circuit_open"),
                        Skipped::NoCapacity => (&mut self.saturated, "no_capacity"),
                        Skipped::Cooling(left) => {
                            // The retry tier is due no sooner than the model is back.
                            self.retry_after = self.retry_after.max(Some(left));
                            (&mut self.saturated, "cooling_down")
                        }
                    };
                    list.push(model.name.clone());
                    return Tried::NextModel(cause);
                }
            };
            self.attempts += 1;
            let (e, fate) = match made.result {
                Ok(c) => {
                    runner.latency.record(m, made.elapsed);
                    self.cost += model.usage_cost_usd(&c.usage);
                    return self.accept(m, &request, c, made.elapsed).await;
                }
                Err(failure) => failure,
            };
            // A model that times out is at least that slow.
            if matches!(e, ProviderError::Timeout(_)) {
                runner.latency.record(m, made.elapsed);
            }
            let class = e.class().as_str();
            match self.after_failure(m, e, fate, attempt == attempts, &mut backoff) {
                Next::Retry(wait) if Instant::now() + wait >= self.deadline => {
                    self.deadline_passed = true;
                    return Tried::Stop;
                }
                Next::Retry(wait) => {
                    telemetry::retry_in_process(&model.name);
                    tokio::time::sleep(wait).await
                }
                Next::NextCandidate => return Tried::NextModel(class),
                Next::GiveUp => return Tried::Stop,
            }
        }
        Tried::NextModel(self.last.as_ref().map_or("attempts", |l| l.class.as_str()))
    }

    /// What a call of `request` (with `prompt_tokens`) is about, for the guard.
    fn spec(&self, request: &ChatRequest, prompt_tokens: u64) -> CallSpec<'_> {
        let output = request
            .max_tokens
            .unwrap_or(router::DEFAULT_EXPECTED_OUTPUT_TOKENS);
        CallSpec {
            step: self.step,
            variant: self.decision.record.variant.as_deref(),
            policy: self.route.content_filter,
            tokens: prompt_tokens + u64::from(output),
            deadline: Some(self.deadline),
        }
    }

    /// What the step expects of an answer.
    fn expect(&self) -> Expect<'a> {
        Expect {
            schema: self.step.response_schema.as_ref(),
            json: self.prompt.request.wants_json(),
        }
    }

    /// Reads model `m`'s answer `c` to `request`: accepted; or, when the model may fix it (off
    /// its schema), sent back once with what is wrong; or, still unusable, the next candidate.
    async fn accept(
        &mut self,
        m: usize,
        request: &ChatRequest,
        c: Completion,
        latency: Duration,
    ) -> Tried {
        let expect = self.expect();
        let rejection = match output::read(&c, expect) {
            Ok(json) => {
                return Tried::Answered(Answer {
                    completion: c,
                    json,
                    latency,
                })
            }
            Err(r) => r,
        };
        if !rejection.repairable() {
            return self.unfit(m, rejection);
        }
        let model = &self.runner.config.models[m];
        let mut repair = request.clone();
        repair.messages.push(ChatMessage {
            role: crate::config::Role::Assistant,
            content: c.text,
        });
        repair.messages.push(ChatMessage {
            role: crate::config::Role::User,
            content: output::repair_prompt(&rejection, expect),
        });
        // The repair carries the answer and the errors too; it must fit the window beside its
        // output cap, and the job's cost ceiling.
        let tokens = crate::context::fit::prompt_tokens(&repair.messages, model.tokenizer);
        let Some((repair, tokens)) = self.request_for(model, &repair, tokens) else {
            return self.unfit(m, rejection);
        };
        let reserved = repair
            .max_tokens
            .unwrap_or(router::DEFAULT_EXPECTED_OUTPUT_TOKENS);
        if tokens + u64::from(reserved) > u64::from(model.context_window) {
            return self.unfit(m, rejection);
        }
        telemetry::repair_attempt(&model.name, &self.step.pipeline, &self.step.name);
        let made = match self
            .runner
            .guarded_call(m, &repair, self.spec(&repair, tokens))
            .await
        {
            Ok(made) => made,
            Err(_) => return self.unfit(m, rejection),
        };
        self.attempts += 1;
        match made.result {
            Ok(c) => {
                self.cost += model.usage_cost_usd(&c.usage);
                match output::read(&c, expect) {
                    Ok(json) => Tried::Answered(Answer {
                        completion: c,
                        json,
                        latency: made.elapsed,
                    }),
                    Err(again) => self.unfit(m, again),
                }
            }
            Err((e, fate)) => {
                // Learnt from as any failed call (window, Retry-After, content filter); the
                // repair itself is not retried.
                let class = e.class().as_str();
                let mut backoff = retry::attempt_backoff();
                match self.after_failure(m, e, fate, true, &mut backoff) {
                    Next::GiveUp => Tried::Stop,
                    _ => Tried::NextModel(class),
                }
            }
        }
    }

    /// Model `m`'s answer cannot be a result: the next candidate gets its turn.
    fn unfit(&mut self, m: usize, rejection: Rejection) -> Tried {
        let class = rejection.class();
        self.last = Some(Last {
            model: m,
            class,
            message: rejection.to_string(),
            fate: Fate::Unfit,
        });
        Tried::NextModel(class.as_str())
    }

    /// The step's request on `model`, its output capped so the call stays within the job's
    /// cost ceiling, with the prompt's tokens; `None` when the ceiling leaves it nothing.
    fn request_for(
        &self,
        model: &ModelConfig,
        fitted: &ChatRequest,
        prompt_tokens: u64,
    ) -> Option<(ChatRequest, u64)> {
        let mut request = fitted.clone();
        let left = self.budget_left();
        match router::output_cap_within_budget(model, prompt_tokens, left) {
            Some(cap) if cap < 1 => return None,
            Some(cap) => {
                // Never more output than the window leaves beside the prompt.
                let room = u64::from(model.context_window).saturating_sub(prompt_tokens);
                let cap = cap.min(room.max(1));
                let capped = request.max_tokens.map_or(cap, |t| u64::from(t).min(cap));
                request.max_tokens = Some(capped.min(u64::from(u32::MAX)) as u32);
            }
            None => {}
        }
        Some((request, prompt_tokens))
    }

    /// USD left under the job's cost ceiling, if it has one.
    fn budget_left(&self) -> Option<f64> {
        let max_cost = self.job.policy.as_ref().and_then(|p| p.max_cost_usd);
        max_cost.map(|m| m - self.spent - self.cost)
    }

    /// Candidate `m`'s prompt, fitted to its window by the step's strategy (a summary's cost
    /// is billed to the job); `Err` with how the round goes on when it cannot be.
    async fn fitted(&mut self, m: usize) -> Result<(ChatRequest, u64), Tried> {
        let f = FitFor {
            step: self.step,
            job: self.job,
            prompt: self.prompt,
            budget_left: self.budget_left(),
            deadline: self.deadline,
        };
        let (message, fate) = match self.runner.fit(m, &f).await {
            Fitted::Ready {
                request,
                tokens,
                summary_usd,
            } => {
                self.cost += summary_usd;
                return Ok((request, tokens));
            }
            Fitted::TooLong(message) => (message, Fate::NotThisModel),
            Fitted::Rejected(message) => (message, Fate::Refused),
        };
        let model = &self.runner.config.models[m];
        self.window_exceeded = self.window_exceeded.max(Some(model.context_window));
        self.last = Some(Last {
            model: m,
            class: ErrorClass::ContextLengthExceeded,
            message,
            fate,
        });
        Err(match fate {
            Fate::Refused => Tried::Stop,
            _ => Tried::NextModel(ErrorClass::ContextLengthExceeded.as_str()),
        })
    }

    /// Learns from a failed call on `m` and asks the fallback policy what follows.
    fn after_failure(
        &mut self,
        m: usize,
        e: ProviderError,
        fate: Fate,
        last_attempt: bool,
        backoff: &mut backoff::ExponentialBackoff,
    ) -> Next {
        let model = &self.runner.config.models[m];
        match fate {
            Fate::NotThisModel => {
                self.window_exceeded = self.window_exceeded.max(Some(model.context_window))
            }
            Fate::NotThisProvider => self.filtered_by.push(model.base_url.as_str()),
            _ => {}
        }
        // A silent model is called again when the config asks for it, or when no candidate
        // follows (leaving it would gain nothing).
        let retried = match fate {
            Fate::Stalled if self.runner.config.worker.retry_timeouts || self.last_candidate => {
                Fate::Transient
            }
            other => other,
        };
        // A 429 without Retry-After: the job waits (at least) the cooldown it started.
        let retry_after = e.retry_after().or_else(|| {
            (fate == Fate::Throttled)
                .then(|| self.runner.cooldowns.remaining(m, super::now()))
                .flatten()
        });
        let (next, defer) = retry::next_after(retried, retry_after, last_attempt, backoff);
        self.retry_after = self.retry_after.max(defer);
        self.last = Some(Last::of(m, &e, fate));
        next
    }

    /// Stuck on open circuits: a model was skipped for its open circuit, and no call was made
    /// or the calls made only said "not this model" (context too long, bad credentials).
    fn stuck_on_open_circuits(&self) -> bool {
        !self.circuit_open.is_empty()
            && self
                .last
                .as_ref()
                .is_none_or(|last| last.fate.rules_out_model())
    }

    /// If an allowed model is half-open (its probe is out, or due), its verdict is a moment
    /// away: waits for it (up to [`PROBE_WAIT`] within the deadline) rather than send the job to
    /// a retry tier just before the model comes back. False when no model is half-open.
    async fn wait_for_probe(&self) -> bool {
        let circuits = &self.runner.circuits;
        let probing: Vec<usize> = self
            .decision
            .candidates
            .iter()
            .copied()
            .filter(|&m| circuits.state(m, now()) == CircuitState::HalfOpen)
            .collect();
        if probing.is_empty() {
            return false;
        }
        let start = Instant::now();
        let until = start + PROBE_WAIT.min(self.deadline.saturating_duration_since(start));
        while Instant::now() < until
            && probing
                .iter()
                .all(|&m| circuits.state(m, now()) == CircuitState::HalfOpen)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// The result of model `m`'s answer.
    fn result(self, m: usize, answer: Answer) -> JobResult {
        let model = &self.runner.config.models[m];
        let Answer {
            completion: c,
            json,
            latency,
        } = answer;
        JobResult {
            id: self.job.id.clone(),
            pipeline: self.step.pipeline.clone(),
            step: self.step.name.clone(),
            tenant: self.job.tenant.clone(),
            conversation_id: self.job.conversation_id.clone(),
            output: Output {
                text: c.text,
                json,
                finish_reason: c.finish_reason,
                tool_calls: c.tool_calls,
            },
            model: model.name.clone(),
            provider: model.provider.as_str().to_string(),
            variant: self.decision.record.variant.clone(),
            usage: c.usage,
            cost_usd: round_usd(self.cost),
            latency_ms: self.started.elapsed().as_millis() as u64,
            provider_latency_ms: latency.as_millis() as u64,
            total_ms: 0,
            queue_ms: 0,
            attempts: self.attempts,
            retries: 0,
            route: self.decision.record,
            started_at: self.started_at,
            finished_at: crate::util::now_rfc3339(),
            metadata: self.job.metadata.clone(),
            total_cost_usd: round_usd(self.spent + self.cost),
            trail: Vec::new(),
        }
    }

    /// Why the round failed, most telling reason first.
    fn failure(self) -> StepFailure {
        let deadline = self.runner.config.worker.round_deadline;
        // The provider's long Retry-After holds the retry tier back when its error is the
        // reason the round failed.
        let (class, message, last_model, retry_after) = match &self.last {
            None if self.deadline_passed => (
                ErrorClass::ProviderTimeout,
                format!("the round's deadline of {deadline:?} passed before any call"),
                None,
                None,
            ),
            None if !self.saturated.is_empty() => (
                ErrorClass::RateLimited,
                format!(
                    "no rate-limit capacity within {:?}, or cooling down after a 429, on every allowed model ({})",
                    self.runner.config.worker.rate_limit_wait,
                    self.saturated.join(", ")
                ),
                self.saturated.last().cloned(),
                self.retry_after,
            ),
            _ if self.stuck_on_open_circuits() => (
                ErrorClass::ProviderUnavailable,
                self.open_circuits_message(),
                self.circuit_open.last().cloned(),
                None,
            ),
            Some(last) => {
                let name = &self.runner.config.models[last.model].name;
                let late = if self.deadline_passed {
                    format!("; the round's deadline of {deadline:?} passed")
                } else {
                    String::new()
                };
                let message = format!("{} (model {name}){late}", last.message);
                (last.class, message, Some(name.clone()), self.retry_after)
            }
            None => (
                ErrorClass::PolicyUnsatisfiable,
                format!(
                    "max_cost_usd {} leaves no budget for any allowed model (${} spent)",
                    self.job
                        .policy
                        .as_ref()
                        .and_then(|p| p.max_cost_usd)
                        .unwrap_or_default(),
                    usd(self.cost)
                ),
                self.out_of_budget.clone(),
                None,
            ),
        };
        StepFailure {
            class,
            message,
            last_model,
            attempts: self.attempts,
            variant: self.decision.record.variant,
            retry_after,
            cost_usd: self.cost,
        }
    }

    fn open_circuits_message(&self) -> String {
        let refused = self.last.as_ref().map_or(String::new(), |last| {
            format!(
                "{} refused ({}); ",
                self.runner.config.models[last.model].name,
                last.class.as_str()
            )
        });
        format!(
            "{refused}the circuits of the remaining allowed models are open ({})",
            self.circuit_open.join(", ")
        )
    }
}

impl Last {
    fn of(model: usize, e: &ProviderError, fate: Fate) -> Last {
        Last {
            model,
            class: e.class(),
            message: e.to_string(),
            fate,
        }
    }
}
