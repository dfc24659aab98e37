//! The consumer thread: admit records while there is capacity, keep a bounded backlog of
//! fetched records when there is none, pause when the backlog is full, hold retry records until
//! they are due, drain on shutdown.
//!
//! Why a backlog and not a pause at full capacity: pausing drops librdkafka's prefetched
//! records and a resume costs a fetch round trip (hundreds of milliseconds measured with
//! `baton bench`), so pausing every time capacity runs out leaves the worker idle between
//! windows. The backlog holds at most `2 * max_in_flight` records and resumes fetching at
//! half, so a full latency window of work is buffered while the refetch happens.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::rebalance::commit_stored;
use super::tracker::{Admit, Tp};
use super::{Item, Shared, WorkerConsumer};
use crate::kafka::meta::RecordMeta;
use crate::telemetry;

/// A fetched record waiting for capacity, with its metadata and the partition epoch it was
/// fetched under.
struct Fetched {
    tp: Tp,
    msg: OwnedMessage,
    meta: RecordMeta,
    epoch: Option<u64>,
}

/// A retry record that arrived before it was due, with anything its partition delivered after
/// it (nothing, normally: the partition is paused at once).
struct Held {
    due_ms: u64,
    epoch: Option<u64>,
    records: VecDeque<Fetched>,
}

/// The poll thread's state.
pub(super) struct Poller {
    consumer: Arc<WorkerConsumer>,
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    max: usize,
    paused: bool,
    backlog: VecDeque<Fetched>,
    held: HashMap<Tp, Held>,
    /// Interned topic names.
    topics: HashMap<String, Arc<str>>,
    last_poll_error: Option<Instant>,
}

impl Poller {
    /// A poller over `consumer`, spawning jobs on `rt`.
    pub(super) fn new(
        consumer: Arc<WorkerConsumer>,
        shared: Arc<Shared>,
        rt: tokio::runtime::Handle,
    ) -> Self {
        Poller {
            max: shared.config.worker.max_in_flight,
            consumer,
            shared,
            rt,
            paused: false,
            backlog: VecDeque::new(),
            held: HashMap::new(),
            topics: HashMap::new(),
            last_poll_error: None,
        }
    }

    /// Polls until `shutdown` is cancelled, then drains.
    pub(super) fn run(mut self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            self.turn();
        }
        self.drain();
    }

    /// One turn: follow assignment changes, start what capacity allows, pause or resume by the
    /// backlog, fetch (or wait for a job to end).
    fn turn(&mut self) {
        if self.shared.assignment_changed.swap(false, Ordering::SeqCst) {
            self.after_assignment_change();
        }
        self.release_due();
        let capacity = self.start_from_backlog();
        let backlog_max = 2 * self.max;
        if !self.paused && self.backlog.len() >= backlog_max {
            self.set_paused(true);
        } else if self.paused && self.backlog.len() <= backlog_max / 2 {
            self.set_paused(false);
        }
        if capacity == 0 && self.paused {
            // Full and nothing more to fetch: wait for a job to end, serving group events.
            wait_for_change(&self.shared);
            if let Some(f) = self.fetch(Duration::ZERO) {
                self.backlog.push_back(f);
            }
            return;
        }
        // With capacity, wait up to 100 ms for a record; without, only briefly, so an ended
        // job is noticed quickly while the backlog fills. A held retry record shortens it.
        let mut wait = if capacity > 0 {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(5)
        };
        if let Some(due) = self.held.values().map(|h| h.due_ms).min() {
            let until = due.saturating_sub(crate::util::unix_ms());
            wait = wait.min(Duration::from_millis(until.max(1)));
        }
        if let Some(f) = self.fetch(wait) {
            if capacity > 0 && self.backlog.is_empty() {
                self.dispatch(f);
            } else {
                self.backlog.push_back(f);
            }
        }
    }

    /// Records fetched under a previous assignment belong to whoever owns them now; new
    /// assignments start unpaused, so the pauses this thread keeps are set again.
    fn after_assignment_change(&mut self) {
        let t = self.shared.tracker();
        self.backlog
            .retain(|f| f.epoch.is_some() && t.epoch(&f.tp) == f.epoch);
        self.held
            .retain(|tp, h| h.epoch.is_some() && t.epoch(tp) == h.epoch);
        drop(t);
        if self.paused {
            // Keep the whole assignment paused.
            self.set_paused(true);
        } else {
            // A held partition kept across the change stays paused until its record is due.
            for tp in self.held.keys() {
                pause_one(&self.consumer, tp, true);
            }
        }
    }

    /// Starts backlog records while there is capacity; returns the capacity left.
    fn start_from_backlog(&mut self) -> usize {
        let mut capacity = capacity(&self.shared, self.max);
        while capacity > 0 {
            let Some(f) = self.backlog.pop_front() else {
                break;
            };
            self.dispatch(f);
            capacity = self::capacity(&self.shared, self.max);
        }
        capacity
    }

    /// Shutdown: stop fetching, drain in-flight work within the deadline, then release every
    /// partition and commit.
    fn drain(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.set_paused(true);
        self.backlog.clear();
        self.held.clear();
        let deadline = Instant::now() + self.shared.config.worker.shutdown_timeout;
        info!(
            in_flight = self.shared.tracker().in_flight(),
            "shutting down: draining in-flight jobs"
        );
        loop {
            let in_flight = self.shared.tracker().in_flight();
            telemetry::set_in_flight(in_flight);
            if in_flight == 0 {
                break;
            }
            if Instant::now() >= deadline {
                warn!(in_flight, "shutdown deadline passed; unfinished jobs stay uncommitted and will be redelivered");
                break;
            }
            wait_for_change(&self.shared);
            // Serves rebalances and statistics; partitions stay paused, nothing is admitted.
            let _ = self.poll_one(Duration::ZERO);
        }
        // Removing the partitions cancels whatever still runs (it publishes nothing) and makes
        // the revoke served by the consumer's close return at once.
        let mut t = self.shared.tracker();
        for tp in t.owned() {
            t.remove(&tp);
        }
        drop(t);
        commit_stored(&self.consumer);
        self.consumer.unsubscribe();
    }

    /// Polls once; a record not held back comes back for the backlog or to start.
    fn fetch(&mut self, wait: Duration) -> Option<Fetched> {
        let f = self.poll_one(wait)?;
        self.hold_if_early(f)
    }

    /// Polls once; a record comes back with its interned topic, its metadata and the epoch of
    /// its partition.
    fn poll_one(&mut self, wait: Duration) -> Option<Fetched> {
        match self.consumer.poll(wait)? {
            Ok(m) => {
                let msg = m.detach();
                let topic = match self.topics.get(msg.topic()) {
                    Some(t) => t.clone(),
                    None => {
                        let t: Arc<str> = Arc::from(msg.topic());
                        self.topics.insert(msg.topic().to_string(), t.clone());
                        t
                    }
                };
                let retry_record = self.shared.retry_topics.contains(&*topic);
                let meta = RecordMeta::read(msg.headers(), retry_record);
                let tp: Tp = (topic, msg.partition());
                let epoch = self.shared.tracker().epoch(&tp);
                Some(Fetched {
                    tp,
                    msg,
                    meta,
                    epoch,
                })
            }
            Err(e) => {
                // Usually a missing topic or a broker hiccup; librdkafka recovers by itself.
                if self
                    .last_poll_error
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    warn!(error = %e, "consumer error");
                    self.last_poll_error = Some(Instant::now());
                }
                None
            }
        }
    }

    /// Holds `f` when it is a retry record not yet due (pausing its partition, so nothing
    /// waits in a job slot and nothing is polled in a busy loop) or when its partition already
    /// holds one; otherwise hands it back for processing.
    fn hold_if_early(&mut self, f: Fetched) -> Option<Fetched> {
        if let Some(h) = self.held.get_mut(&f.tp) {
            h.records.push_back(f);
            return None;
        }
        let due_ms = f.meta.retry_due_ms.unwrap_or(0);
        if due_ms <= crate::util::unix_ms() {
            return Some(f);
        }
        pause_one(&self.consumer, &f.tp, true);
        telemetry::retry_held();
        debug!(topic = %f.tp.0, partition = f.tp.1, offset = f.msg.offset(), due_ms, "retry record held until due");
        self.held.insert(
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
    fn release_due(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let now = crate::util::unix_ms();
        let due: Vec<Tp> = self
            .held
            .iter()
            .filter(|(_, h)| h.due_ms <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            if let Some(h) = self.held.remove(&tp) {
                self.backlog.extend(h.records);
                if !self.paused {
                    pause_one(&self.consumer, &tp, false);
                }
            }
        }
    }

    /// Admits a fetched record: starts it, queues it behind its key, or drops it when its
    /// partition changed hands since it was fetched.
    fn dispatch(&self, f: Fetched) {
        let Fetched {
            tp,
            msg,
            meta,
            epoch,
        } = f;
        let Some(epoch) = epoch else { return };
        let offset = msg.offset();
        let key = msg.key().map(<[u8]>::to_vec);
        let mut t = self.shared.tracker();
        let Some(cancel) = t.cancel_token(&tp) else {
            return;
        };
        let item = Item {
            msg,
            meta,
            epoch,
            cancel,
        };
        match t.admit(&tp, epoch, offset, key.as_deref(), item) {
            Admit::Start(item) => {
                drop(t);
                let job =
                    super::job::run_chain(self.consumer.clone(), self.shared.clone(), tp, item);
                self.rt.spawn(job);
            }
            Admit::Queued => {}
            // Not ours (any more): the partition's owner will consume it again.
            Admit::NotOwned(_) => {
                debug!(topic = %tp.0, partition = tp.1, offset, "record of a partition no longer owned dropped")
            }
            // Already admitted in this assignment: librdkafka can deliver a record again around
            // a pause/resume (seen under load); it is handled once, so skip it.
            Admit::Duplicate(_) => {
                telemetry::redelivery_skipped();
                debug!(topic = %tp.0, partition = tp.1, offset, "record delivered twice in one assignment skipped")
            }
        }
    }

    /// Pauses or resumes the whole assignment; a resume leaves the partitions of held retry
    /// records paused.
    fn set_paused(&mut self, pause: bool) {
        self.paused = pause;
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements() {
            let is_held = self
                .held
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
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            warn!(error = %e, pause, "could not pause/resume partitions");
        }
    }
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

/// Waits up to 100 ms for a job to end (or partitions to change).
fn wait_for_change(shared: &Shared) {
    let t = shared.tracker();
    let _ = shared
        .changed
        .wait_timeout(t, Duration::from_millis(100))
        .unwrap_or_else(|e| e.into_inner());
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
