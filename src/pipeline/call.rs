//! One guarded provider call: admitted by the model's circuit, given rate-limit capacity, bounded
//! by the model's timeout and the round's deadline; then the circuit and the limiter learn how
//! it went, and the call's end is recorded (one telemetry event).

use std::time::Duration;

use tokio::time::Instant;

use super::{now, StepRunner};
use crate::config::{ContentFilterPolicy, StepConfig};
use crate::context::ChatRequest;
use crate::fallback::cooldown::CoolAdmission;
use crate::fallback::limits::Grant;
use crate::fallback::{Admission, CircuitState, Fate};
use crate::output::Completion;
use crate::providers::ProviderError;
use crate::telemetry::{self, CallEnd, ProviderCallEnded};

/// Why a guarded call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Skipped {
    /// The model's circuit is open.
    CircuitOpen,
    /// No rate-limit capacity came within the wait.
    NoCapacity,
    /// The model cools down after a 429 (for about this long).
    Cooling(Duration),
}

/// A call that was made.
#[derive(Debug)]
pub(super) struct Made {
    /// The answer, or the error with what it means under the route's policy.
    pub result: Result<Completion, (ProviderError, Fate)>,
    /// How long it took.
    pub elapsed: Duration,
}

/// What a guarded call is about.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallSpec<'a> {
    /// The step the job is on.
    pub step: &'a StepConfig,
    /// The job's A/B variant.
    pub variant: Option<&'a str>,
    /// The route's content-filter policy (what a refusal means).
    pub policy: ContentFilterPolicy,
    /// Prompt plus reserved output tokens, for the token quota.
    pub tokens: u64,
    /// The round's deadline, if the call is bound by one.
    pub deadline: Option<Instant>,
}

impl StepRunner {
    /// One call of `request` to model `m`, guarded.
    pub(super) async fn guarded_call(
        &self,
        m: usize,
        request: &ChatRequest,
        spec: CallSpec<'_>,
    ) -> Result<Made, Skipped> {
        let model = &self.config.models[m];
        let admission = self.circuits.admit(m, now());
        if let Admission::Skip(_) = admission {
            telemetry::circuit_skip(&model.name, &spec.step.pipeline, &spec.step.name);
            return Err(Skipped::CircuitOpen);
        }
        let cool = self.cooldowns.admit(m, now(), model.timeout);
        if let CoolAdmission::Skip(left) = cool {
            return Err(Skipped::Cooling(left));
        }
        let grant = self.capacity(m, spec).await?;
        let limit = match spec.deadline {
            Some(d) => model
                .timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => model.timeout,
        };
        let started = Instant::now();
        let result = tokio::time::timeout(limit, self.providers[m].complete(request))
            .await
            .unwrap_or(Err(ProviderError::Timeout(limit)))
            .map_err(|e| {
                let fate = Fate::of(&e, spec.policy);
                (e, fate)
            });
        let elapsed = started.elapsed();
        self.record_circuit(m, admission, result.as_ref().err().map(|(_, f)| *f));
        let throttled = match &result {
            Err((ProviderError::RateLimited { retry_after }, _)) => Some(*retry_after),
            _ => None,
        };
        self.cooldowns.record(m, now(), cool, throttled);
        if let Some(g) = grant {
            let used = result.as_ref().map_or(0, |c| c.usage.total_tokens);
            self.limits[m].settle(g, used);
        }
        let end = match &result {
            Ok(c) => CallEnd::Answered {
                usage: c.usage,
                cost_usd: model.usage_cost_usd(&c.usage),
            },
            Err((e, _)) => CallEnd::Failed(e.class()),
        };
        ProviderCallEnded {
            model,
            pipeline: &spec.step.pipeline,
            step: &spec.step.name,
            variant: spec.variant,
            latency: elapsed,
            end,
        }
        .emit();
        Ok(Made { result, elapsed })
    }

    /// Waits for model `m`'s rate-limit capacity: `Ok(None)` when it has no limits,
    /// `Ok(Some(grant))` when capacity was granted.
    async fn capacity(&self, m: usize, spec: CallSpec<'_>) -> Result<Option<Grant>, Skipped> {
        let limits = &self.limits[m];
        if !limits.is_limited() {
            return Ok(None);
        }
        let name = &self.config.models[m].name;
        let started = Instant::now();
        match limits
            .acquire(spec.tokens, self.config.worker.rate_limit_wait)
            .await
        {
            Ok(g) => {
                telemetry::rate_limit_wait(name, started.elapsed());
                Ok(Some(g))
            }
            Err(e) => {
                telemetry::rate_limit_wait(name, e.waited);
                telemetry::rate_limit_saturated(name, &spec.step.pipeline, &spec.step.name);
                Err(Skipped::NoCapacity)
            }
        }
    }

    /// Tells model `m`'s circuit how a call admitted as `admission` went.
    fn record_circuit(&self, m: usize, admission: Admission, failure: Option<Fate>) {
        let Some(state) = self.circuits.record(m, now(), admission, failure) else {
            return;
        };
        let name = &self.config.models[m].name;
        match state {
            CircuitState::Open => tracing::warn!(
                model = %name,
                "circuit opened: calls skip this model until a probe succeeds"
            ),
            _ => tracing::info!(model = %name, ?state, "circuit changed"),
        }
        telemetry::circuit_state(name, state.gauge());
    }
}
