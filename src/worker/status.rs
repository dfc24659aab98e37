//! Writing stage updates to the status topic (`pipeline::status` decides what they say). The
//! `running` update of a job still running a second after pick-up is sent without waiting for
//! its acknowledgement (it is advisory,
//! and a job must not wait on it); the update that goes with a job's outcome is published
//! beside the outcome's record and awaited with it, so a committed offset has its status. A
//! status update that fails is logged and counted, never a reason to redo or lose a job.

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::FutureRecord;
use tracing::debug;

use super::{Item, Shared};
use crate::envelope::StatusRecord;
use crate::kafka::meta::OutMeta;
use crate::telemetry;

/// How long a job's outcome waits for its status update at most.
const STATUS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The status update's headers: the job id, the step, the attempt and the trace.
fn headers(item: &Item, s: &StatusRecord, label: &str) -> OwnedHeaders {
    OutMeta {
        job_id: &s.job_id,
        step: label,
        attempt: s.attempts,
        traceparent: &item.meta.traceparent,
        variant: None,
        job_cost_usd: None,
        step_cost_usd: None,
        retry: None,
        history: None,
        dead: None,
        review_reason: None,
        times: None,
    }
    .headers::<OwnedHeaders>(None)
}

/// Sends `s` without waiting for the broker (the `running` update).
pub(super) fn send_detached(shared: &Shared, item: &Item, s: &StatusRecord) {
    let topic = &shared.config.topics.status;
    let payload = serde_json::to_vec(s).expect("status records serialize");
    let label = format!("{}.{}", s.pipeline, s.step);
    let fr = FutureRecord::to(topic)
        .key(s.job_id.as_bytes())
        .payload(&payload)
        .headers(headers(item, s, &label));
    if let Err((e, _)) = shared.producer.send_result(fr) {
        debug!(error = %e, "status update not queued");
        telemetry::status_failed();
    }
}

/// Publishes `s` and waits for the broker; a failure is logged and counted.
pub(super) async fn publish(shared: &Shared, item: &Item, s: StatusRecord) {
    let topic = &shared.config.topics.status;
    let payload = serde_json::to_vec(&s).expect("status records serialize");
    let label = format!("{}.{}", s.pipeline, s.step);
    let hdrs = headers(item, &s, &label);
    let key = Some(s.job_id.as_bytes());
    let sent = super::act::publish(shared, topic, None, key, Some(&payload), hdrs, &item.cancel);
    // Advisory: a status topic that cannot take it (offline, no permission) must not hold the
    // job's own output back for long.
    match tokio::time::timeout(STATUS_PATIENCE, sent).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            debug!(error = ?e, "status update not published");
            telemetry::status_failed();
        }
        Err(_) => {
            tracing::warn!(topic = %topic, "status update not acknowledged in time; the job goes on");
            telemetry::status_failed();
        }
    }
}
