//! The completion tracker: which records of each owned partition are finished, which keys are
//! busy, and the offset that may be committed.
//!
//! Guarantees (each unit-tested below):
//! - The commit position of a partition only moves to `o + 1` once every admitted record at or
//!   below `o` is finished: out-of-order completion never skips unfinished work.
//! - Records with the same key on the same partition run one at a time, in offset order; the
//!   next one is handed out only when the previous one finishes.
//! - A partition that is revoked and re-assigned starts a new epoch; anything finishing from an
//!   old epoch moves no offset, and removing a partition cancels its epoch's token so work
//!   still running for it stops before publishing.
//! - A job that is released (abandoned) instead of finished frees its slot and its key but
//!   leaves its offset unfinished, so it is consumed again.
//!
//! Pure data: no Kafka, no I/O. The worker wraps it in a mutex.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// A topic-partition.
pub type Tp = (Arc<str>, i32);

/// A record key on a partition: the unit of ordering.
type KeyId = (Tp, Box<[u8]>);

/// What [`Tracker::admit`] decided.
#[derive(Debug, PartialEq)]
pub enum Admit<J> {
    /// Start the job now.
    Start(J),
    /// Its key is busy: the job waits and comes back from [`Tracker::finish`].
    Queued,
    /// The partition is not owned (or is being revoked): drop the job unprocessed.
    NotOwned(J),
    /// This epoch already admitted this offset (a re-delivery): drop it, it is handled.
    Duplicate(J),
}

/// What [`Tracker::finish`] decided.
#[derive(Debug, PartialEq)]
pub struct Finished<J> {
    /// The new commit position (next offset to consume), when it moved.
    pub commit: Option<i64>,
    /// The next job with the same key, to run now.
    pub next: Option<J>,
    /// Queued jobs of a stale epoch, to drop.
    pub dropped: Vec<J>,
}

struct Partition {
    epoch: u64,
    revoking: bool,
    /// Admitted offsets in order, with their finished flag and record timestamp.
    offsets: VecDeque<Admitted>,
    /// Jobs started and not finished.
    running: usize,
    /// One past the highest offset admitted in this epoch.
    next_offset: i64,
    /// Cancelled when the partition is removed.
    cancel: CancellationToken,
}

/// An admitted record's place in its partition.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    offset: i64,
    done: bool,
    /// The record's timestamp (ms since the epoch).
    ts_ms: i64,
}

struct Waiting<J> {
    epoch: u64,
    job: J,
}

/// Per-partition completion tracking and per-key ordering.
pub struct Tracker<J> {
    partitions: HashMap<Tp, Partition>,
    /// A key is present while a job with it runs; its queue holds the jobs waiting behind it.
    keys: HashMap<KeyId, VecDeque<Waiting<J>>>,
    next_epoch: u64,
    running: usize,
    waiting: usize,
}

impl<J> Default for Tracker<J> {
    fn default() -> Self {
        Tracker {
            partitions: HashMap::new(),
            keys: HashMap::new(),
            next_epoch: 1,
            running: 0,
            waiting: 0,
        }
    }
}

impl<J> Tracker<J> {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes ownership of a partition with a fresh epoch, which it returns.
    pub fn assign(&mut self, tp: Tp) -> u64 {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let partition = Partition {
            epoch,
            revoking: false,
            offsets: VecDeque::new(),
            running: 0,
            next_offset: i64::MIN,
            cancel: CancellationToken::new(),
        };
        if let Some(old) = self.partitions.insert(tp, partition) {
            old.cancel.cancel();
        }
        epoch
    }

    /// The current epoch of an owned, not revoking, partition.
    pub fn epoch(&self, tp: &Tp) -> Option<u64> {
        self.partitions
            .get(tp)
            .filter(|p| !p.revoking)
            .map(|p| p.epoch)
    }

    /// The token cancelled when the current epoch of `tp` ends.
    pub fn cancel_token(&self, tp: &Tp) -> Option<CancellationToken> {
        self.partitions.get(tp).map(|p| p.cancel.clone())
    }

    /// Admits a consumed record written at `ts_ms`. `epoch` is the one read when the record
    /// was polled.
    pub fn admit(
        &mut self,
        tp: &Tp,
        (epoch, ts_ms): (u64, i64),
        offset: i64,
        key: Option<&[u8]>,
        job: J,
    ) -> Admit<J> {
        let Some(p) = self.partitions.get_mut(tp) else {
            return Admit::NotOwned(job);
        };
        if p.revoking || p.epoch != epoch {
            return Admit::NotOwned(job);
        }
        // Offsets only move forward within an epoch; one already admitted (finished or not)
        // must not run twice, even when its entry has left the deque.
        if offset < p.next_offset {
            return Admit::Duplicate(job);
        }
        p.next_offset = offset + 1;
        p.offsets.push_back(Admitted {
            offset,
            done: false,
            ts_ms,
        });
        if let Some(k) = key {
            let entry = (tp.clone(), Box::<[u8]>::from(k));
            if let Some(queue) = self.keys.get_mut(&entry) {
                queue.push_back(Waiting { epoch, job });
                self.waiting += 1;
                return Admit::Queued;
            }
            self.keys.insert(entry, VecDeque::new());
        }
        p.running += 1;
        self.running += 1;
        Admit::Start(job)
    }

    /// Marks a started job finished (its output acknowledged), returning the new commit
    /// position, if it moved, and the next job with the same key, if one waits.
    pub fn finish(&mut self, tp: &Tp, epoch: u64, offset: i64, key: Option<&[u8]>) -> Finished<J> {
        self.complete(tp, epoch, offset, key, true)
    }

    /// Ends a started job without output (abandoned at a deadline): its slot and key are
    /// freed, its offset stays unfinished so the record is consumed again.
    pub fn release(&mut self, tp: &Tp, epoch: u64, offset: i64, key: Option<&[u8]>) -> Finished<J> {
        self.complete(tp, epoch, offset, key, false)
    }

    fn complete(
        &mut self,
        tp: &Tp,
        epoch: u64,
        offset: i64,
        key: Option<&[u8]>,
        done: bool,
    ) -> Finished<J> {
        let mut out = Finished {
            commit: None,
            next: None,
            dropped: Vec::new(),
        };
        self.running = self.running.saturating_sub(1);
        if let Some(p) = self.partitions.get_mut(tp).filter(|p| p.epoch == epoch) {
            p.running = p.running.saturating_sub(1);
            if done {
                if let Ok(i) = p.offsets.binary_search_by_key(&offset, |a| a.offset) {
                    p.offsets[i].done = true;
                }
                let mut last_done = None;
                while let Some(a) = p.offsets.front().filter(|a| a.done) {
                    last_done = Some(a.offset);
                    p.offsets.pop_front();
                }
                out.commit = last_done.map(|o| o + 1);
            }
        }
        let Some(k) = key else { return out };
        let entry = (tp.clone(), Box::<[u8]>::from(k));
        let Some(queue) = self.keys.get_mut(&entry) else {
            return out;
        };
        // A released job's successors must not overtake it: they are dropped with it (their
        // offsets stay unfinished too) unless the partition has moved on to a new epoch.
        let live = self
            .partitions
            .get(tp)
            .filter(|p| !p.revoking)
            .map(|p| p.epoch);
        while let Some(w) = queue.pop_front() {
            if Some(w.epoch) == live && (done || w.epoch != epoch) {
                out.next = Some(w.job);
                break;
            }
            self.waiting = self.waiting.saturating_sub(1);
            out.dropped.push(w.job);
        }
        match out.next {
            Some(_) => {
                self.waiting = self.waiting.saturating_sub(1);
                self.running += 1;
                if let Some(p) = self.partitions.get_mut(tp) {
                    p.running += 1;
                }
            }
            None => {
                self.keys.remove(&entry);
            }
        }
        out
    }

    /// Starts revoking a partition: no new admissions; queued jobs are returned to be dropped
    /// (they were never started, so their offsets stay uncommitted).
    pub fn begin_revoke(&mut self, tp: &Tp) -> Vec<J> {
        let Some(p) = self.partitions.get_mut(tp) else {
            return Vec::new();
        };
        p.revoking = true;
        let mut dropped = Vec::new();
        for ((ktp, _), queue) in self.keys.iter_mut() {
            if ktp == tp {
                dropped.extend(queue.drain(..).map(|w| w.job));
            }
        }
        self.waiting = self.waiting.saturating_sub(dropped.len());
        dropped
    }

    /// Jobs of `tp` started and not yet finished.
    pub fn running(&self, tp: &Tp) -> usize {
        self.partitions.get(tp).map_or(0, |p| p.running)
    }

    /// Forgets a partition and cancels its epoch: work still running for it stops before
    /// publishing, and later completions move no offset.
    pub fn remove(&mut self, tp: &Tp) {
        if let Some(p) = self.partitions.remove(tp) {
            p.cancel.cancel();
        }
    }

    /// Jobs started and not finished or released, across partitions.
    pub fn running_total(&self) -> usize {
        self.running
    }

    /// Jobs waiting behind a busy key.
    pub fn waiting_total(&self) -> usize {
        self.waiting
    }

    /// How many more jobs may start: running jobs are capped at `max`, and so are jobs waiting
    /// behind a busy key (one hot key must not take every slot from the other keys).
    pub fn free(&self, max: usize) -> usize {
        if self.waiting >= max {
            0
        } else {
            max.saturating_sub(self.running)
        }
    }

    /// Jobs admitted and not yet ended: running plus waiting.
    pub fn in_flight(&self) -> usize {
        self.running + self.waiting
    }

    /// The timestamp of the oldest admitted, unfinished record of `tp`: the head of line that
    /// holds its commit position back.
    pub fn oldest_unfinished(&self, tp: &Tp) -> Option<i64> {
        self.partitions
            .get(tp)
            .and_then(|p| p.offsets.front())
            .map(|a| a.ts_ms)
    }

    /// Owned partitions.
    pub fn owned(&self) -> Vec<Tp> {
        self.partitions.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        (Arc::from("t"), p)
    }

    #[test]
    fn commit_waits_for_the_lowest_unfinished_offset() {
        let mut t = Tracker::new();
        let e = t.assign(tp(0));
        for o in 10..15 {
            assert_eq!(t.admit(&tp(0), (e, 0), o, None, o), Admit::Start(o));
        }
        assert_eq!(t.finish(&tp(0), e, 12, None).commit, None);
        assert_eq!(t.finish(&tp(0), e, 14, None).commit, None);
        assert_eq!(t.finish(&tp(0), e, 10, None).commit, Some(11));
        assert_eq!(t.finish(&tp(0), e, 11, None).commit, Some(13));
        assert_eq!(t.finish(&tp(0), e, 13, None).commit, Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn same_key_runs_in_order_one_at_a_time() {
        let mut t = Tracker::new();
        let e = t.assign(tp(0));
        assert_eq!(
            t.admit(&tp(0), (e, 0), 1, Some(b"k"), "a"),
            Admit::Start("a")
        );
        assert_eq!(t.admit(&tp(0), (e, 0), 2, Some(b"k"), "b"), Admit::Queued);
        assert_eq!(
            t.admit(&tp(0), (e, 0), 3, Some(b"other"), "x"),
            Admit::Start("x")
        );
        assert_eq!(t.admit(&tp(0), (e, 0), 4, Some(b"k"), "c"), Admit::Queued);
        assert_eq!(t.in_flight(), 4);
        let f = t.finish(&tp(0), e, 1, Some(b"k"));
        assert_eq!((f.commit, f.next), (Some(2), Some("b")));
        let f = t.finish(&tp(0), e, 2, Some(b"k"));
        assert_eq!((f.commit, f.next), (Some(3), Some("c")));
        let f = t.finish(&tp(0), e, 4, Some(b"k"));
        assert_eq!((f.commit, f.next), (None, None));
        let f = t.finish(&tp(0), e, 3, Some(b"other"));
        assert_eq!(f.commit, Some(5));
        // The key is free again.
        assert_eq!(
            t.admit(&tp(0), (e, 0), 5, Some(b"k"), "d"),
            Admit::Start("d")
        );
    }

    #[test]
    fn revoked_partitions_admit_nothing_and_drop_waiting_jobs() {
        let mut t = Tracker::new();
        let e = t.assign(tp(0));
        t.admit(&tp(0), (e, 0), 1, Some(b"k"), 1);
        t.admit(&tp(0), (e, 0), 2, Some(b"k"), 2);
        assert_eq!(t.begin_revoke(&tp(0)), vec![2]);
        assert_eq!(t.admit(&tp(0), (e, 0), 3, None, 3), Admit::NotOwned(3));
        assert_eq!(t.running(&tp(0)), 1);
        let f = t.finish(&tp(0), e, 1, Some(b"k"));
        assert_eq!((f.commit, f.next), (Some(2), None));
        assert_eq!(t.running(&tp(0)), 0);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn an_old_epoch_moves_no_offset_after_reassignment() {
        let mut t = Tracker::new();
        let old = t.assign(tp(0));
        t.admit(&tp(0), (old, 0), 5, None, ());
        t.begin_revoke(&tp(0));
        t.remove(&tp(0));
        let new = t.assign(tp(0));
        assert_ne!(old, new);
        assert_eq!(t.admit(&tp(0), (old, 0), 6, None, ()), Admit::NotOwned(()));
        t.admit(&tp(0), (new, 0), 5, None, ());
        assert_eq!(t.finish(&tp(0), old, 5, None).commit, None);
        assert_eq!(t.finish(&tp(0), new, 5, None).commit, Some(6));
    }

    #[test]
    fn stale_waiting_jobs_are_dropped_when_their_key_frees() {
        let mut t = Tracker::new();
        let old = t.assign(tp(0));
        t.admit(&tp(0), (old, 0), 1, Some(b"k"), "a");
        t.remove(&tp(0));
        let new = t.assign(tp(0));
        // Re-delivered record with the same key waits behind the old running job.
        assert_eq!(
            t.admit(&tp(0), (new, 0), 1, Some(b"k"), "a2"),
            Admit::Queued
        );
        let f = t.finish(&tp(0), old, 1, Some(b"k"));
        assert_eq!(f.commit, None);
        assert_eq!(f.next, Some("a2"));
        assert_eq!(t.finish(&tp(0), new, 1, Some(b"k")).commit, Some(2));
    }

    #[test]
    fn offsets_going_backwards_are_refused_even_after_they_finished() {
        let mut t = Tracker::new();
        let e = t.assign(tp(0));
        t.admit(&tp(0), (e, 0), 7, None, ());
        assert_eq!(t.admit(&tp(0), (e, 0), 7, None, ()), Admit::Duplicate(()));
        assert_eq!(t.admit(&tp(0), (e, 0), 3, None, ()), Admit::Duplicate(()));
        assert_eq!(t.finish(&tp(0), e, 7, None).commit, Some(8));
        // The deque is empty now; a re-delivered 7 is still a duplicate.
        assert_eq!(t.admit(&tp(0), (e, 0), 7, None, ()), Admit::Duplicate(()));
        assert_eq!(t.admit(&tp(0), (e, 0), 8, None, ()), Admit::Start(()));
    }

    #[test]
    fn released_jobs_free_their_slot_but_not_their_offset() {
        let mut t = Tracker::new();
        let e = t.assign(tp(0));
        t.admit(&tp(0), (e, 0), 1, Some(b"k"), "a");
        t.admit(&tp(0), (e, 0), 2, Some(b"k"), "b");
        t.admit(&tp(0), (e, 0), 3, None, "x");
        assert_eq!((t.running_total(), t.waiting_total()), (2, 1));
        // "a" is abandoned: "b" must not overtake it, so it is dropped too.
        let f = t.release(&tp(0), e, 1, Some(b"k"));
        assert_eq!((f.commit, f.next, f.dropped), (None, None, vec!["b"]));
        assert_eq!(
            t.finish(&tp(0), e, 3, None).commit,
            None,
            "offset 1 still unfinished"
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn removing_a_partition_cancels_its_epoch() {
        let mut t: Tracker<()> = Tracker::new();
        t.assign(tp(0));
        let token = t.cancel_token(&tp(0)).unwrap();
        assert!(!token.is_cancelled());
        t.remove(&tp(0));
        assert!(token.is_cancelled());
        t.assign(tp(1));
        let token = t.cancel_token(&tp(1)).unwrap();
        t.assign(tp(1));
        assert!(
            token.is_cancelled(),
            "a re-assignment ends the previous epoch too"
        );
    }

    #[test]
    fn the_head_of_line_is_the_oldest_unfinished_record() {
        let mut t = Tracker::new();
        let e = t.assign(tp(0));
        assert_eq!(t.oldest_unfinished(&tp(0)), None);
        t.admit(&tp(0), (e, 100), 1, None, ());
        t.admit(&tp(0), (e, 200), 2, None, ());
        t.finish(&tp(0), e, 2, None);
        // Offset 1 still holds the commit back, however old the later finished ones are.
        assert_eq!(t.oldest_unfinished(&tp(0)), Some(100));
        t.finish(&tp(0), e, 1, None);
        assert_eq!(t.oldest_unfinished(&tp(0)), None);
    }
}
