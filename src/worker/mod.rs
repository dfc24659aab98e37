//! The worker: consumes pipeline input topics, runs each job through its step, publishes the
//! result (or the next step's job, or a dead letter), and stores offsets behind finished work.
//!
//! Shape: one OS thread owns the `BaseConsumer` and polls it; every admitted record becomes a
//! tokio task (bounded by `worker.max_in_flight`); tasks report completion to the [`tracker`],
//! which decides the commit position and hands out the next job of a busy key.
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

pub mod tracker;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, StepConfig, TopicNames};
use crate::envelope::{decode_job, ErrorClass, Job};
use crate::kafka::headers;
use crate::pipeline::{next_step_job, StepFailure, StepOutcome, StepRunner};
use crate::telemetry;
use tracker::{Admit, Tp, Tracker};

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

struct Item {
    msg: OwnedMessage,
    epoch: u64,
    /// Cancelled when the partition's epoch ends: the job must not publish any more.
    cancel: CancellationToken,
}

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
    pipelines: Vec<String>,
    /// Names of the retry-tier topics: their records wait until due.
    retry_topics: HashSet<String>,
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
}

/// The consumer's context: rebalance handling and librdkafka statistics.
struct WorkerContext {
    shared: Arc<Shared>,
}

impl ClientContext for WorkerContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            let Some((step, _)) = self.shared.config.step_for_topic(topic) else {
                continue;
            };
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    telemetry::set_lag(&step.pipeline, &step.name, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let tps = tps_of(tpl);
        let lost = consumer.assignment_lost();
        let deadline = Instant::now() + self.shared.config.worker.rebalance_timeout;
        let mut t = self.shared.tracker();
        let dropped: usize = tps.iter().map(|tp| t.begin_revoke(tp).len()).sum();
        // Drain: running jobs of revoked partitions get until the deadline to finish (not when
        // the partitions are already lost: another member may own them by now).
        while !lost && tps.iter().any(|tp| t.running(tp) > 0) && Instant::now() < deadline {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            t = self
                .shared
                .changed
                .wait_timeout(t, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let unfinished: usize = tps.iter().map(|tp| t.running(tp)).sum();
        for tp in &tps {
            t.remove(tp);
        }
        drop(t);
        self.shared.changed.notify_all();
        if !lost {
            commit_stored(consumer);
        }
        info!(
            partitions = tps.len(),
            dropped_waiting = dropped,
            unfinished,
            lost,
            "partitions revoked"
        );
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // librdkafka keeps an application pause on a partition across revoke and
                // re-assign. A partition paused under the previous assignment would stay
                // paused for good if the poll loop's resume ran while nothing was assigned, so
                // start every new assignment unpaused; the loop pauses it again if it must.
                let stopping = self.shared.stopping.load(Ordering::SeqCst);
                let r = if stopping {
                    consumer.pause(tpl)
                } else {
                    consumer.resume(tpl)
                };
                if let Err(e) = r {
                    warn!(error = %e, "could not set the pause state of newly assigned partitions");
                }
                let tps = tps_of(tpl);
                let mut t = self.shared.tracker();
                for tp in &tps {
                    t.assign(tp.clone());
                }
                drop(t);
                self.shared.assignment_changed.store(true, Ordering::SeqCst);
                info!(partitions = tps.len(), "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                // rdkafka unassigns everything after a rebalance error: forget (and cancel)
                // every partition; the next assignment starts new epochs.
                let mut t = self.shared.tracker();
                for tp in t.owned() {
                    t.remove(&tp);
                }
                drop(t);
                self.shared.changed.notify_all();
                warn!(error = %e, "rebalance error; all partitions released");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(error = %e, "offset commit failed; it is retried with the next commit"),
        }
    }
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

/// Commits the stored offsets synchronously; "nothing stored" is not an error.
fn commit_stored<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => warn!(error = %e, "offset commit failed"),
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
        pipelines: config.pipelines.clone(),
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
        consumed: AtomicU64::new(0),
        results: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
        dead_letters: AtomicU64::new(0),
    });
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

    let rt = tokio::runtime::Handle::current();
    let thread = {
        let (consumer, shared) = (consumer.clone(), shared.clone());
        std::thread::Builder::new()
            .name("baton-poll".into())
            .spawn(move || poll_loop(consumer, shared, rt, shutdown))
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
    let stats = WorkerStats {
        consumed: shared.consumed.load(Ordering::Relaxed),
        results: shared.results.load(Ordering::Relaxed),
        forwarded: shared.forwarded.load(Ordering::Relaxed),
        dead_letters: shared.dead_letters.load(Ordering::Relaxed),
    };
    info!(?stats, "worker stopped");
    Ok(stats)
}

/// A fetched record waiting for capacity, with the partition epoch it was fetched under.
struct Fetched {
    tp: Tp,
    msg: OwnedMessage,
    epoch: Option<u64>,
}

/// The consumer thread: admit records while there is capacity, keep a bounded backlog of
/// fetched records when there is none, pause when the backlog is full, drain on shutdown.
///
/// Why a backlog and not a pause at full capacity: pausing drops librdkafka's prefetched
/// records and a resume costs a fetch round trip (hundreds of milliseconds measured with
/// `baton bench`), so pausing every time capacity runs out leaves the worker idle between
/// windows. The backlog holds at most `2 * max_in_flight` records and resumes fetching at
/// half, so a full latency window of work is buffered while the refetch happens.
fn poll_loop(
    consumer: Arc<WorkerConsumer>,
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    shutdown: CancellationToken,
) {
    let max = shared.config.worker.max_in_flight;
    let backlog_max = 2 * max;
    let mut paused = false;
    let mut backlog: VecDeque<Fetched> = VecDeque::new();
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    let mut last_poll_error: Option<Instant> = None;
    let mut held: HashMap<Tp, Held> = HashMap::new();

    while !shutdown.is_cancelled() {
        if shared.assignment_changed.swap(false, Ordering::SeqCst) {
            // Records fetched under a previous assignment belong to whoever owns them now.
            let t = shared.tracker();
            backlog.retain(|f| f.epoch.is_some() && t.epoch(&f.tp) == f.epoch);
            held.retain(|tp, h| h.epoch.is_some() && t.epoch(tp) == h.epoch);
            drop(t);
            if paused {
                // New assignments start unpaused; keep the whole assignment paused.
                set_paused(&consumer, true, &held);
            } else {
                // A held partition kept across the change stays paused until its record is due.
                for tp in held.keys() {
                    pause_one(&consumer, tp, true);
                }
            }
        }
        release_due(&consumer, &mut held, &mut backlog, paused);
        let mut capacity = capacity(&shared, max);
        while capacity > 0 {
            let Some(f) = backlog.pop_front() else { break };
            dispatch(&consumer, &shared, &rt, f);
            capacity = self::capacity(&shared, max);
        }
        if !paused && backlog.len() >= backlog_max {
            set_paused(&consumer, true, &held);
            paused = true;
        } else if paused && backlog.len() <= backlog_max / 2 {
            set_paused(&consumer, false, &held);
            paused = false;
        }
        if capacity == 0 && paused {
            // Full and nothing more to fetch: wait for a job to end, serving group events.
            wait_for_change(&shared);
            if let Some(f) = poll_one(
                &consumer,
                &shared,
                &mut topics,
                Duration::ZERO,
                &mut last_poll_error,
            )
            .and_then(|f| hold_if_early(&consumer, &shared, &mut held, f))
            {
                backlog.push_back(f);
            }
            continue;
        }
        // With capacity, wait up to 100 ms for a record; without, only briefly, so an ended
        // job is noticed quickly while the backlog fills. A held retry record shortens it.
        let mut wait = if capacity > 0 {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(5)
        };
        if let Some(due) = held.values().map(|h| h.due_ms).min() {
            let until = due.saturating_sub(crate::util::unix_ms());
            wait = wait.min(Duration::from_millis(until.max(1)));
        }
        if let Some(f) = poll_one(&consumer, &shared, &mut topics, wait, &mut last_poll_error)
            .and_then(|f| hold_if_early(&consumer, &shared, &mut held, f))
        {
            if capacity > 0 && backlog.is_empty() {
                dispatch(&consumer, &shared, &rt, f);
            } else {
                backlog.push_back(f);
            }
        }
    }

    // Shutdown: stop fetching, drain, then release every partition and commit.
    shared.stopping.store(true, Ordering::SeqCst);
    set_paused(&consumer, true, &held);
    backlog.clear();
    held.clear();
    let deadline = Instant::now() + shared.config.worker.shutdown_timeout;
    info!(
        in_flight = shared.tracker().in_flight(),
        "shutting down: draining in-flight jobs"
    );
    loop {
        let in_flight = shared.tracker().in_flight();
        telemetry::set_in_flight(in_flight);
        if in_flight == 0 {
            break;
        }
        if Instant::now() >= deadline {
            warn!(in_flight, "shutdown deadline passed; unfinished jobs stay uncommitted and will be redelivered");
            break;
        }
        wait_for_change(&shared);
        // Serves rebalances and statistics; partitions stay paused, nothing new is admitted.
        let _ = poll_one(
            &consumer,
            &shared,
            &mut topics,
            Duration::ZERO,
            &mut last_poll_error,
        );
    }
    // Removing the partitions cancels whatever still runs (it publishes nothing) and makes the
    // revoke served by the consumer's close return at once.
    let mut t = shared.tracker();
    for tp in t.owned() {
        t.remove(&tp);
    }
    drop(t);
    commit_stored(&consumer);
    consumer.unsubscribe();
}

/// How many more jobs may start: running jobs are capped at `max`, and so are jobs waiting
/// behind a busy key (one hot key must not take every slot from the other keys).
fn capacity(shared: &Shared, max: usize) -> usize {
    let t = shared.tracker();
    telemetry::set_in_flight(t.in_flight());
    if t.waiting_total() >= max {
        0
    } else {
        max.saturating_sub(t.running_total())
    }
}

/// Polls once; a record comes back with its interned topic and the epoch of its partition.
fn poll_one(
    consumer: &WorkerConsumer,
    shared: &Shared,
    topics: &mut HashMap<String, Arc<str>>,
    wait: Duration,
    last_error: &mut Option<Instant>,
) -> Option<Fetched> {
    match consumer.poll(wait)? {
        Ok(m) => {
            let msg = m.detach();
            let topic = match topics.get(msg.topic()) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = Arc::from(msg.topic());
                    topics.insert(msg.topic().to_string(), t.clone());
                    t
                }
            };
            let tp: Tp = (topic, msg.partition());
            let epoch = shared.tracker().epoch(&tp);
            Some(Fetched { tp, msg, epoch })
        }
        Err(e) => {
            // Usually a missing topic or a broker hiccup; librdkafka recovers by itself.
            if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                warn!(error = %e, "consumer error");
                *last_error = Some(Instant::now());
            }
            None
        }
    }
}

/// Waits up to 100 ms for a job to end (or partitions to change).
fn wait_for_change(shared: &Shared) {
    let t = shared.tracker();
    let _ = shared
        .changed
        .wait_timeout(t, Duration::from_millis(100))
        .unwrap_or_else(|e| e.into_inner());
}

/// Pauses or resumes the whole assignment; a resume leaves the partitions of held retry
/// records paused.
fn set_paused(consumer: &WorkerConsumer, pause: bool, held: &HashMap<Tp, Held>) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    for e in assignment.elements() {
        let is_held = held
            .keys()
            .any(|(t, p)| &**t == e.topic() && *p == e.partition());
        if pause || !is_held {
            tpl.add_partition(e.topic(), e.partition());
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let r = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = r {
        warn!(error = %e, pause, "could not pause/resume partitions");
    }
}

/// Pauses or resumes one partition.
fn pause_one(consumer: &WorkerConsumer, tp: &Tp, pause: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.0, tp.1);
    let r = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = r {
        warn!(error = %e, topic = %tp.0, partition = tp.1, pause, "could not pause/resume a partition");
    }
}

/// A retry record that arrived before it was due, with anything its partition delivered after
/// it (nothing, normally: the partition is paused at once).
struct Held {
    due_ms: u64,
    epoch: Option<u64>,
    records: VecDeque<Fetched>,
}

/// Holds `f` when it is a retry record not yet due (pausing its partition, so nothing waits in
/// a job slot and nothing is polled in a busy loop) or when its partition already holds one;
/// otherwise hands it back for processing.
fn hold_if_early(
    consumer: &WorkerConsumer,
    shared: &Shared,
    held: &mut HashMap<Tp, Held>,
    f: Fetched,
) -> Option<Fetched> {
    if let Some(h) = held.get_mut(&f.tp) {
        h.records.push_back(f);
        return None;
    }
    if !shared.retry_topics.contains(&*f.tp.0) {
        return Some(f);
    }
    let due_ms = headers::get(f.msg.headers(), headers::RETRY_DUE)
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(0);
    if due_ms <= crate::util::unix_ms() {
        return Some(f);
    }
    pause_one(consumer, &f.tp, true);
    telemetry::retry_held();
    debug!(topic = %f.tp.0, partition = f.tp.1, offset = f.msg.offset(), due_ms, "retry record held until due");
    held.insert(
        f.tp.clone(),
        Held {
            due_ms,
            epoch: f.epoch,
            records: VecDeque::from([f]),
        },
    );
    None
}

/// Moves held records that are due to the backlog and resumes their partitions (unless the
/// whole assignment is paused: its resume will include them).
fn release_due(
    consumer: &WorkerConsumer,
    held: &mut HashMap<Tp, Held>,
    backlog: &mut VecDeque<Fetched>,
    paused: bool,
) {
    if held.is_empty() {
        return;
    }
    let now = crate::util::unix_ms();
    let due: Vec<Tp> = held
        .iter()
        .filter(|(_, h)| h.due_ms <= now)
        .map(|(tp, _)| tp.clone())
        .collect();
    for tp in due {
        if let Some(h) = held.remove(&tp) {
            backlog.extend(h.records);
            if !paused {
                pause_one(consumer, &tp, false);
            }
        }
    }
}

/// Admits a fetched record: starts it, queues it behind its key, or drops it when its
/// partition changed hands since it was fetched.
fn dispatch(
    consumer: &Arc<WorkerConsumer>,
    shared: &Arc<Shared>,
    rt: &tokio::runtime::Handle,
    f: Fetched,
) {
    let Fetched { tp, msg, epoch } = f;
    let Some(epoch) = epoch else { return };
    let offset = msg.offset();
    let key = msg.key().map(<[u8]>::to_vec);
    let mut t = shared.tracker();
    let Some(cancel) = t.cancel_token(&tp) else {
        return;
    };
    match t.admit(
        &tp,
        epoch,
        offset,
        key.as_deref(),
        Item { msg, epoch, cancel },
    ) {
        Admit::Start(item) => {
            drop(t);
            rt.spawn(run_chain(consumer.clone(), shared.clone(), tp, item));
        }
        Admit::Queued => {}
        // Not ours (any more): the partition's owner will consume it again.
        Admit::NotOwned(_) => {
            debug!(topic = %tp.0, partition = tp.1, offset, "record of a partition no longer owned dropped")
        }
        // Already admitted in this assignment: librdkafka can deliver a record again around a
        // pause/resume (seen under load); it is handled once, so skip it.
        Admit::Duplicate(_) => {
            telemetry::redelivery_skipped();
            debug!(topic = %tp.0, partition = tp.1, offset, "record delivered twice in one assignment skipped")
        }
    }
}

/// How processing a record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// A result, forwarded job or dead letter was acknowledged by the broker.
    Published,
    /// The partition's epoch ended first: nothing more is published, the offset stays open.
    Abandoned,
}

/// Runs a job, then every job queued behind its key.
async fn run_chain(consumer: Arc<WorkerConsumer>, shared: Arc<Shared>, tp: Tp, mut item: Item) {
    use futures::FutureExt;
    loop {
        let processed = std::panic::AssertUnwindSafe(process(&shared, &item.msg, &item.cancel))
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
                internal_error(&shared, &item.msg, &item.cancel, &what).await
            }
        };
        let offset = item.msg.offset();
        let key = item.msg.key().map(<[u8]>::to_vec);
        let mut t = shared.tracker();
        let f = match ended {
            Ended::Published => t.finish(&tp, item.epoch, offset, key.as_deref()),
            Ended::Abandoned => t.release(&tp, item.epoch, offset, key.as_deref()),
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
        drop(t);
        shared.changed.notify_all();
        match f.next {
            Some(next) => item = next,
            None => return,
        }
    }
}

/// Dead-letters a record whose processing panicked.
async fn internal_error(
    shared: &Shared,
    msg: &OwnedMessage,
    cancel: &CancellationToken,
    what: &str,
) -> Ended {
    let Some((step, _)) = shared.config.step_for_topic(msg.topic()) else {
        return Ended::Published;
    };
    let traceparent =
        headers::child_traceparent(headers::get(msg.headers(), headers::TRACEPARENT).as_deref());
    let id = key_as_id(msg);
    let failure = DeadLetter {
        job_id: &id,
        class: ErrorClass::InternalError.as_str(),
        message: &format!("internal error while processing: {what}"),
        last_model: None,
        attempts: 0,
        variant: None,
        history: None,
    };
    let label = format!("{}.{}", step.pipeline, step.name);
    dead_letter(
        shared,
        step,
        msg,
        &label,
        &traceparent,
        failure,
        Instant::now(),
        cancel,
    )
    .await
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

/// Processes one record to its terminal output.
async fn process(shared: &Shared, msg: &OwnedMessage, cancel: &CancellationToken) -> Ended {
    let started = Instant::now();
    let config = &shared.config;
    let Some((step, tier)) = config.step_for_topic(msg.topic()) else {
        return Ended::Published;
    };
    shared.consumed.fetch_add(1, Ordering::Relaxed);
    telemetry::job_consumed(&step.pipeline, &step.name);
    let traceparent =
        headers::child_traceparent(headers::get(msg.headers(), headers::TRACEPARENT).as_deref());
    let step_label = format!("{}.{}", step.pipeline, step.name);

    let job = match decode_job(
        msg.payload(),
        config.worker.max_payload_bytes,
        &step.pipeline,
        &shared.pipelines,
    ) {
        Ok(job) => job,
        Err(e) => {
            let id = key_as_id(msg);
            let failure = DeadLetter {
                job_id: &id,
                class: e.class().as_str(),
                message: &e.to_string(),
                last_model: None,
                attempts: 0,
                variant: None,
                history: None,
            };
            return dead_letter(
                shared,
                step,
                msg,
                &step_label,
                &traceparent,
                failure,
                started,
                cancel,
            )
            .await;
        }
    };
    let key = routing_key(msg, &job);
    // What earlier steps of this job's pipeline billed (absent or unreadable: nothing).
    let usd_header = |k: &str| {
        headers::get(msg.headers(), k)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(0.0)
    };
    let spent_before = usd_header(headers::JOB_COST);
    // What earlier rounds of this step billed and called (a retry record carries both; the
    // `baton-attempt` of a job forwarded from an earlier step is that step's, not this one's).
    let (step_before, attempts_before) = if tier.is_some() {
        let attempts = headers::get(msg.headers(), headers::ATTEMPT)
            .and_then(|a| a.parse::<u32>().ok())
            .unwrap_or(0);
        (usd_header(headers::STEP_COST), attempts)
    } else {
        (0.0, 0)
    };
    let outcome = tokio::select! {
        o = shared.runner.run(step, &job, &key, spent_before) => o,
        _ = cancel.cancelled() => return Ended::Abandoned,
    };
    let failure = match outcome {
        StepOutcome::Done(mut result) => {
            let round_cost = result.cost_usd;
            // The result reports the step's cost and calls over every round.
            result.cost_usd = crate::router::round_usd(step_before + round_cost);
            if let Some(t) = tier {
                result.retries = t as u32 + 1;
                result.attempts += attempts_before;
            }
            let key = msg
                .key()
                .map_or_else(|| job.id.as_bytes().to_vec(), <[u8]>::to_vec);
            let mut hdrs = headers::common(&job.id, &step_label, result.attempts, &traceparent);
            if let Some(v) = &result.variant {
                hdrs = hdrs.insert(rdkafka::message::Header {
                    key: headers::VARIANT,
                    value: Some(v.as_bytes()),
                });
            }
            let job_cost = (spent_before + round_cost).to_string();
            hdrs = hdrs.insert(rdkafka::message::Header {
                key: headers::JOB_COST,
                value: Some(job_cost.as_bytes()),
            });
            let (payload, outcome) = if step.is_last {
                (serde_json::to_vec(&result), "result")
            } else {
                (
                    serde_json::to_vec(&next_step_job(&job, &result)),
                    "forwarded",
                )
            };
            let payload = payload.expect("envelopes serialize");
            match publish(
                shared,
                &step.output_topic,
                Some(&key),
                Some(&payload),
                hdrs,
                cancel,
            )
            .await
            {
                Ok(()) => {
                    let counter = if step.is_last {
                        &shared.results
                    } else {
                        &shared.forwarded
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    telemetry::job_finished(&step.pipeline, &step.name, outcome, started.elapsed());
                    return Ended::Published;
                }
                Err(PublishError::Abandoned) => return Ended::Abandoned,
                Err(PublishError::Rejected(e)) => StepFailure {
                    class: ErrorClass::OutputRejected,
                    message: format!(
                        "the broker rejected the output ({} bytes) for good: {e}",
                        payload.len()
                    ),
                    variant: result.variant.clone(),
                    last_model: Some(result.model.clone()),
                    attempts: result.attempts,
                    retry_after: None,
                    cost_usd: result.cost_usd,
                },
            }
        }
        StepOutcome::Failed(f) => f,
    };
    let history = retry_history(msg, tier, step, &failure);
    if failure.class.retry_later() {
        let next = tier.map_or(0, |t| t + 1);
        if next < step.retry_topics.len() {
            return retry_later(
                shared,
                step,
                msg,
                RetryRound {
                    job_id: &job.id,
                    label: &step_label,
                    traceparent: &traceparent,
                    tier: next,
                    attempts: attempts_before + failure.attempts,
                    history: &history,
                    variant: failure.variant.as_deref(),
                    not_before: failure.retry_after,
                    job_cost: spent_before + failure.cost_usd,
                    step_cost: step_before + failure.cost_usd,
                },
                started,
                cancel,
            )
            .await;
        }
    }
    let message = match tier {
        Some(_) if failure.class.retry_later() => format!(
            "{} (after {} retry tiers)",
            failure.message,
            step.retry_topics.len()
        ),
        _ => failure.message.clone(),
    };
    let dl = DeadLetter {
        job_id: &job.id,
        class: failure.class.as_str(),
        message: &message,
        last_model: failure.last_model.as_deref(),
        attempts: attempts_before + failure.attempts,
        variant: failure.variant.as_deref(),
        history: tier.map(|_| history.as_str()),
    };
    dead_letter(
        shared,
        step,
        msg,
        &step_label,
        &traceparent,
        dl,
        started,
        cancel,
    )
    .await
}

struct DeadLetter<'a> {
    job_id: &'a str,
    class: &'static str,
    message: &'a str,
    last_model: Option<&'a str>,
    attempts: u32,
    variant: Option<&'a str>,
    history: Option<&'a str>,
}

/// Most rounds kept in a retry history (the oldest are dropped beyond it).
const MAX_HISTORY: usize = 20;

/// The job's retry history with this round appended: JSON, for the `baton-retry-history`
/// header of its next retry record or its dead letter.
fn retry_history(
    msg: &OwnedMessage,
    tier: Option<usize>,
    step: &StepConfig,
    failure: &StepFailure,
) -> String {
    let mut rounds: Vec<serde_json::Value> = headers::get(msg.headers(), headers::RETRY_HISTORY)
        .and_then(|h| serde_json::from_str(&h).ok())
        .unwrap_or_default();
    rounds.push(serde_json::json!({
        "at": crate::util::now_rfc3339(),
        "topic": tier.map_or(step.topic.as_str(), |t| step.retry_topics[t].as_str()),
        "error_class": failure.class.as_str(),
        "model": failure.last_model,
        "attempts": failure.attempts,
    }));
    if rounds.len() > MAX_HISTORY {
        rounds.drain(..rounds.len() - MAX_HISTORY);
    }
    serde_json::Value::Array(rounds).to_string()
}

/// One trip of a job to a retry tier.
struct RetryRound<'a> {
    job_id: &'a str,
    label: &'a str,
    traceparent: &'a str,
    tier: usize,
    attempts: u32,
    history: &'a str,
    variant: Option<&'a str>,
    /// A provider's Retry-After: the record is due no sooner.
    not_before: Option<Duration>,
    /// What the job has been billed so far, all steps and rounds.
    job_cost: f64,
    /// What this step's rounds have been billed so far.
    step_cost: f64,
}

/// Publishes the original record (bytes and key untouched) to retry tier `round.tier` of its
/// step, due after the tier's delay. The job's offset is then finished like any output's: the
/// retry record carries the job on.
async fn retry_later(
    shared: &Shared,
    step: &StepConfig,
    msg: &OwnedMessage,
    round: RetryRound<'_>,
    started: Instant,
    cancel: &CancellationToken,
) -> Ended {
    let tier = &shared.config.retry_tiers[round.tier];
    let topic = &step.retry_topics[round.tier];
    let wait = tier.delay.max(round.not_before.unwrap_or_default());
    let due_ms = crate::util::unix_ms() + wait.as_millis() as u64;
    let count = round.tier as u32 + 1;
    let (job_cost, step_cost) = (round.job_cost.to_string(), round.step_cost.to_string());
    let hdrs = headers::retry(
        msg.headers(),
        round.job_id,
        round.label,
        round.attempts,
        round.traceparent,
        &headers::RetryInfo {
            tier: round.tier,
            due_ms,
            count,
            history: round.history,
            variant: round.variant,
        },
    )
    .insert(rdkafka::message::Header {
        key: headers::JOB_COST,
        value: Some(job_cost.as_bytes()),
    })
    .insert(rdkafka::message::Header {
        key: headers::STEP_COST,
        value: Some(step_cost.as_bytes()),
    });
    match publish(shared, topic, msg.key(), msg.payload(), hdrs, cancel).await {
        Ok(()) => {
            telemetry::retry_scheduled(&step.pipeline, &step.name, &tier.name);
            telemetry::job_finished(&step.pipeline, &step.name, "retry_later", started.elapsed());
            debug!(topic = %topic, "job sent to a retry tier");
            Ended::Published
        }
        Err(PublishError::Abandoned) => Ended::Abandoned,
        Err(PublishError::Rejected(e)) => {
            // The record came in at this size: a refusal now is a broker/topic mismatch.
            let message = format!("the broker refused the retry record for good: {e}");
            let dl = DeadLetter {
                job_id: round.job_id,
                class: ErrorClass::OutputRejected.as_str(),
                message: &message,
                last_model: None,
                attempts: round.attempts,
                variant: round.variant,
                history: Some(round.history),
            };
            dead_letter(
                shared,
                step,
                msg,
                round.label,
                round.traceparent,
                dl,
                started,
                cancel,
            )
            .await
        }
    }
}

/// Publishes the original record (bytes and key untouched) to `<topic>.dlq` with the
/// dead-letter headers. If the broker rejects it for good (too large with the headers), the
/// dead letter is sent without its value, saying so, so the failure is still on record.
#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    shared: &Shared,
    step: &StepConfig,
    msg: &OwnedMessage,
    step_label: &str,
    traceparent: &str,
    f: DeadLetter<'_>,
    started: Instant,
    cancel: &CancellationToken,
) -> Ended {
    // The step's dead-letter topic, also for records consumed from its retry tiers; or the
    // review topic when the step's route escalates this class to a person.
    let review = shared.config.routes[step.route]
        .review
        .iter()
        .any(|c| c.as_str() == f.class);
    let dlq = if review {
        shared.config.topics.review.clone()
    } else {
        TopicNames::dlq_of(&step.topic)
    };
    let mut message = f.message.to_string();
    let mut payload = msg.payload();
    loop {
        let info = headers::DeadLetterInfo {
            error_class: f.class,
            error: &message,
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            last_model: f.last_model,
            variant: f.variant,
            history: f.history,
        };
        let hdrs = headers::dead_letter(
            msg.headers(),
            f.job_id,
            step_label,
            f.attempts,
            traceparent,
            &info,
        );
        match publish(shared, &dlq, msg.key(), payload, hdrs, cancel).await {
            Ok(()) => break,
            Err(PublishError::Abandoned) => return Ended::Abandoned,
            Err(PublishError::Rejected(e)) if payload.is_some() => {
                warn!(topic = %dlq, error = %e, "dead letter rejected; sending it without the original value");
                message = format!(
                    "{message} [original value of {} bytes dropped: {e}]",
                    payload.map_or(0, <[u8]>::len)
                );
                payload = None;
            }
            Err(PublishError::Rejected(e)) => {
                // Nothing smaller to send: keep the record unfinished (never lost) and say so.
                tracing::error!(topic = %dlq, error = %e, "dead letter rejected even without its value; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = cancel.cancelled() => return Ended::Abandoned,
                }
            }
        }
    }
    shared.dead_letters.fetch_add(1, Ordering::Relaxed);
    if review {
        telemetry::escalated(&step.pipeline, &step.name, f.class);
    } else {
        telemetry::dead_lettered(&step.pipeline, &step.name, f.class);
    }
    telemetry::job_finished(&step.pipeline, &step.name, "dead_letter", started.elapsed());
    debug!(class = f.class, topic = %dlq, "record dead-lettered");
    Ended::Published
}

/// Why a record was not published.
#[derive(Debug)]
enum PublishError {
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
async fn publish(
    shared: &Shared,
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    hdrs: OwnedHeaders,
    cancel: &CancellationToken,
) -> Result<(), PublishError> {
    let mut delay = Duration::from_millis(100);
    loop {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(hdrs.clone());
        if let Some(k) = key {
            record = record.key(k);
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
            Err((e, _)) => {
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
