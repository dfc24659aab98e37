//! The consumer's context: rebalance handling (a newly assigned partition gets a queue of its
//! own before it is fetched; a revoked partition drains within `worker.rebalance_timeout`, then
//! is forgotten and its stored offsets committed; a new assignment starts fresh epochs,
//! unpaused) and librdkafka statistics and commit callbacks (each owned partition's offsets,
//! for the lag gauges).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use tracing::{info, warn};

use crate::telemetry;

use super::tracker::Tp;
use super::{Shared, WorkerConsumer};

/// The consumer's context: rebalance handling and librdkafka statistics.
pub(super) struct WorkerContext {
    pub(super) shared: Arc<Shared>,
    /// The consumer this context serves (set once it exists): partition queues are split
    /// from it.
    pub(super) consumer: OnceLock<Weak<WorkerConsumer>>,
}

impl WorkerContext {
    /// Gives each partition about to be assigned a queue of its own, before anything of it is
    /// fetched (librdkafka keeps an application's split across fetch stops and starts), so the
    /// poll thread can take records from the partitions in turn instead of in fetch order.
    fn split_queues(&self, tps: &[Tp]) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut queues = self.shared.queues();
        for tp in tps {
            let Some(mut q) = consumer.split_partition_queue(&tp.0, tp.1) else {
                warn!(topic = %tp.0, partition = tp.1, "no queue of its own for a partition; its records come through the main queue");
                continue;
            };
            let shared = Arc::downgrade(&self.shared);
            q.set_nonempty_callback(move || {
                if let Some(s) = shared.upgrade() {
                    s.wake();
                }
            });
            queues.insert(tp.clone(), Arc::new(q));
        }
    }
}

impl WorkerContext {
    /// Sets this worker's share of the models' rate limits: the partitions it owns over all
    /// the partitions of the topics it subscribes to (counted again from the cluster's
    /// metadata when `consumer` is given, after an assignment, so added partitions count).
    fn update_share(&self, consumer: Option<&BaseConsumer<Self>>) {
        if let Some(total) = consumer.and_then(|c| self.count_partitions(c)) {
            self.shared.group_partitions.store(total, Ordering::Relaxed);
        }
        let total = self.shared.group_partitions.load(Ordering::Relaxed);
        let owned = self.shared.positions().len();
        let share = if total == 0 {
            0.0
        } else {
            (owned as f64 / total as f64).min(1.0)
        };
        self.shared.runner.set_group_share(share);
        telemetry::set_rate_limit_share(share);
        info!(owned, total, share, "rate-limit share of the group");
    }

    /// Partitions of the subscribed topics, from the cluster's metadata.
    fn count_partitions(&self, consumer: &BaseConsumer<Self>) -> Option<usize> {
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|e| warn!(error = %e, "no metadata to count the group's partitions"))
            .ok()?;
        // Every subscribed topic must be seen: a missing one would shrink the denominator
        // and raise this worker's share above its due.
        self.shared
            .config
            .input_topics()
            .iter()
            .map(|n| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == n)
                    .map(|t| t.partitions().len())
                    .filter(|&p| p > 0)
            })
            .sum()
    }
}

impl ClientContext for WorkerContext {
    /// Log start and end offsets, and the committed offset, of each owned partition, for the
    /// lag gauges (`statistics.interval.ms`, 5 s by default).
    fn stats(&self, stats: Statistics) {
        let mut positions = self.shared.positions();
        for (topic, t) in &stats.topics {
            let topic: Arc<str> = Arc::from(topic.as_str());
            for (partition, s) in &t.partitions {
                let Some(p) = positions.get_mut(&(topic.clone(), *partition)) else {
                    continue;
                };
                if s.lo_offset >= 0 {
                    p.log_start = Some(s.lo_offset);
                }
                if s.hi_offset >= 0 {
                    p.log_end = Some(s.hi_offset);
                }
                if s.committed_offset >= 0 {
                    let c = s.committed_offset;
                    p.committed = Some(p.committed.map_or(c, |old| old.max(c)));
                }
            }
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let tpl = match rebalance {
            Rebalance::Revoke(tpl) => tpl,
            Rebalance::Assign(tpl) => return self.split_queues(&tps_of(tpl)),
            Rebalance::Error(_) => return,
        };
        let tps = tps_of(tpl);
        self.shared.memory.invalidate();
        // The partitions' lag is the new owner's to report from now on.
        let mut positions = self.shared.positions();
        for tp in &tps {
            positions.remove(tp);
        }
        drop(positions);
        let lost = consumer.assignment_lost();
        let deadline = Instant::now() + self.shared.config.worker.rebalance_timeout;
        let mut t = self.shared.tracker();
        let dropped: usize = tps.iter().map(|tp| t.begin_revoke(tp).len()).sum();
        // Drain: running jobs of revoked partitions get until the deadline to finish (not when
        // the partitions are already lost: another member may own them by now). Raised under
        // the tracker's lock: a job finishing after the first look notifies.
        self.shared.draining.fetch_add(1, Ordering::SeqCst);
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
        self.shared.draining.fetch_sub(1, Ordering::SeqCst);
        let unfinished: usize = tps.iter().map(|tp| t.running(tp)).sum();
        // Their share of the rate limits goes once their jobs are done: the new owner gets
        // them only after this callback returns, so the group's shares never add up to more
        // than the quota, and the draining jobs keep theirs.
        self.update_share(None);
        for tp in &tps {
            t.remove(tp);
        }
        drop(t);
        let mut queues = self.shared.queues();
        for tp in &tps {
            queues.remove(tp);
        }
        drop(queues);
        self.shared.assignment_changed.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        if !lost {
            commit_stored(consumer);
        }
        info!(
            partitions = tps.len(),
            which = %describe(&tps),
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
                let mut positions = self.shared.positions();
                for tp in &tps {
                    positions.insert(tp.clone(), Default::default());
                }
                drop(positions);
                self.update_share(Some(consumer));
                self.shared.memory.invalidate();
                self.shared.assignment_changed.store(true, Ordering::SeqCst);
                info!(partitions = tps.len(), which = %describe(&tps), "partitions assigned");
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
                self.shared.queues().clear();
                self.shared.positions().clear();
                self.update_share(None);
                self.shared.assignment_changed.store(true, Ordering::SeqCst);
                self.shared.changed.notify_all();
                warn!(error = %e, "rebalance error; all partitions released");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let mut positions = self.shared.positions();
                for e in offsets.elements() {
                    let (Offset::Offset(o), Some(p)) = (
                        e.offset(),
                        positions.get_mut(&(Arc::from(e.topic()), e.partition())),
                    ) else {
                        continue;
                    };
                    p.committed = Some(p.committed.map_or(o, |c| c.max(o)));
                }
            }
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
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

/// `topic[0,3] other[1]`: the partitions of a rebalance, for the log.
fn describe(tps: &[Tp]) -> String {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (topic, p) in tps {
        by_topic.entry(topic).or_default().push(*p);
    }
    let parts: Vec<String> = by_topic
        .into_iter()
        .map(|(topic, mut ps)| {
            ps.sort_unstable();
            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
            format!("{topic}[{}]", ps.join(","))
        })
        .collect();
    parts.join(" ")
}

/// Commits the stored offsets synchronously; "nothing stored" is not an error.
pub(super) fn commit_stored<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => warn!(error = %e, "offset commit failed"),
    }
}
