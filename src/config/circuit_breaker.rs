//! `[circuit_breaker]`: when a model's circuit opens and how long it stays open; one circuit
//! per model, these settings for all (`fallback::breaker` keeps them).

use std::time::Duration;

use serde::Deserialize;

use super::error::Resolver;

/// `[circuit_breaker]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Failures in a row that open a model's circuit.
    #[serde(default = "d_consecutive")]
    pub consecutive_failures: u32,
    /// Failure share within `window_ms` that opens it, once `min_calls` were made.
    #[serde(default = "d_rate")]
    pub failure_rate: f64,
    /// Calls within the window before `failure_rate` applies.
    #[serde(default = "d_min_calls")]
    pub min_calls: u32,
    /// The failure-rate window.
    #[serde(default = "d_window_ms")]
    pub window_ms: u64,
    /// How long an open circuit skips its model before one probe call.
    #[serde(default = "d_cooldown_ms")]
    pub cooldown_ms: u64,
    /// How long bad credentials (401/403) or an unknown model id (404) take a model out.
    #[serde(default = "d_out_ms")]
    pub out_of_rotation_ms: u64,
}

impl Default for RawBreaker {
    fn default() -> Self {
        RawBreaker {
            consecutive_failures: d_consecutive(),
            failure_rate: d_rate(),
            min_calls: d_min_calls(),
            window_ms: d_window_ms(),
            cooldown_ms: d_cooldown_ms(),
            out_of_rotation_ms: d_out_ms(),
        }
    }
}

fn d_consecutive() -> u32 {
    5
}
fn d_rate() -> f64 {
    0.5
}
fn d_min_calls() -> u32 {
    20
}
fn d_window_ms() -> u64 {
    60_000
}
fn d_cooldown_ms() -> u64 {
    30_000
}
fn d_out_ms() -> u64 {
    300_000
}

/// When a circuit opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Failures in a row that open the circuit.
    pub consecutive_failures: u32,
    /// Failure share (0..=1) within `window` that opens it, once `min_calls` calls were made.
    pub failure_rate: f64,
    /// Calls within `window` before `failure_rate` applies.
    pub min_calls: u32,
    /// The sliding window of the failure rate.
    pub window: Duration,
    /// How long an open circuit skips the model before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        RawBreaker::default().settings()
    }
}

impl RawBreaker {
    /// Checks the ranges; returns the settings and how long a misconfigured model stays out of
    /// rotation.
    pub fn resolve(&self, r: &mut Resolver<'_>) -> (BreakerSettings, Duration) {
        if self.consecutive_failures == 0 {
            r.err("circuit_breaker.consecutive_failures", "must be at least 1");
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            r.err(
                "circuit_breaker.failure_rate",
                format!("must be within (0, 1], got {}", self.failure_rate),
            );
        }
        for (key, v) in [
            ("window_ms", self.window_ms),
            ("cooldown_ms", self.cooldown_ms),
            ("out_of_rotation_ms", self.out_of_rotation_ms),
        ] {
            if v == 0 {
                r.err(&format!("circuit_breaker.{key}"), "must be positive");
            }
        }
        (
            self.settings(),
            Duration::from_millis(self.out_of_rotation_ms),
        )
    }

    fn settings(&self) -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: self.consecutive_failures,
            failure_rate: self.failure_rate,
            min_calls: self.min_calls,
            window: Duration::from_millis(self.window_ms),
            cooldown: Duration::from_millis(self.cooldown_ms),
        }
    }
}
