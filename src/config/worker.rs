//! `[worker]`: how much a worker takes on at once and how long it waits for what.

use std::time::Duration;

use serde::Deserialize;

use super::error::Resolver;

/// `[worker]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    /// Jobs in flight at once, across all partitions.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: usize,
    /// Bytes of record payloads held at once (running, waiting and prefetched records).
    #[serde(default = "d_in_flight_bytes")]
    pub max_in_flight_bytes: u64,
    /// Largest accepted record value in bytes.
    #[serde(default = "d_payload")]
    pub max_payload_bytes: usize,
    /// Drain deadline on SIGINT/SIGTERM.
    #[serde(default = "d_shutdown")]
    pub shutdown_timeout_ms: u64,
    /// Drain deadline for revoked partitions.
    #[serde(default = "d_rebalance")]
    pub rebalance_timeout_ms: u64,
    /// In-process attempts per provider call for retryable errors.
    #[serde(default = "d_attempts")]
    pub provider_attempts: u32,
    /// Call a model that timed out again (up to `provider_attempts`) before the next
    /// candidate; by default a silent model's turn ends with its timeout.
    #[serde(default)]
    pub retry_timeouts: bool,
    /// `/metrics` and `/healthz` address, or "off".
    #[serde(default = "d_metrics")]
    pub metrics_listen: Option<String>,
    /// How long a call may wait for a model's rate-limit capacity before the next candidate.
    #[serde(default = "d_rl_wait")]
    pub rate_limit_wait_ms: u64,
    /// The longest one round of a job (every attempt on every candidate) may take before it
    /// goes to a retry tier.
    #[serde(default = "d_round_deadline")]
    pub round_deadline_ms: u64,
    /// Whether each job's stage is written to the status topic (`baton status` reads it).
    #[serde(default = "d_track_status")]
    pub track_status: bool,
}

impl Default for RawWorker {
    fn default() -> Self {
        RawWorker {
            max_in_flight: d_in_flight(),
            max_in_flight_bytes: d_in_flight_bytes(),
            max_payload_bytes: d_payload(),
            shutdown_timeout_ms: d_shutdown(),
            rebalance_timeout_ms: d_rebalance(),
            provider_attempts: d_attempts(),
            retry_timeouts: false,
            metrics_listen: d_metrics(),
            rate_limit_wait_ms: d_rl_wait(),
            round_deadline_ms: d_round_deadline(),
            track_status: d_track_status(),
        }
    }
}

fn d_in_flight() -> usize {
    1024
}
fn d_in_flight_bytes() -> u64 {
    256 * 1024 * 1024
}
fn d_payload() -> usize {
    1024 * 1024
}
fn d_shutdown() -> u64 {
    30_000
}
fn d_rebalance() -> u64 {
    15_000
}
fn d_attempts() -> u32 {
    3
}
fn d_metrics() -> Option<String> {
    Some("127.0.0.1:9464".into())
}
fn d_round_deadline() -> u64 {
    180_000
}
fn d_track_status() -> bool {
    true
}
fn d_rl_wait() -> u64 {
    2_000
}

/// Worker tuning.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs in flight at once across all partitions.
    pub max_in_flight: usize,
    /// Bytes of record payloads held at once: running, waiting behind a key and prefetched.
    pub max_in_flight_bytes: u64,
    /// Largest accepted record value, in bytes; larger ones are dead-lettered.
    pub max_payload_bytes: usize,
    /// How long a shutdown waits for in-flight work.
    pub shutdown_timeout: Duration,
    /// How long a revoke waits for in-flight work of the revoked partitions.
    pub rebalance_timeout: Duration,
    /// Attempts per provider call for retryable errors (in-process).
    pub provider_attempts: u32,
    /// Whether a model that timed out is called again before the next candidate.
    pub retry_timeouts: bool,
    /// Address of `/metrics` and `/healthz`; `None` disables the listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How long a call may wait for rate-limit capacity before trying the next candidate.
    pub rate_limit_wait: Duration,
    /// The longest one round of a job (all its attempts) may take.
    pub round_deadline: Duration,
    /// Whether each job's stage is written to the status topic.
    pub track_status: bool,
}

impl RawWorker {
    /// Checks the ranges and builds the settings.
    pub fn resolve(&self, r: &mut Resolver<'_>) -> WorkerSettings {
        for (key, zero) in [
            ("max_in_flight", self.max_in_flight == 0),
            ("max_payload_bytes", self.max_payload_bytes == 0),
            ("round_deadline_ms", self.round_deadline_ms == 0),
        ] {
            if zero {
                r.err(&format!("worker.{key}"), "must be positive");
            }
        }
        if self.max_in_flight_bytes < 1024 * 1024 {
            r.err(
                "worker.max_in_flight_bytes",
                "must be at least 1048576 (1 MiB)",
            );
        }
        if self.provider_attempts == 0 {
            r.err("worker.provider_attempts", "must be at least 1");
        }
        WorkerSettings {
            max_in_flight: self.max_in_flight,
            max_in_flight_bytes: self.max_in_flight_bytes,
            max_payload_bytes: self.max_payload_bytes,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            rebalance_timeout: Duration::from_millis(self.rebalance_timeout_ms),
            provider_attempts: self.provider_attempts,
            retry_timeouts: self.retry_timeouts,
            metrics_listen: self.metrics_listen(r),
            rate_limit_wait: Duration::from_millis(self.rate_limit_wait_ms),
            round_deadline: Duration::from_millis(self.round_deadline_ms),
            track_status: self.track_status,
        }
    }

    fn metrics_listen(&self, r: &mut Resolver<'_>) -> Option<std::net::SocketAddr> {
        match self.metrics_listen.as_deref() {
            None | Some("off") | Some("") => None,
            Some(s) => s.parse().map_or_else(
                |_| {
                    r.err(
                        "worker.metrics_listen",
                        format!(
                            "not a socket address: {s:?} (e.g. \"127.0.0.1:9464\", or \"off\")"
                        ),
                    );
                    None
                },
                Some,
            ),
        }
    }
}
