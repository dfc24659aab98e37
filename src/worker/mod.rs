//! The worker: the Kafka runtime. It consumes pipeline input topics, runs each job through its
//! step, publishes what the pipeline decided (the result, the next step's job, a retry record
//! or a dead letter), and stores offsets behind finished work.
//!
//! Shape: one OS thread owns the `BaseConsumer` and polls it and each assigned partition's own
//! queue in turn (`poll.rs`); every admitted record
//! becomes a tokio task (bounded by `worker.max_in_flight`) that processes it (`job.rs`:
//! decode, run the step, decide) and acts on the decision (`act.rs`: publish, then report);
//! tasks report completion to the [`tracker`], which decides the commit position and hands out
//! the next job of a busy key. Rebalances are served by the consumer's context (`rebalance.rs`).
//!
//! Guarantees:
//! - at-least-once: an offset is stored only when every record at or below it has its output
//!   acknowledged by the broker (librdkafka then auto-commits what was stored);
//! - bounded: at most `max_in_flight` jobs run at once and at most as many wait behind a busy
//!   key; the payloads held by running and waiting jobs (charged at [`CHARGE_FACTOR`] times
//!   their size) stay within three quarters of `worker.max_in_flight_bytes`, and librdkafka's
//!   prefetch queues are sized to the last quarter;
//! - fair: every assigned partition gets its turn at each free slot (retry tiers first), so a
//!   backlog on one partition does not starve the others and a due retry starts promptly;
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
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
use crate::telemetry;
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
    /// The bytes the record holds against the budget, given back when it is dropped.
    _charge: Charge,
}

/// What a running or waiting job is charged against the byte budget, per payload byte: the
/// record, the decoded job, the prompt and the request body each hold a copy of its text, and
/// an answer as long as the prompt (a summary of a long text is shorter; an edit or a
/// translation is not) holds four more on its way out: the response body, the parsed answer,
/// the result record and the producer's copy. Measured with echoed 50 KB prompts, 4 let the
/// worker's resident memory reach its baseline plus twice its budget.
pub const CHARGE_FACTOR: usize = 8;

/// The byte budget of running and waiting jobs.
struct Budget {
    /// Bytes charged to running and waiting jobs.
    held: AtomicUsize,
    /// The most bytes running and waiting jobs may be charged.
    limit: usize,
    /// Set by the poll thread when the next record did not fit: a charge given back then
    /// rings the bell (otherwise finishing jobs ring it only in batches).
    blocked: AtomicBool,
    bell: Arc<Bell>,
}

/// Bytes charged to a record while it is held; given back when it is dropped (whichever way
/// its job ends).
struct Charge {
    bytes: usize,
    budget: Arc<Budget>,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::SeqCst);
        if self.budget.blocked.load(Ordering::SeqCst) {
            self.budget.bell.ring();
        }
    }
}

/// Wakes the poll thread: parks and unparks it, so a ring costs a system call only when the
/// thread sleeps (a condition variable's notify always makes one). Any thread may ring it,
/// librdkafka's callbacks included.
#[derive(Default)]
struct Bell {
    poll_thread: OnceLock<std::thread::Thread>,
}

impl Bell {
    /// Called by the poll thread before its first wait.
    fn register(&self) {
        let _ = self.poll_thread.set(std::thread::current());
    }

    fn ring(&self) {
        if let Some(t) = self.poll_thread.get() {
            t.unpark();
        }
    }

    /// Waits until rung (at once if it was rung since the last wait) or `timeout` passes; may
    /// return early, which only costs the caller a look around.
    fn wait(&self, timeout: Duration) {
        std::thread::park_timeout(timeout);
    }
}

/// Where an owned partition stands, for the lag gauges: from librdkafka's statistics (log
/// start and end, the committed offset it fetched at assignment) and the commit callbacks.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Position {
    committed: Option<i64>,
    log_start: Option<i64>,
    log_end: Option<i64>,
}

/// One partition's own queue of fetched records.
type Queue = PartitionQueue<WorkerContext>;

/// What the poll thread, the job tasks and the consumer's callbacks share.
struct Shared {
    config: Arc<Config>,
    runner: StepRunner,
    producer: FutureProducer,
    tracker: Mutex<Tracker<Item>>,
    /// Signalled when a job finishes while a revoke waits for its partitions' jobs (see
    /// `draining`), and when partitions change.
    changed: Condvar,
    /// Revoke callbacks waiting on `changed` (raised and lowered under the tracker's lock):
    /// without one, a finishing job does not notify.
    draining: AtomicUsize,
    assignment_changed: AtomicBool,
    /// Set when shutdown begins: new assignments are no longer fetched.
    stopping: AtomicBool,
    /// Names of the retry-tier topics: their records wait until due.
    retry_topics: HashSet<String>,
    /// Conversation memory (the memory topic, cached).
    memory: Arc<memory::Memory>,
    /// Each assigned partition's own queue.
    queues: Mutex<HashMap<tracker::Tp, Arc<Queue>>>,
    /// Each assigned partition's offsets, for the lag gauges. Its lock is never held with
    /// another.
    positions: Mutex<HashMap<tracker::Tp, Position>>,
    /// Partitions of the subscribed topics, the whole group's: the denominator of this
    /// worker's share of the rate limits.
    group_partitions: AtomicUsize,
    /// Rung when the poll thread has something new to look at: slots freed, budget given
    /// back, a partition queue got records.
    bell: Arc<Bell>,
    /// Finished jobs ring the bell once this many slots are free (or none runs), so the poll
    /// thread is woken once per batch of starts rather than once per job.
    wake_batch: usize,
    budget: Arc<Budget>,
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

    fn queues(&self) -> MutexGuard<'_, HashMap<tracker::Tp, Arc<Queue>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn positions(&self) -> MutexGuard<'_, HashMap<tracker::Tp, Position>> {
        self.positions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the poll thread there is something new (a job ended, records arrived).
    fn wake(&self) {
        self.bell.ring();
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

impl telemetry::lag::LagSource for Shared {
    fn partitions(&self) -> Vec<telemetry::lag::PartitionLag> {
        let positions: Vec<(tracker::Tp, Position)> = self
            .positions()
            .iter()
            .map(|(tp, p)| (tp.clone(), *p))
            .collect();
        let t = self.tracker();
        positions
            .into_iter()
            .map(|(tp, p)| telemetry::lag::PartitionLag {
                oldest_unfinished_ms: t.oldest_unfinished(&tp),
                topic: tp.0,
                partition: tp.1,
                committed: p.committed,
                log_start: p.log_start,
                log_end: p.log_end,
            })
            .collect()
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
    let bell = Arc::new(Bell::default());
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
        draining: AtomicUsize::new(0),
        assignment_changed: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        memory: Arc::new(memory::Memory::default()),
        queues: Mutex::new(HashMap::new()),
        positions: Mutex::new(HashMap::new()),
        group_partitions: AtomicUsize::new(0),
        bell: bell.clone(),
        wake_batch: wake_batch(config.worker.max_in_flight),
        budget: Arc::new(Budget {
            held: AtomicUsize::new(0),
            limit: (config.worker.max_in_flight_bytes as usize / 4) * 3,
            blocked: AtomicBool::new(false),
            bell,
        }),
        consumed: AtomicU64::new(0),
        results: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
        dead_letters: AtomicU64::new(0),
    });
    // No share of the group's rate limits before the first assignment: a worker that joins
    // brings no burst of its own.
    shared.runner.set_group_share(0.0);
    let lag_source: Arc<dyn telemetry::lag::LagSource> = shared.clone();
    telemetry::lag::register(Arc::downgrade(&lag_source));
    drop(lag_source);
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
    // The partition queues hold the consumer: let them go so it closes.
    shared.queues().clear();
    drop(consumer);
    let _ = shared
        .producer
        .flush(Timeout::After(Duration::from_secs(10)));
    let stats = shared.stats();
    info!(?stats, "worker stopped");
    Ok(stats)
}

/// How many free slots make finishing jobs wake the poll thread: one in 64 of them, at most
/// 32 (so on average at most 1/128 of the slots wait for it), at least one.
fn wake_batch(max_in_flight: usize) -> usize {
    (max_in_flight / 64).clamp(1, 32)
}

/// The worker's consumer, subscribed to every step's input and retry topics, with its
/// prefetch sized from the byte budget.
fn subscribe(config: &Config, shared: &Arc<Shared>) -> Result<Arc<WorkerConsumer>, WorkerError> {
    let topics = config.input_topics();
    let counted = count_partitions(config, &topics);
    // Unknown (no metadata): no share of the rate limits until an assignment counts them.
    shared
        .group_partitions
        .store(counted.unwrap_or(0), Ordering::Relaxed);
    let partitions = counted.unwrap_or(topics.len());
    let mut cc = crate::kafka::consumer_config(&config.kafka);
    // What the config sets itself ([kafka.common] or [kafka.consumer], under either of
    // librdkafka's names) stays as set, and bounds what is derived.
    let limits = FetchLimits {
        message_max: bytes_setting(&cc, "message.max.bytes").unwrap_or(DEFAULT_MESSAGE_MAX_BYTES),
        receive_max: bytes_setting(&cc, "receive.message.max.bytes"),
    };
    let budget = config.worker.max_in_flight_bytes;
    for (key, value) in prefetch_settings(budget, partitions, limits) {
        let alias = (key == "max.partition.fetch.bytes").then_some("fetch.message.max.bytes");
        if cc.get(key).is_none() && alias.is_none_or(|a| cc.get(a).is_none()) {
            cc.set(key, value);
        }
    }
    let consumer: Arc<WorkerConsumer> = Arc::new(cc.create_with_context(WorkerContext {
        shared: shared.clone(),
        consumer: OnceLock::new(),
    })?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    info!(topics = ?topics, group = %config.kafka.group_id, max_in_flight = config.worker.max_in_flight, "worker started");
    Ok(consumer)
}

/// A byte setting of the client config, when set.
fn bytes_setting(cc: &rdkafka::ClientConfig, key: &str) -> Option<u64> {
    cc.get(key).and_then(|v| v.trim().parse().ok())
}

/// What librdkafka requires of `fetch.max.bytes`: at least `message.max.bytes`, and at most
/// `receive.message.max.bytes` less 512 (when the config sets it; its default is far above).
#[derive(Debug, Clone, Copy)]
struct FetchLimits {
    message_max: u64,
    receive_max: Option<u64>,
}

/// librdkafka's prefetch settings for a byte budget: a quarter of it is shared by the
/// partitions' own queues (with split queues, `queued.max.messages.kbytes` is per partition),
/// and no fetch asks for more than that, nor for more or less than librdkafka accepts (with
/// the default `message.max.bytes`, below a 4 MB budget one fetch response may exceed the
/// quarter; so may a raised `message.max.bytes`).
fn prefetch_settings(
    budget: u64,
    partitions: usize,
    limits: FetchLimits,
) -> [(&'static str, String); 3] {
    let prefetch = budget / 4;
    let per_partition = (prefetch / partitions.max(1) as u64).max(64 * 1024);
    [
        (
            "queued.max.messages.kbytes",
            (per_partition / 1024).to_string(),
        ),
        (
            "max.partition.fetch.bytes",
            per_partition.min(1024 * 1024).to_string(),
        ),
        (
            "fetch.max.bytes",
            fetch_max_bytes(prefetch, limits).to_string(),
        ),
    ]
}

/// The quarter of the budget, at most 50 MiB, within `limits`.
fn fetch_max_bytes(prefetch: u64, limits: FetchLimits) -> u64 {
    let mut fetch = prefetch.min(50 * 1024 * 1024);
    if let Some(receive) = limits.receive_max {
        fetch = fetch.min(receive.saturating_sub(512));
    }
    fetch.max(limits.message_max)
}

/// librdkafka's `message.max.bytes` unless set; it refuses a consumer whose `fetch.max.bytes`
/// is below it.
const DEFAULT_MESSAGE_MAX_BYTES: u64 = 1_000_000;

/// Partitions of `topics` (all a worker could be assigned), from the cluster's metadata;
/// `None` when the metadata or one of the topics cannot be seen.
fn count_partitions(config: &Config, topics: &[String]) -> Option<usize> {
    let metadata = crate::kafka::consumer_config(&config.kafka)
        .create::<BaseConsumer>()
        .and_then(|c| c.fetch_metadata(None, Timeout::After(Duration::from_secs(10))))
        .ok()?;
    topics
        .iter()
        .map(|t| {
            metadata
                .topics()
                .iter()
                .find(|m| m.name() == t)
                .map(|m| m.partitions().len())
                .filter(|&n| n > 0)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: FetchLimits = FetchLimits {
        message_max: DEFAULT_MESSAGE_MAX_BYTES,
        receive_max: None,
    };

    /// Asserts librdkafka accepts a consumer with `client` settings (the config's own) and
    /// the derived prefetch `settings`.
    fn assert_accepted(client: &[(&str, String)], settings: [(&'static str, String); 3]) {
        let mut cc = rdkafka::ClientConfig::new();
        cc.set("group.id", "g")
            .set("bootstrap.servers", "127.0.0.1:9");
        for (key, value) in client.iter().cloned().chain(settings) {
            cc.set(key, value);
        }
        let created = cc.create::<BaseConsumer>();
        assert!(created.is_ok(), "{:?}", created.err());
    }

    /// 10 MB records with `receive.message.max.bytes` just above them, as a cluster allowing
    /// large records may be configured: the default budget's 50 MiB fetch would exceed it,
    /// and librdkafka would refuse the consumer.
    #[test]
    fn the_fetch_size_stays_under_a_lowered_receive_message_max_bytes() {
        let (message, receive) = (10_000_000u64, 10_000_512u64);
        let limits = FetchLimits {
            message_max: message,
            receive_max: Some(receive),
        };
        let s = prefetch_settings(256 * 1024 * 1024, 8, limits);
        assert_eq!(s[2].1, message.to_string());
        let client = [
            ("message.max.bytes", message.to_string()),
            ("receive.message.max.bytes", receive.to_string()),
        ];
        assert_accepted(&client, s);
    }

    #[test]
    fn the_smallest_budget_still_makes_a_consumer_librdkafka_accepts() {
        assert_accepted(&[], prefetch_settings(1024 * 1024, 24, DEFAULTS));
    }

    /// A cluster that allows 64 MiB records: the config raises `message.max.bytes`, and the
    /// fetch size follows it past the 50 MiB it is otherwise capped at.
    #[test]
    fn the_fetch_size_follows_a_raised_message_max_bytes() {
        let large = 64 * 1024 * 1024;
        let limits = FetchLimits {
            message_max: large,
            receive_max: None,
        };
        let s = prefetch_settings(256 * 1024 * 1024, 8, limits);
        assert_eq!(s[2].1, large.to_string());
        let client = [
            ("message.max.bytes", large.to_string()),
            ("receive.message.max.bytes", (2 * large).to_string()),
        ];
        assert_accepted(&client, s);
    }

    #[test]
    fn a_large_budget_gives_a_quarter_to_prefetch() {
        let s = prefetch_settings(256 * 1024 * 1024, 8, DEFAULTS);
        assert_eq!(
            s[0].1,
            (8 * 1024).to_string(),
            "64 MiB over 8 partitions, in KiB"
        );
        assert_eq!(s[1].1, (1024 * 1024).to_string());
        assert_eq!(s[2].1, (50 * 1024 * 1024).to_string());
    }

    #[test]
    fn finished_jobs_wake_the_poll_thread_in_batches_of_at_most_32() {
        assert_eq!(wake_batch(1), 1);
        assert_eq!(wake_batch(64), 1);
        assert_eq!(wake_batch(1024), 16);
        assert_eq!(wake_batch(100_000), 32);
    }

    /// One hot key fills the waiting cap, so no slot is free although one job runs; when it
    /// ends, its successor takes its slot and the waiting jobs drop below the cap: the other
    /// keys' slots are free again, and the poll thread must hear of it (it did not, and slept
    /// up to 100 ms per job, when only a finish without a successor rang).
    #[test]
    fn a_hot_key_handing_over_its_slot_wakes_the_poll_thread_when_it_frees_the_others() {
        let (max, batch) = (4, 1);
        let tp: tracker::Tp = ("jobs".into(), 0);
        let mut t = tracker::Tracker::new();
        let e = t.assign(tp.clone());
        for offset in 0..=max as i64 {
            t.admit(&tp, (e, 0), offset, Some(b"hot"), offset);
        }
        assert_eq!(
            (t.running_total(), t.waiting_total(), t.free(max)),
            (1, 4, 0)
        );
        assert!(!job::worth_waking(&t, max, batch));
        let f = t.finish(&tp, e, 0, Some(b"hot"));
        assert_eq!(f.next, Some(1), "the key's next job takes the slot");
        assert_eq!(t.free(max), 3);
        assert!(job::worth_waking(&t, max, batch));
        // Short of a batch, a finish that frees a slot does not ring.
        assert!(!job::worth_waking(&t, max, 4));
    }
}
