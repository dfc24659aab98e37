//! Typed telemetry events: one struct per event, whose `emit()` records its metrics and writes
//! its log line, so the two never disagree (and the per-call audit record will hang off the same
//! event).

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::labels::*;
use super::names::*;
use crate::config::{ErrorClass, ModelConfig, Usage};

/// How a provider call ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CallEnd {
    /// It answered, billing this usage at this cost.
    Answered {
        /// Billed usage.
        usage: Usage,
        /// Its cost, USD.
        cost_usd: f64,
    },
    /// It failed with this class.
    Failed(ErrorClass),
}

/// A provider call ended (an answer call or a classification call).
#[derive(Debug, Clone, Copy)]
pub struct ProviderCallEnded<'a> {
    /// The model called.
    pub model: &'a ModelConfig,
    /// The job's pipeline.
    pub pipeline: &'a str,
    /// The job's step.
    pub step: &'a str,
    /// The job's A/B variant, if its route has variants.
    pub variant: Option<&'a str>,
    /// How long the call took.
    pub latency: Duration,
    /// How it ended.
    pub end: CallEnd,
}

impl ProviderCallEnded<'_> {
    /// Records the call's count, latency, tokens and cost, and logs it at debug level.
    pub fn emit(&self) {
        let (m, p) = (self.model.name.clone(), self.model.provider.as_str());
        let variant = self.variant.unwrap_or("none").to_string();
        let outcome = match self.end {
            CallEnd::Answered { .. } => "ok",
            CallEnd::Failed(class) => class.as_str(),
        };
        counter!(PROVIDER_REQUESTS, MODEL => m.clone(), PROVIDER => p, PIPELINE => self.pipeline.to_string(), STEP => self.step.to_string(), VARIANT => variant.clone(), OUTCOME => outcome).increment(1);
        histogram!(PROVIDER_LATENCY, MODEL => m.clone(), PROVIDER => p, OUTCOME => outcome)
            .record(self.latency.as_secs_f64());
        if let CallEnd::Answered { usage, cost_usd } = self.end {
            counter!(INPUT_TOKENS, MODEL => m.clone(), PROVIDER => p).increment(usage.input_tokens);
            counter!(OUTPUT_TOKENS, MODEL => m.clone(), PROVIDER => p)
                .increment(usage.output_tokens);
            // The metrics crate's counters are integers; cost is fractional USD, so it is a
            // gauge that only ever increases (Prometheus `rate()` works on it the same way).
            gauge!(COST, MODEL => m, PROVIDER => p, PIPELINE => self.pipeline.to_string(), VARIANT => variant).increment(cost_usd);
        }
        tracing::debug!(
            model = %self.model.name,
            pipeline = self.pipeline,
            step = self.step,
            outcome,
            latency_ms = self.latency.as_millis() as u64,
            "provider call ended"
        );
    }
}
