//! The consumer thread: take records from the assigned partitions in turn while there is
//! capacity, hold retry records until they are due, drain on shutdown.
//!
//! How the slots are shared: each assigned partition has a queue of its own (split from the
//! consumer's queue when it is assigned), and librdkafka prefetches into each up to its share
//! of the byte budget. Whenever slots are free, the thread visits the partitions in rounds
//! (retry tiers first, then the input partitions from where the last round stopped) and takes
//! one record from each per round. A partition with a backlog therefore gets at most its turn,
//! never the whole worker, and a due retry record takes one of the next free slots (on a full
//! worker, finished jobs wake this thread once a batch of slots is free). Nothing is paused
//! for backpressure: a partition whose queue is not read stops being fetched when its
//! prefetch share is full, and a held retry record's partition is simply not read until due.
//! The consumer's own queue is polled every turn for group events (and for any record that
//! arrives there).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::rebalance::commit_stored;
use super::tracker::{Admit, Tp};
use super::{Charge, Item, Queue, Shared, WorkerConsumer, CHARGE_FACTOR};
use crate::kafka::meta::RecordMeta;
use crate::telemetry;

/// A fetched record with its metadata and the partition epoch it was fetched under.
struct Fetched {
    tp: Tp,
    msg: OwnedMessage,
    meta: RecordMeta,
    epoch: Option<u64>,
}

/// A retry record that arrived before it was due; its partition is not read until then.
struct Held {
    due_ms: u64,
    record: Fetched,
}

/// What visiting one partition gave.
enum Visit {
    /// Nothing to take (empty, or held until a retry is due).
    Nothing,
    /// A record was started, queued behind its key, held or dropped.
    Took,
    /// The next record does not fit the byte budget: nothing more starts until a job ends.
    OverBudget,
}

/// The poll thread's state.
pub(super) struct Poller {
    consumer: Arc<WorkerConsumer>,
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
    max: usize,
    /// Owned retry-tier partitions, visited first in every round.
    retry_tps: Vec<Tp>,
    /// Owned input partitions, visited in turn from `cursor`.
    input_tps: Vec<Tp>,
    cursor: usize,
    /// The partitions' own queues (a copy of the shared map, refreshed on assignment changes).
    queues: HashMap<Tp, Arc<Queue>>,
    /// Records that came through the consumer's queue or were put back: a partition's stash
    /// is taken before its queue.
    stash: HashMap<Tp, VecDeque<Fetched>>,
    held: HashMap<Tp, Held>,
    /// Interned topic names.
    topics: HashMap<String, Arc<str>>,
    last_poll_error: Option<Instant>,
    /// When the worker last had a job in flight, and whether memory was given back since.
    busy_at: Instant,
    trimmed: bool,
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
            retry_tps: Vec::new(),
            input_tps: Vec::new(),
            cursor: 0,
            queues: HashMap::new(),
            stash: HashMap::new(),
            held: HashMap::new(),
            topics: HashMap::new(),
            last_poll_error: None,
            busy_at: Instant::now(),
            trimmed: true,
        }
    }

    /// Polls until `shutdown` is cancelled, then drains.
    pub(super) fn run(mut self, shutdown: CancellationToken) {
        self.shared.bell.register();
        while !shutdown.is_cancelled() {
            self.turn();
        }
        self.drain();
    }

    /// One turn: serve group events, follow assignment changes, start what capacity and the
    /// budget allow, and wait when nothing could be done.
    fn turn(&mut self) {
        self.serve_events();
        if self.shared.assignment_changed.swap(false, Ordering::SeqCst) {
            self.after_assignment_change();
        }
        self.release_due();
        if !self.start_records() {
            self.release_memory_when_idle();
            self.shared.bell.wait(self.idle_wait());
        }
    }

    /// Once the worker has had nothing in flight for two seconds, gives the allocators' free
    /// memory back to the system, so a burst of large payloads does not keep its pages.
    fn release_memory_when_idle(&mut self) {
        if self.shared.tracker().in_flight() > 0 {
            self.busy_at = Instant::now();
            self.trimmed = false;
        } else if !self.trimmed && self.busy_at.elapsed() >= Duration::from_secs(2) {
            crate::util::release_free_memory();
            self.trimmed = true;
        }
    }

    /// How long to sleep when idle: until rung, a held retry is due, or 100 ms pass (group
    /// events are served at least that often).
    fn idle_wait(&self) -> Duration {
        let mut wait = Duration::from_millis(100);
        if let Some(due) = self.held.values().map(|h| h.due_ms).min() {
            let until = due.saturating_sub(crate::util::unix_ms());
            wait = wait.min(Duration::from_millis(until.max(1)));
        }
        wait
    }

    /// Polls the consumer's own queue without waiting: rebalances, commits and statistics are
    /// served there; a record that still arrives there goes to its partition's stash.
    fn serve_events(&mut self) {
        let consumer = self.consumer.clone();
        for _ in 0..1024 {
            let Some(polled) = consumer.poll(Duration::ZERO) else {
                return;
            };
            if let Some(f) = self.fetched(polled) {
                self.stash.entry(f.tp.clone()).or_default().push_back(f);
            }
        }
    }

    /// Follows an assignment change: the partitions to visit and their queues are read again,
    /// and records fetched under an ended epoch are dropped (their new owner reads them).
    fn after_assignment_change(&mut self) {
        self.queues = self.shared.queues().clone();
        let t = self.shared.tracker();
        let mut owned = t.owned();
        self.stash.retain(|tp, s| {
            s.retain(|f| f.epoch.is_some() && t.epoch(tp) == f.epoch);
            !s.is_empty()
        });
        self.held
            .retain(|tp, h| h.record.epoch.is_some() && t.epoch(tp) == h.record.epoch);
        drop(t);
        owned.sort();
        let retry = &self.shared.retry_topics;
        (self.retry_tps, self.input_tps) = owned.into_iter().partition(|tp| retry.contains(&*tp.0));
        self.cursor = 0;
    }

    /// Starts records in rounds over the partitions while there is capacity; returns whether
    /// anything was taken (when nothing was, the thread waits: for records, a free slot or
    /// budget).
    fn start_records(&mut self) -> bool {
        let mut took_any = false;
        loop {
            let mut capacity = capacity(&self.shared, self.max);
            if capacity == 0 {
                return took_any;
            }
            let mut took = false;
            for i in 0..self.retry_tps.len() {
                if capacity == 0 {
                    break;
                }
                let tp = self.retry_tps[i].clone();
                match self.visit(&tp) {
                    Visit::Nothing => {}
                    Visit::Took => (took, capacity) = (true, capacity - 1),
                    Visit::OverBudget => return took_any || took,
                }
            }
            let n = self.input_tps.len();
            for i in 0..n {
                if capacity == 0 {
                    break;
                }
                let at = (self.cursor + i) % n;
                let tp = self.input_tps[at].clone();
                match self.visit(&tp) {
                    Visit::Nothing => {}
                    Visit::Took => {
                        (took, capacity) = (true, capacity - 1);
                        self.cursor = (at + 1) % n;
                    }
                    Visit::OverBudget => {
                        self.cursor = at;
                        return took_any || took;
                    }
                }
            }
            if !took {
                return took_any;
            }
            took_any = true;
        }
    }

    /// Takes the next record of `tp`, if any, and starts it (or holds it until due, or puts
    /// it back when it does not fit the budget).
    fn visit(&mut self, tp: &Tp) -> Visit {
        if self.held.contains_key(tp) {
            return Visit::Nothing;
        }
        let next = match self.stash.get_mut(tp).and_then(VecDeque::pop_front) {
            Some(f) => Some(f),
            None => match self.queues.get(tp).cloned() {
                Some(q) => q.poll(Duration::ZERO).and_then(|m| self.fetched(m)),
                None => None,
            },
        };
        let Some(f) = next else {
            return Visit::Nothing;
        };
        let Some(f) = self.hold_if_early(f) else {
            return Visit::Took;
        };
        let charge = self.charge_of(&f.msg);
        let budget = &self.shared.budget;
        let fits = |held: usize| held == 0 || held + charge <= budget.limit;
        if !fits(budget.held.load(Ordering::SeqCst)) {
            // From now on a charge given back rings the bell; one given back before is seen by
            // the second look (both sides store, then load, sequentially consistent).
            budget.blocked.store(true, Ordering::SeqCst);
            if !fits(budget.held.load(Ordering::SeqCst)) {
                self.stash.entry(tp.clone()).or_default().push_front(f);
                return Visit::OverBudget;
            }
        }
        budget.blocked.store(false, Ordering::Relaxed);
        self.dispatch(f, charge);
        Visit::Took
    }

    /// What a record is charged against the budget while its job runs or waits.
    fn charge_of(&self, msg: &OwnedMessage) -> usize {
        let len = msg.payload().map_or(0, <[u8]>::len);
        (len.min(self.shared.config.worker.max_payload_bytes) + 256) * CHARGE_FACTOR
    }

    /// Shutdown: stop fetching, drain in-flight work within the deadline, then release every
    /// partition and commit.
    fn drain(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Ok(assignment) = self.consumer.assignment() {
            // Nothing more is read; stop fetching too.
            let _ = self.consumer.pause(&assignment);
        }
        self.stash.clear();
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
            self.shared.bell.wait(Duration::from_millis(100));
            // Serves rebalances and statistics; nothing is admitted.
            let _ = self.consumer.poll(Duration::ZERO);
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

    /// A polled record with its interned topic, its metadata and the epoch of its partition;
    /// `None` for an error (logged at most every 10 s).
    fn fetched(&mut self, polled: KafkaResult<BorrowedMessage<'_>>) -> Option<Fetched> {
        match polled {
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

    /// Holds `f` when it is a retry record not yet due (its partition is not read until then,
    /// so nothing waits in a job slot); otherwise hands it back.
    fn hold_if_early(&mut self, f: Fetched) -> Option<Fetched> {
        let due_ms = f.meta.retry_due_ms.unwrap_or(0);
        if due_ms <= crate::util::unix_ms() {
            return Some(f);
        }
        telemetry::retry_held();
        debug!(topic = %f.tp.0, partition = f.tp.1, offset = f.msg.offset(), due_ms, "retry record held until due");
        self.held.insert(f.tp.clone(), Held { due_ms, record: f });
        None
    }

    /// Puts held records that are due back in front of their partitions.
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
                self.stash.entry(tp).or_default().push_front(h.record);
            }
        }
    }

    /// Admits a fetched record: starts it, queues it behind its key, or drops it when its
    /// partition changed hands since it was fetched.
    fn dispatch(&self, f: Fetched, charge: usize) {
        let Fetched {
            tp,
            msg,
            meta,
            epoch,
        } = f;
        let Some(epoch) = epoch else { return };
        let offset = msg.offset();
        let key = msg.key().map(<[u8]>::to_vec);
        let ts_ms = msg
            .timestamp()
            .to_millis()
            .unwrap_or_else(|| crate::util::unix_ms() as i64);
        let mut t = self.shared.tracker();
        let Some(cancel) = t.cancel_token(&tp) else {
            return;
        };
        self.shared.budget.held.fetch_add(charge, Ordering::Relaxed);
        let item = Item {
            msg,
            meta,
            epoch,
            cancel,
            _charge: Charge {
                bytes: charge,
                budget: self.shared.budget.clone(),
            },
        };
        match t.admit(&tp, (epoch, ts_ms), offset, key.as_deref(), item) {
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
            // Already admitted in this assignment (a re-delivery): it is handled once.
            Admit::Duplicate(_) => {
                telemetry::redelivery_skipped();
                debug!(topic = %tp.0, partition = tp.1, offset, "record delivered twice in one assignment skipped")
            }
        }
    }
}

/// How many more jobs may start (see `Tracker::free`).
fn capacity(shared: &Shared, max: usize) -> usize {
    let t = shared.tracker();
    telemetry::set_in_flight(t.in_flight());
    t.free(max)
}
