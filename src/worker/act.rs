//! Acting on a decided outcome: publish its record and wait for the broker's acknowledgement,
//! then count it. A record the broker refuses for good (too large) is decided again (an
//! `output_rejected` dead letter); a dead letter refused for good is sent without the original
//! value, saying so, so the failure is still on record.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::job::Ended;
use super::memory::MemoryUpdate;
use super::{Item, Shared};
use crate::pipeline::outcome::{Action, Now, Outcome, Record};
use crate::telemetry;

/// Publishes `outcome` for `item` until the broker acknowledges it (or the partition's epoch
/// ends), then counts it.
pub(super) async fn act(
    shared: &Shared,
    record: Record<'_>,
    item: &Item,
    mut outcome: Outcome,
    started: Instant,
    memory: Option<MemoryUpdate>,
) -> Ended {
    let msg = &item.msg;
    let label = record.step.label();
    if let Err(PublishError::Abandoned) = review_copy(shared, record, item, &outcome).await {
        return Ended::Abandoned;
    }
    let mut drop_value = false;
    loop {
        let origin = (msg.topic(), msg.partition(), msg.offset());
        let mut meta = outcome.out_meta(&label, &item.meta, origin);
        meta.times = Some(record.times);
        let hdrs = meta.headers(match outcome.action {
            Action::Answer { .. } => None,
            _ => msg.headers(),
        });
        let (topic, key, payload) = match &outcome.action {
            Action::Answer { topic, payload, .. } => (
                topic,
                Some(msg.key().unwrap_or(outcome.job_id.as_bytes())),
                Some(payload.as_slice()),
            ),
            Action::Retry { topic, .. } | Action::Fail { topic, .. } => {
                (topic, msg.key(), msg.payload().filter(|_| !drop_value))
            }
        };
        let size = payload.map_or(0, <[u8]>::len);
        let status = shared
            .config
            .worker
            .track_status
            .then(|| crate::pipeline::status::after(record, &outcome, &Now::current()));
        let main = publish(shared, topic, None, key, payload, hdrs, &item.cancel);
        let (sent, ()) = tokio::join!(main, async {
            if let Some(s) = status {
                super::status::publish(shared, item, s).await;
            }
        });
        // The turn is remembered only behind its acknowledged result.
        let sent = match sent {
            Ok(()) => remember(shared, item, &outcome, memory.as_ref()).await,
            Err(e) => Err(e),
        };
        let error = match sent {
            Ok(()) => {
                counted(shared, &record, &outcome, started);
                return Ended::Finished;
            }
            Err(PublishError::Abandoned) => return Ended::Abandoned,
            Err(PublishError::Rejected(e)) => e,
        };
        match outcome.rejected(record, size, &error.to_string(), &Now::current()) {
            Some(next) => outcome = next,
            None if !drop_value && msg.payload().is_some() => {
                let topic = outcome.action.topic();
                warn!(topic = %topic, error = %error, "dead letter rejected; sending it without the original value");
                if let Action::Fail { message, .. } = &mut outcome.action {
                    *message =
                        format!("{message} [original value of {size} bytes dropped: {error}]");
                }
                drop_value = true;
            }
            None => {
                // Nothing smaller to send: keep the record unfinished (never lost) and say so.
                let topic = outcome.action.topic();
                tracing::error!(topic = %topic, error = %error, "dead letter rejected even without its value; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = item.cancel.cancelled() => return Ended::Abandoned,
                }
            }
        }
    }
}

/// Publishes a conversation's memory with its new turn, after the answer that made it was
/// acknowledged (a failure outcome records no turn), and takes it into the cache once the
/// broker has it.
async fn remember(
    shared: &Shared,
    item: &Item,
    outcome: &Outcome,
    memory: Option<&MemoryUpdate>,
) -> Result<(), PublishError> {
    let (Some(m), Action::Answer { .. }) = (memory, &outcome.action) else {
        return Ok(());
    };
    let topic = &shared.config.topics.memory;
    let payload = serde_json::to_vec(&m.record).expect("memory records serialize");
    let key = Some(m.record.conversation_id.as_bytes());
    let hdrs = OwnedHeaders::new().insert(rdkafka::message::Header {
        key: crate::kafka::headers::JOB_ID,
        value: Some(outcome.job_id.as_bytes()),
    });
    let sent = publish(
        shared,
        topic,
        Some(m.partition),
        key,
        Some(&payload),
        hdrs,
        &item.cancel,
    );
    match sent.await {
        Ok(()) => {
            shared.memory.stored(m.record.clone()).await;
            Ok(())
        }
        Err(PublishError::Rejected(e)) => {
            // Bounded in bytes below the default message size; a refusal is a broker limit.
            warn!(topic = %topic, error = %e, "memory record rejected for good; the turn is not remembered");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Publishes the copy of a flagged result to the review topic (before the result, so a
/// finished job's copy is never missing). A copy the broker refuses for good is logged and
/// left: the result itself still goes out.
async fn review_copy(
    shared: &Shared,
    record: Record<'_>,
    item: &Item,
    outcome: &Outcome,
) -> Result<(), PublishError> {
    let Action::Answer {
        review: Some(review),
        ..
    } = &outcome.action
    else {
        return Ok(());
    };
    let msg = &item.msg;
    let label = record.step.label();
    let origin = (msg.topic(), msg.partition(), msg.offset());
    let mut meta = outcome.out_meta(&label, &item.meta, origin);
    meta.review_reason = Some(&review.reason);
    meta.times = Some(record.times);
    let hdrs = meta.headers::<OwnedHeaders>(None);
    let key = Some(msg.key().unwrap_or(outcome.job_id.as_bytes()));
    let payload = Some(review.payload.as_slice());
    match publish(
        shared,
        &review.topic,
        None,
        key,
        payload,
        hdrs,
        &item.cancel,
    )
    .await
    {
        Err(PublishError::Rejected(e)) => {
            warn!(topic = %review.topic, error = %e, "review copy rejected for good; the result still goes out");
            Ok(())
        }
        Ok(()) => {
            telemetry::review_flagged(&record.step.pipeline, &record.step.name);
            Ok(())
        }
        Err(PublishError::Abandoned) => Err(PublishError::Abandoned),
    }
}

/// Counts a published outcome: the worker's stats, the job's metrics and a debug line.
fn counted(shared: &Shared, record: &Record<'_>, outcome: &Outcome, started: Instant) {
    let step = record.step;
    let (pipeline, name) = (step.pipeline.as_str(), step.name.as_str());
    let label = match &outcome.action {
        Action::Answer { is_result, .. } => {
            let counter = if *is_result {
                &shared.results
            } else {
                &shared.forwarded
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if *is_result {
                "result"
            } else {
                "forwarded"
            }
        }
        Action::Retry {
            topic, tier_name, ..
        } => {
            telemetry::retry_scheduled(pipeline, name, tier_name);
            debug!(topic = %topic, "job sent to a retry tier");
            "retry_later"
        }
        Action::Fail {
            topic,
            escalate,
            class,
            ..
        } => {
            shared.dead_letters.fetch_add(1, Ordering::Relaxed);
            if *escalate {
                telemetry::escalated(pipeline, name, class.as_str());
            } else {
                telemetry::dead_lettered(pipeline, name, class.as_str());
            }
            debug!(class = class.as_str(), topic = %topic, "record dead-lettered");
            "dead_letter"
        }
    };
    telemetry::job_finished(pipeline, name, label, started.elapsed());
}

/// Why a record was not published.
#[derive(Debug)]
pub(super) enum PublishError {
    /// The partition's epoch ended (rebalance or shutdown deadline) before the broker acked.
    Abandoned,
    /// The broker or client refuses this record whatever the retries (e.g. too large).
    Rejected(KafkaError),
}

/// Delivery errors no retry can fix: the record itself is unacceptable.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
        )
    )
}

/// Sends one record and waits for the broker's acknowledgement, retrying transient failures
/// with backoff until they succeed or the partition's epoch ends. A job is finished only when
/// this returns `Ok`.
pub(super) async fn publish(
    shared: &Shared,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    hdrs: OwnedHeaders,
    cancel: &CancellationToken,
) -> Result<(), PublishError> {
    let mut delay = Duration::from_millis(100);
    // The headers move into the send (no copy per record: each header is an allocation in
    // librdkafka); a failed delivery hands them back with the message, for the retry.
    let mut hdrs = Some(hdrs);
    loop {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(h) = hdrs.take() {
            record = record.headers(h);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        let send = shared
            .producer
            .send(record, Timeout::After(Duration::from_secs(5)));
        let result = tokio::select! {
            r = send => r,
            _ = cancel.cancelled() => return Err(PublishError::Abandoned),
        };
        match result {
            Ok(_) => return Ok(()),
            Err((e, _)) if is_permanent(&e) => return Err(PublishError::Rejected(e)),
            Err((e, mut returned)) => {
                hdrs = returned.detach_headers();
                warn!(topic, error = %e, retry_in = ?delay, "delivery failed; retrying");
                telemetry::produce_retry();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return Err(PublishError::Abandoned),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
