//! One job through one step, using the five components: the router picks the class and the
//! ordered candidates, the context manager assembles and counts the prompt, the provider is
//! called behind the fallback handler's circuits, limits and retries, the output parser reads
//! the answer, and telemetry records every call. Kafka stays outside: this module neither reads
//! nor writes records; [`outcome`] decides, as a pure function, what the worker publishes.
//!
//! A step runs in three parts:
//! - [`StepRunner::run`]: variant, class (rules, else the classifier call of `classify.rs`),
//!   routing decision;
//! - `round.rs`: each allowed candidate in route order, each up to `worker.provider_attempts`
//!   calls, as the fallback policy says after each failure (retry after a backoff, next
//!   candidate, give up), within the round's deadline;
//! - `call.rs`: one guarded call (circuit, rate limit, timeout, settlement, telemetry).
//!
//! Every billed call counts toward the job's cost, and the job's cost ceiling covers the
//! whole pipeline (`spent_before` is what earlier steps and rounds billed).

mod call;
mod classify;
mod fit;
pub mod outcome;
mod round;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigErrors, ErrorClass, StepConfig};
use crate::context::Prompt;
use crate::envelope::{Job, JobResult};
use crate::fallback::limits::ModelLimits;
use crate::fallback::Circuits;
use crate::providers::Provider;
use crate::router::latency::LatencyBook;
use crate::router::{self, ClassChoice, DecideInput};
use crate::telemetry;
pub use outcome::{Action, Outcome};

/// How long a job whose every allowed model's circuit is open waits for a half-open model's
/// probe to decide, before going to a retry tier.
pub const PROBE_WAIT: Duration = Duration::from_secs(3);

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// A model answered.
    Done(Box<JobResult>),
    /// No model could.
    Failed(StepFailure),
}

/// A failed step: what a retry record or a dead letter says about it.
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

impl StepFailure {
    /// A failure before any call was made.
    fn before_calls(class: ErrorClass, message: String) -> StepFailure {
        StepFailure {
            class,
            message,
            last_model: None,
            attempts: 0,
            variant: None,
            retry_after: None,
            cost_usd: 0.0,
        }
    }
}

/// What a step needs: the config, one provider per model (same indices), and the shared state
/// of the fallback handler and the router.
#[derive(Debug, Clone)]
pub struct StepRunner {
    config: Arc<Config>,
    providers: Arc<[Arc<dyn Provider>]>,
    latency: Arc<LatencyBook>,
    circuits: Arc<Circuits>,
    cooldowns: Arc<crate::fallback::cooldown::Cooldowns>,
    limits: Arc<[ModelLimits]>,
}

impl StepRunner {
    /// A runner over `providers`, which must be indexed like `config.models`.
    pub fn new(config: Arc<Config>, providers: Vec<Arc<dyn Provider>>) -> Self {
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
                crate::context::tokens::count_text(m.tokenizer, "warm up");
            }
        }
        let n = config.models.len();
        StepRunner {
            latency: Arc::new(LatencyBook::new(n)),
            circuits: Arc::new(Circuits::new(
                n,
                config.circuit_breaker,
                config.out_of_rotation,
            )),
            cooldowns: Arc::new(crate::fallback::cooldown::Cooldowns::new(n)),
            limits: config
                .models
                .iter()
                .map(|m| ModelLimits::new(m.rate_limit))
                .collect(),
            config,
            providers: providers.into(),
        }
    }

    /// Builds every model's provider (reading API keys from the environment).
    pub fn from_config(config: Arc<Config>) -> Result<Self, ConfigErrors> {
        let providers = crate::providers::build_all(&config)?;
        Ok(StepRunner::new(config, providers))
    }

    /// Sets this worker's share of every model's rate limits: the fraction of the group's
    /// partitions it owns (see [`crate::fallback::limits`]).
    pub fn set_group_share(&self, share: f64) {
        for l in self.limits.iter() {
            l.set_share(share);
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The latency medians the router reads.
    pub fn latency(&self) -> &Arc<LatencyBook> {
        &self.latency
    }

    /// Runs `job` through `step`; `key` is the record key (the job id when the record has none),
    /// which keeps a job's A/B variant sticky. `spent_before` is what earlier steps and rounds
    /// of the job billed.
    pub async fn run(
        &self,
        step: &StepConfig,
        job: &Job,
        key: &str,
        spent_before: f64,
    ) -> StepOutcome {
        let started = tokio::time::Instant::now();
        let started_at = crate::util::now_rfc3339();
        let route = &self.config.routes[step.route];
        let prompt = match Prompt::new(&self.config.templates, step, job) {
            Ok(p) => p,
            Err(e) => {
                return StepOutcome::Failed(StepFailure::before_calls(
                    ErrorClass::TemplateError,
                    e.to_string(),
                ))
            }
        };
        let variant = router::pick_variant(route, key);
        let (choice, classifier, cost) =
            match router::classify_by_rules(&self.config, route, job, &prompt) {
                Some(m) => (ClassChoice::Rule(m), None, 0.0),
                None => {
                    let v = route.variants[variant.0].name.as_deref();
                    self.classify(step, job, &prompt, spent_before, v).await
                }
            };
        let input = DecideInput {
            step,
            prompt: &prompt,
            key,
            variant,
            choice: &choice,
            spent_usd: spent_before + cost,
        };
        let decision = match router::decide(&self.config, job, input, classifier, &|m| {
            self.latency.p50(m)
        }) {
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
        if let Some(&first) = decision.candidates.first() {
            telemetry::routed(
                &step.pipeline,
                &step.name,
                &self.config.models[first].name,
                decision.record.variant.as_deref(),
            );
        }
        let start = round::Start {
            at: started,
            at_rfc3339: started_at,
            spent_before,
            classified: cost,
        };
        round::Round::new(self, step, job, &prompt, decision, start)
            .run()
            .await
    }
}

/// Now on the clock the circuits read: tokio's (so a paused test clock drives them too), as a
/// std `Instant`.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests;
