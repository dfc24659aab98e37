//! The worker: the Kafka runtime. It consumes pipeline input topics, runs each job through its
//! step, publishes what the pipeline decided (the result, the next step's job, a retry record
//! or a dead letter), and stores offsets behind finished work.
//!
//! Shape: one OS thread owns the `BaseConsumer` and polls it (`poll.rs`); every admitted record
//! becomes a tokio task (bounded by `worker.max_in_flight`) that processes it (`job.rs`:
//! decode, run the step, decide) and acts on the decision (`act.rs`: publish, then report);
//! tasks report completion to the [`tracker`], which decides the commit position and hands out
//! the next job of a busy key. Rebalances are served by the consumer's context (`rebalance.rs`).
//!
//! Guarantees:
//! - at-least-once: an offset is stored only when every record at or below it has its output
//!   acknowledged by the broker (librdkafka then auto-commits what was stored);
//! - bounded: at most `max_in_flight` jobs run at once and at most as many wait behind a busy
//!   key; at most twice as many fetched records wait in a backlog; when the backlog is full the
//!   assigned partitions are paused (the consumer keeps polling so the group session and
//!   rebalances are served) and they resume when it is half empty;
//! - per-key order: jobs with the same key on a partition run one after another;
//! - rebalance: a revoked partition starts no new work, its running jobs get
//!   `worker.rebalance_timeout` to finish, their offsets are stored and committed; jobs still
//!   running after that are cancelled before they publish (the new owner redoes them, in key
//!   order) and nothing is stored for the partition afterwards;
//! - no silent loss: a job ends in a published result or dead letter, or it is released with
//!   its offset unfinished (consumed again); a panic while processing becomes an
//!   `internal_error` dead letter, and an output the broker rejects for good (too large)
//!   becomes an `output_rejected` dead letter;
//! - shutdown: when the token is cancelled, fetching stops, in-flight work drains within
//!   `worker.shutdown_timeout`, stored offsets are committed and the producer is flushed.

mod act;
mod job;
mod memory;
mod poll;
mod rebalance;
mod status;
pub mod tracker;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::kafka::meta::RecordMeta;
use crate::pipeline::StepRunner;
use rebalance::WorkerContext;
use tracker::Tracker;

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A Kafka client could not be created or subscribed (bad settings, unreachable brokers).
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The poll thread could not be started or panicked.
    #[error("worker thread: {0}")]
    Thread(String),
}

/// Counts over one run of the worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    /// Records consumed.
    pub consumed: u64,
    /// Final results published.
    pub results: u64,
    /// Jobs forwarded to a next step.
    pub forwarded: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
}

/// A record admitted to run: the message, its metadata (read once, at fetch), and its
/// partition's epoch.
struct Item {
    msg: OwnedMessage,
    meta: RecordMeta,
    epoch: u64,
    /// Cancelled when the partition's epoch ends: the job must not publish any more.
    cancel: CancellationToken,
}

/// What the poll thread, the job tasks and the consumer's callbacks share.
struct Shared {
    config: Arc<Config>,
    runner: StepRunner,
    producer: FutureProducer,
    tracker: Mutex<Tracker<Item>>,
    /// Signalled whenever a job finishes or partitions change.
    changed: Condvar,
    assignment_changed: AtomicBool,
    /// Set when shutdown begins: new assignments are no longer fetched.
    stopping: AtomicBool,
    /// Names of the retry-tier topics: their records wait until due.
    retry_topics: HashSet<String>,
    /// Conversation memory (the memory topic, cached).
    memory: Arc<memory::Memory>,
    consumed: AtomicU64,
    results: AtomicU64,
    forwarded: AtomicU64,
    dead_letters: AtomicU64,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, Tracker<Item>> {
        // A panic while holding the lock leaves consistent data (every method completes its
        // updates before returning), so a poisoned lock is still usable.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self) -> WorkerStats {
        WorkerStats {
            consumed: self.consumed.load(Ordering::Relaxed),
            results: self.results.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
        }
    }
}

type WorkerConsumer = BaseConsumer<WorkerContext>;

/// Runs the worker until `shutdown` is cancelled, then drains and returns its counts.
pub async fn run(
    config: Arc<Config>,
    runner: StepRunner,
    shutdown: CancellationToken,
) -> Result<WorkerStats, WorkerError> {
    let producer: FutureProducer = crate::kafka::producer_config(&config.kafka).create()?;
    let shared = Arc::new(Shared {
        retry_topics: config
            .steps
            .iter()
            .flat_map(|s| s.retry_topics.iter().cloned())
            .collect(),
        config: config.clone(),
        runner,
        producer,
        tracker: Mutex::new(Tracker::new()),
        changed: Condvar::new(),
        assignment_changed: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        memory: Arc::new(memory::Memory::default()),
        consumed: AtomicU64::new(0),
        results: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
        dead_letters: AtomicU64::new(0),
    });
    let consumer = subscribe(&config, &shared)?;
    let rt = tokio::runtime::Handle::current();
    let thread = {
        let (consumer, shared) = (consumer.clone(), shared.clone());
        std::thread::Builder::new()
            .name("baton-poll".into())
            .spawn(move || poll::Poller::new(consumer, shared, rt).run(shutdown))
            .map_err(|e| WorkerError::Thread(e.to_string()))?
    };
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| WorkerError::Thread(e.to_string()))?
        .map_err(|_| WorkerError::Thread("the poll thread panicked".into()))?;
    drop(consumer);
    let _ = shared
        .producer
        .flush(Timeout::After(Duration::from_secs(10)));
    let stats = shared.stats();
    info!(?stats, "worker stopped");
    Ok(stats)
}

/// The worker's consumer, subscribed to every step's input and retry topics.
fn subscribe(config: &Config, shared: &Arc<Shared>) -> Result<Arc<WorkerConsumer>, WorkerError> {
    let mut cc = crate::kafka::consumer_config(&config.kafka);
    if !config
        .kafka
        .consumer
        .contains_key("queued.max.messages.kbytes")
    {
        // librdkafka's default prefetch queue (64 MiB) dwarfs the worker's own backlog.
        cc.set("queued.max.messages.kbytes", "16384");
    }
    let consumer: Arc<WorkerConsumer> = Arc::new(cc.create_with_context(WorkerContext {
        shared: shared.clone(),
    })?);
    let topics = config.input_topics();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    info!(topics = ?topics, group = %config.kafka.group_id, max_in_flight = config.worker.max_in_flight, "worker started");
    Ok(consumer)
}
