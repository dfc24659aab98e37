//! One admitted record, start to finish: decode it, run its step, let the pipeline decide its
//! outcome, act on it, then report to the tracker (which moves the commit position and hands
//! out the next job of the same key).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tracing::debug;

use super::memory::MemoryUpdate;
use super::tracker::{Tp, Tracker};
use super::{act, Item, Shared, WorkerConsumer};
use crate::config::ErrorClass;
use crate::envelope::{decode_job, Job};
use crate::pipeline::outcome::{self, Now, Outcome, Record};
use crate::pipeline::StepOutcome;
use crate::telemetry;

/// How processing a record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The record needs nothing more: its output was acknowledged by the broker (or it needed
    /// none). Its offset may be committed.
    Finished,
    /// The partition's epoch ended first: nothing more is published, the offset stays open.
    Abandoned,
}

/// Runs a job, then every job queued behind its key.
pub(super) async fn run_chain(
    consumer: Arc<WorkerConsumer>,
    shared: Arc<Shared>,
    tp: Tp,
    mut item: Item,
) {
    use futures::FutureExt;
    loop {
        let processed = std::panic::AssertUnwindSafe(process(&shared, &item))
            .catch_unwind()
            .await;
        let ended = match processed {
            Ok(ended) => ended,
            Err(panic) => {
                // A bug, not the record's fault alone; the record still gets a terminal output.
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                tracing::error!(topic = %tp.0, partition = tp.1, offset = item.msg.offset(), panic = %what, "processing panicked; dead-lettering the record");
                internal_error(&shared, &item, &what).await
            }
        };
        match finish(&consumer, &shared, &tp, &item, ended) {
            Some(next) => item = next,
            None => return,
        }
    }
}

/// Reports how `item` ended: stores the new commit position when it moved, wakes the poll
/// thread or a draining revoke when they wait for it, and returns the next job of the same key, if one waits.
fn finish(
    consumer: &WorkerConsumer,
    shared: &Shared,
    tp: &Tp,
    item: &Item,
    ended: Ended,
) -> Option<Item> {
    let offset = item.msg.offset();
    let key = item.msg.key().map(<[u8]>::to_vec);
    let mut t = shared.tracker();
    let f = match ended {
        Ended::Finished => t.finish(tp, item.epoch, offset, key.as_deref()),
        Ended::Abandoned => t.release(tp, item.epoch, offset, key.as_deref()),
    };
    if let Some(next_offset) = f.commit {
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&tp.0, tp.1, Offset::Offset(next_offset))
            .is_ok()
        {
            if let Err(e) = consumer.store_offsets(&tpl) {
                debug!(error = %e, "offset not stored (partition no longer assigned)");
            }
        }
    }
    let wake = worth_waking(&t, shared.config.worker.max_in_flight, shared.wake_batch);
    drop(t);
    if shared.draining.load(Ordering::SeqCst) > 0 {
        shared.changed.notify_all();
    }
    if wake {
        shared.wake();
    }
    f.next
}

/// Whether the poll thread's start would be worth it after a job ended: a batch of slots is
/// free, or nothing runs any more (a drain or an idle worker looks at once). A slot handed to
/// the key's next job frees nothing by itself, but the waiting job it took may have been the
/// one that held every slot (waiting jobs are capped at `max` too).
pub(super) fn worth_waking<J>(t: &Tracker<J>, max: usize, batch: usize) -> bool {
    t.free(max) >= batch || t.running_total() == 0
}

/// Processes one record to its terminal output: decode, run the step, decide, act.
async fn process(shared: &Shared, item: &Item) -> Ended {
    let started = Instant::now();
    let config = &shared.config;
    let msg = &item.msg;
    let Some((step, tier)) = config.step_for_topic(msg.topic()) else {
        // Not a topic the worker subscribes to: nothing to do with it.
        return Ended::Finished;
    };
    shared.consumed.fetch_add(1, Ordering::Relaxed);
    telemetry::job_consumed(&step.pipeline, &step.name);
    let record = Record {
        config,
        step,
        tier,
        meta: &item.meta,
        times: item.meta.times(
            crate::util::unix_ms(),
            msg.timestamp().to_millis(),
            tier.is_some() || step.previous.is_some(),
        ),
    };
    let decoded = decode_job(
        msg.payload(),
        config.worker.max_payload_bytes,
        &step.pipeline,
        &config.pipelines,
    );
    let (outcome, memory) = match decoded {
        Ok(job) => match run_job(shared, record, item, job).await {
            Some(decided) => decided,
            None => return Ended::Abandoned,
        },
        Err(e) => {
            let now = Now::current();
            let o = outcome::terminal(record, &key_as_id(msg), e.class(), e.to_string(), &now);
            (o, None)
        }
    };
    act::act(shared, record, item, outcome, started, memory).await
}

/// How long a job runs before the status topic is told it is running (most jobs finish
/// sooner, and their outcome's update is the only one they cost).
const RUNNING_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a decoded job: its conversation's memory restored first, its step run, its outcome
/// decided, with the memory update its answer makes. `None`: the partition's epoch ended.
async fn run_job(
    shared: &Shared,
    record: Record<'_>,
    item: &Item,
    mut job: Job,
) -> Option<(Outcome, Option<MemoryUpdate>)> {
    let config = &shared.config;
    let msg = &item.msg;
    let picked_up = Now::current();
    // A pipeline's first step reads the conversation's turns; its last step adds one.
    let step = record.step;
    let uses_memory = step.previous.is_none() || step.is_last;
    let restored = match job.conversation_id.clone().filter(|_| uses_memory) {
        Some(conv) => {
            let guard = tokio::select! {
                g = shared.memory.lock(&conv) => g,
                _ = item.cancel.cancelled() => return None,
            };
            let found =
                shared
                    .memory
                    .get(&config.kafka, &config.topics.memory, &conv, &item.cancel);
            let (partition, memory) = found.await?;
            job.memory = memory.messages_for(&job);
            Some((partition, memory, guard))
        }
        None => None,
    };
    let key = routing_key(msg, &job);
    let run = shared
        .runner
        .run(record.step, &job, &key, item.meta.job_cost_usd);
    tokio::pin!(run);
    // A job that finishes quickly gets one status update, with its outcome; one still running
    // after RUNNING_AFTER is said to be running (since it was picked up).
    let running_after = tokio::time::sleep(RUNNING_AFTER);
    tokio::pin!(running_after);
    let mut said_running = !config.worker.track_status;
    let step_outcome = loop {
        tokio::select! {
            o = &mut run => break o,
            _ = &mut running_after, if !said_running => {
                said_running = true;
                let done = job.trail.iter().map(|t| t.step.clone()).collect();
                let s = crate::pipeline::status::running(record, &job.id, done, &picked_up);
                super::status::send_detached(shared, item, &s);
            }
            _ = item.cancel.cancelled() => return None,
        }
    };
    let answer = match (&step_outcome, record.step.is_last) {
        (StepOutcome::Done(r), true) => Some(r.output.text.clone()),
        _ => None,
    };
    let now = Now::current();
    let outcome = outcome::decide(record, &job, step_outcome, &now);
    let memory = match (restored, answer) {
        (Some((partition, memory, guard)), Some(answer)) => {
            let at = now.rfc3339();
            let turn = super::memory::turn(&job, &answer, &at);
            Some(super::memory::update(partition, memory, turn, guard))
        }
        _ => None,
    };
    Some((outcome, memory))
}

/// Dead-letters a record whose processing panicked.
async fn internal_error(shared: &Shared, item: &Item, what: &str) -> Ended {
    let Some((step, tier)) = shared.config.step_for_topic(item.msg.topic()) else {
        return Ended::Finished;
    };
    let record = Record {
        config: &shared.config,
        step,
        tier,
        meta: &item.meta,
        times: item.meta.times(
            crate::util::unix_ms(),
            item.msg.timestamp().to_millis(),
            tier.is_some() || step.previous.is_some(),
        ),
    };
    let outcome: Outcome = outcome::terminal(
        record,
        &key_as_id(&item.msg),
        ErrorClass::InternalError,
        format!("internal error while processing: {what}"),
        &Now::current(),
    );
    act::act(shared, record, item, outcome, Instant::now(), None).await
}

/// The job id of a record that could not be decoded: its key (producers key jobs by id),
/// empty when it has none.
fn key_as_id(msg: &OwnedMessage) -> String {
    msg.key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default()
}

/// The key that keeps a job's A/B variant sticky: the record key, else the job id.
fn routing_key(msg: &OwnedMessage, job: &Job) -> String {
    match msg.key() {
        Some(k) if !k.is_empty() => String::from_utf8_lossy(k).into_owned(),
        _ => job.id.clone(),
    }
}
