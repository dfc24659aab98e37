//! Monitoring and observability, with a closed vocabulary: every metric name and label key is
//! a constant here, described once at start-up; labels carry config names (model, pipeline,
//! step...) and error classes, never job ids, prompts or raw error text. An event that is more
//! than one number ([`events`]: a provider call's end) is one typed struct whose `emit()` records
//! its metrics and its log line together. `/metrics` (Prometheus text) and `/healthz` are served
//! on `worker.metrics_listen` (loopback by default).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod events;
pub mod lag;

pub use events::{CallEnd, ProviderCallEnded};

/// Metric names.
pub mod names {
    /// Records consumed from input topics.
    pub const JOBS_CONSUMED: &str = "baton_jobs_consumed_total";
    /// Jobs finished, by outcome (`result`, `forwarded`, `dead_letter`).
    pub const JOBS_FINISHED: &str = "baton_jobs_finished_total";
    /// Dead letters by error class.
    pub const DEAD_LETTERS: &str = "baton_dead_letters_total";
    /// Wall time of a job from pick-up to acknowledged output.
    pub const JOB_DURATION: &str = "baton_job_duration_seconds";
    /// Provider calls by outcome.
    pub const PROVIDER_REQUESTS: &str = "baton_provider_requests_total";
    /// Provider call latency.
    pub const PROVIDER_LATENCY: &str = "baton_provider_request_duration_seconds";
    /// Input tokens billed.
    pub const INPUT_TOKENS: &str = "baton_input_tokens_total";
    /// Output tokens billed.
    pub const OUTPUT_TOKENS: &str = "baton_output_tokens_total";
    /// Cost billed.
    pub const COST: &str = "baton_cost_usd_total";
    /// Jobs in flight in this worker.
    pub const IN_FLIGHT: &str = "baton_jobs_in_flight";
    /// Gauge: records behind, per owned topic and partition (rendered by [`super::lag`]).
    pub const CONSUMER_LAG: &str = "baton_consumer_lag";
    /// Gauge: age of the oldest unfinished record, per owned topic and partition.
    pub const CONSUMER_LAG_SECONDS: &str = "baton_consumer_lag_seconds";
    /// Output records whose delivery failed and was retried.
    pub const PRODUCE_RETRIES: &str = "baton_produce_retries_total";
    /// Records delivered again within one assignment and skipped (already handled).
    pub const REDELIVERIES: &str = "baton_redeliveries_skipped_total";
    /// Counter: routing decisions, by first-choice model and A/B variant.
    pub const ROUTED: &str = "baton_routed_total";
    /// Counter: failures sent to the human-review topic instead of the dead-letter topic.
    pub const ESCALATIONS: &str = "baton_escalations_total";
    /// Counter: in-process retries on the same model (after a backoff).
    pub const RETRIES: &str = "baton_retries_total";
    /// Counter: moves to the next candidate after a model failed, by the model that failed
    /// and why.
    pub const FALLBACKS: &str = "baton_fallbacks_total";
    /// Counter: jobs sent to a delayed retry tier.
    pub const RETRIES_SCHEDULED: &str = "baton_retry_scheduled_total";
    /// Counter: retry records held until due (their partition paused meanwhile).
    pub const RETRIES_HELD: &str = "baton_retry_held_total";
    /// Gauge: each model's circuit (0 closed, 1 half-open, 2 open).
    pub const CIRCUIT_STATE: &str = "baton_circuit_state";
    /// Counter: calls not made because the model's circuit was open.
    pub const CIRCUIT_SKIPS: &str = "baton_circuit_skips_total";
    /// Histogram: time calls waited for a model's rate-limit capacity.
    pub const RATE_LIMIT_WAIT: &str = "baton_rate_limit_wait_seconds";
    /// Gauge: this worker's share of every model's rate limits (the fraction of the group's
    /// partitions it owns).
    pub const RATE_LIMIT_SHARE: &str = "baton_rate_limit_share";
    /// Counter: calls that got no rate-limit capacity in time (the next candidate was tried).
    pub const RATE_LIMIT_SATURATED: &str = "baton_rate_limit_saturated_total";
    /// Counter: answers sent back to their model once to fix their JSON.
    pub const OUTPUT_REPAIRS: &str = "baton_output_repairs_total";
    /// Counter: results also sent to review because the step's `review_when` held.
    pub const REVIEWS_FLAGGED: &str = "baton_review_flagged_total";
    /// Counter: stage updates that could not be written to the status topic.
    pub const STATUS_FAILED: &str = "baton_status_write_failures_total";
}

/// Label keys (the closed set of DESIGN.md, plus `topic` and `partition` for the lag gauges).
pub mod labels {
    /// Config model name.
    pub const MODEL: &str = "model";
    /// Provider kind.
    pub const PROVIDER: &str = "provider";
    /// Pipeline name.
    pub const PIPELINE: &str = "pipeline";
    /// Step name.
    pub const STEP: &str = "step";
    /// Outcome.
    pub const OUTCOME: &str = "outcome";
    /// A/B variant (`none` for routes without variants).
    pub const VARIANT: &str = "variant";
    /// Retry tier (`30s`...), a closed set from config.
    pub const TIER: &str = "tier";
    /// Error class.
    pub const ERROR_CLASS: &str = "error_class";
    /// Topic name, a configured input or retry-tier topic (lag only).
    pub const TOPIC: &str = "topic";
    /// Partition number (lag only).
    pub const PARTITION: &str = "partition";
}

use labels::*;
use names::*;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and describes every metric.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .expect("static buckets are valid")
                .install_recorder()
                .expect("the metrics recorder is installed once per process");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        JOBS_CONSUMED,
        "Records consumed from pipeline input topics."
    );
    describe_counter!(
        JOBS_FINISHED,
        "Jobs finished, by outcome: result, forwarded (to the next step) or dead_letter."
    );
    describe_counter!(
        DEAD_LETTERS,
        "Records sent to a dead-letter topic, by error class."
    );
    describe_histogram!(
        JOB_DURATION,
        Unit::Seconds,
        "Job wall time from pick-up to acknowledged output."
    );
    describe_counter!(
        PROVIDER_REQUESTS,
        "Provider calls, by model and outcome (ok or an error class)."
    );
    describe_histogram!(PROVIDER_LATENCY, Unit::Seconds, "Provider call latency.");
    describe_counter!(INPUT_TOKENS, "Input (prompt) tokens billed.");
    describe_counter!(OUTPUT_TOKENS, "Output (completion) tokens billed.");
    describe_counter!(COST, "Cost billed, in USD.");
    describe_gauge!(IN_FLIGHT, "Jobs in flight in this worker.");
    describe_histogram!(
        RATE_LIMIT_WAIT,
        Unit::Seconds,
        "Time calls waited for a model's rate-limit capacity."
    );
    describe_counter!(
        RATE_LIMIT_SATURATED,
        "Calls that got no rate-limit capacity in time (the next candidate was tried)."
    );
    describe_counter!(
        RETRIES,
        "In-process retries on the same model, after a backoff."
    );
    describe_counter!(
        ESCALATIONS,
        "Failures sent to the human-review topic instead of the dead-letter topic."
    );
    describe_counter!(
        FALLBACKS,
        "Moves to the next candidate within a job's round (model: the one left; error_class: why, its failure's class, or circuit_open, no_capacity, cooling_down, over_budget when it was skipped without a call)."
    );
    describe_counter!(
        RETRIES_SCHEDULED,
        "Jobs sent to a delayed retry tier (by tier)."
    );
    describe_counter!(
        RETRIES_HELD,
        "Retry records that arrived before they were due and were held (their partition paused)."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker state per model: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        CIRCUIT_SKIPS,
        "Calls not made because the model's circuit was open (the next candidate served)."
    );
    describe_counter!(
        ROUTED,
        "Routing decisions, by first-choice model and A/B variant."
    );
    describe_gauge!(
        RATE_LIMIT_SHARE,
        "This worker's share of every model's rate limits: the fraction of the group's partitions it owns."
    );
    describe_counter!(
        REDELIVERIES,
        "Records the consumer delivered again within one assignment, skipped as already handled."
    );
    describe_counter!(
        OUTPUT_REPAIRS,
        "Answers that failed the step's JSON Schema (or held no JSON) and were sent back to their model once to fix."
    );
    describe_counter!(
        REVIEWS_FLAGGED,
        "Results also copied to the review topic because the step's review_when held."
    );
    describe_counter!(
        STATUS_FAILED,
        "Stage updates that could not be written to the status topic (jobs are unaffected)."
    );
    describe_counter!(
        PRODUCE_RETRIES,
        "Output records whose delivery failed and was retried."
    );
}

/// A record was consumed.
pub fn job_consumed(pipeline: &str, step: &str) {
    counter!(JOBS_CONSUMED, PIPELINE => pipeline.to_string(), STEP => step.to_string())
        .increment(1);
}

/// A job finished with `outcome`, after `elapsed`.
pub fn job_finished(pipeline: &str, step: &str, outcome: &'static str, elapsed: Duration) {
    counter!(JOBS_FINISHED, PIPELINE => pipeline.to_string(), STEP => step.to_string(), OUTCOME => outcome).increment(1);
    histogram!(JOB_DURATION, PIPELINE => pipeline.to_string(), STEP => step.to_string(), OUTCOME => outcome)
        .record(elapsed.as_secs_f64());
}

/// A record was dead-lettered.
pub fn dead_lettered(pipeline: &str, step: &str, class: &'static str) {
    counter!(DEAD_LETTERS, PIPELINE => pipeline.to_string(), STEP => step.to_string(), ERROR_CLASS => class).increment(1);
}

/// An answer of `model` on a step was sent back to it to repair its JSON.
pub fn repair_attempt(model: &str, pipeline: &str, step: &str) {
    counter!(OUTPUT_REPAIRS, MODEL => model.to_string(), PIPELINE => pipeline.to_string(), STEP => step.to_string()).increment(1);
}

/// A stage update could not be written.
pub fn status_failed() {
    counter!(STATUS_FAILED).increment(1);
}

/// A step's result was flagged for review by its `review_when`.
pub fn review_flagged(pipeline: &str, step: &str) {
    counter!(REVIEWS_FLAGGED, PIPELINE => pipeline.to_string(), STEP => step.to_string())
        .increment(1);
}

/// A job was routed: its first-choice model and variant.
pub fn routed(pipeline: &str, step: &str, model: &str, variant: Option<&str>) {
    counter!(ROUTED, PIPELINE => pipeline.to_string(), STEP => step.to_string(), MODEL => model.to_string(), VARIANT => variant.unwrap_or("none").to_string()).increment(1);
}

/// A model's circuit changed state: `gauge` is 0 closed, 1 half-open, 2 open.
pub fn circuit_state(model: &str, gauge: f64) {
    gauge!(CIRCUIT_STATE, MODEL => model.to_string()).set(gauge);
}

/// A call skipped `model` because its circuit was open.
pub fn circuit_skip(model: &str, pipeline: &str, step: &str) {
    counter!(CIRCUIT_SKIPS, MODEL => model.to_string(), PIPELINE => pipeline.to_string(), STEP => step.to_string()).increment(1);
}

/// A call waited `waited` for `model`'s rate-limit capacity.
pub fn rate_limit_wait(model: &str, waited: Duration) {
    histogram!(RATE_LIMIT_WAIT, MODEL => model.to_string()).record(waited.as_secs_f64());
}

/// A call got no capacity from `model` in time.
pub fn rate_limit_saturated(model: &str, pipeline: &str, step: &str) {
    counter!(RATE_LIMIT_SATURATED, MODEL => model.to_string(), PIPELINE => pipeline.to_string(), STEP => step.to_string()).increment(1);
}

/// A failure went to the review topic.
pub fn escalated(pipeline: &str, step: &str, class: &'static str) {
    counter!(ESCALATIONS, PIPELINE => pipeline.to_string(), STEP => step.to_string(), ERROR_CLASS => class).increment(1);
}

/// A call is retried on `model` after a backoff.
pub fn retry_in_process(model: &str) {
    counter!(RETRIES, MODEL => model.to_string()).increment(1);
}

/// A job moved on from `model` to the next candidate, because of `cause` (an error class, or
/// why the model was skipped).
pub fn fallback(model: &str, cause: &'static str) {
    counter!(FALLBACKS, MODEL => model.to_string(), ERROR_CLASS => cause).increment(1);
}

/// A job was sent to retry tier `tier`.
pub fn retry_scheduled(pipeline: &str, step: &str, tier: &str) {
    counter!(RETRIES_SCHEDULED, PIPELINE => pipeline.to_string(), STEP => step.to_string(), TIER => tier.to_string()).increment(1);
}

/// A retry record arrived before it was due and was held.
pub fn retry_held() {
    counter!(RETRIES_HELD).increment(1);
}

/// This worker's share of the group's rate limits.
pub fn set_rate_limit_share(share: f64) {
    gauge!(RATE_LIMIT_SHARE).set(share);
}

/// The in-flight gauge.
pub fn set_in_flight(n: usize) {
    gauge!(IN_FLIGHT).set(n as f64);
}

/// A record delivered twice in one assignment was skipped.
pub fn redelivery_skipped() {
    counter!(REDELIVERIES).increment(1);
}

/// An output record's delivery failed and will be retried.
pub fn produce_retry() {
    counter!(PRODUCE_RETRIES).increment(1);
}

/// Serves `/metrics` and `/healthz` on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let mut text = handle.render();
                text.push_str(&lag::render(crate::util::unix_ms() as i64));
                std::future::ready(text)
            }),
        )
        .route(
            "/healthz",
            axum::routing::get(|| std::future::ready("ok\n")),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(bound)
}
