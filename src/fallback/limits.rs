//! Rate limits per model: requests per minute and tokens per minute as token buckets, and a cap
//! on concurrent requests, so baton stays under a provider's quota instead of collecting 429s.
//!
//! A limit of `n` per minute holds over any minute, not only on average: a bucket bursts at
//! most one second's worth (`n / 60`) and refills at the rest (`n - n / 60` per minute), so
//! no 60-second window ever sees more than `n` requests. Tokens per minute hold the same way
//! for calls smaller than a second's worth of tokens; a larger call waits for a full burst and
//! leaves a debt that later calls wait out, so on average the limit holds but one 60-second
//! window can exceed it by up to one call's size.
//!
//! The limits are the whole consumer group's: each worker enforces the share of them that
//! matches the partitions it owns ([`ModelLimits::set_share`], on every rebalance), so the
//! workers' shares add up to the configured quota with no service to coordinate them.
//!
//! A call takes one request and its estimated tokens (prompt plus reserved output) before it
//! goes out; when the answer reports the real usage the difference is settled, so a bucket may
//! briefly go below zero and later calls wait longer. A call that cannot get capacity within the
//! configured wait does not queue forever: the caller moves to the next candidate.
//!
//! The buckets are pure (the clock, tokio's, is passed in); [`ModelLimits::acquire`] is the
//! async wrapper.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
// Tokio's clock, so tests can pause and advance it.
use tokio::time::Instant;

pub use crate::config::LimitSettings;

/// A token bucket that lets at most `limit` through in any `period`: it holds one second's
/// worth and refills at the rest of the limit over the period.
#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

/// How long a bucket with no capacity at all (a worker owning no partition) makes a call wait:
/// past any configured wait, so the call moves on.
const NEVER: Duration = Duration::from_secs(24 * 3600);

impl Bucket {
    /// A full bucket for `limit` per `period`.
    pub fn new(limit: f64, period: Duration, now: Instant) -> Self {
        let mut b = Bucket {
            capacity: 0.0,
            per_second: 0.0,
            tokens: 0.0,
            last: now,
        };
        b.set_limit(limit, period);
        b.tokens = b.capacity;
        b
    }

    /// Changes the limit (a new share of the group's); the tokens held shrink to the new
    /// capacity, debt is kept.
    pub fn rescale(&mut self, limit: f64, period: Duration, now: Instant) {
        self.refill(now);
        self.set_limit(limit, period);
        self.tokens = self.tokens.min(self.capacity);
    }

    fn set_limit(&mut self, limit: f64, period: Duration) {
        let secs = period.as_secs_f64().max(1.0);
        self.capacity = limit / secs;
        self.per_second = (limit - self.capacity) / secs;
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_second).min(self.capacity);
        self.last = now;
    }

    /// How long until `n` tokens are available (zero if they are now). A request larger than
    /// the whole bucket waits for a full bucket.
    pub fn wait_for(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        if self.per_second <= 0.0 {
            return NEVER;
        }
        let need = n.min(self.capacity) - self.tokens;
        if need <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(need / self.per_second).min(NEVER)
        }
    }

    /// Takes `n` tokens (may go below zero: the debt delays later takers).
    pub fn take(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens -= n;
    }

    /// Gives back `n` tokens (an estimate that was too high), up to the capacity.
    pub fn give(&mut self, n: f64) {
        self.tokens = (self.tokens + n).min(self.capacity);
    }
}

#[derive(Debug)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// The capacity a call holds; settle it with the call's real usage.
#[derive(Debug)]
pub struct Grant {
    tokens: f64,
    _slot: Option<OwnedSemaphorePermit>,
}

/// Why a call got no capacity in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no capacity within {waited:?} ({limit})")]
pub struct Saturated {
    /// How long it waited.
    pub waited: Duration,
    /// Which limit: `requests_per_minute`, `tokens_per_minute` or `concurrency`.
    pub limit: &'static str,
}

/// One model's limits.
#[derive(Debug)]
pub struct ModelLimits {
    settings: LimitSettings,
    buckets: Mutex<Buckets>,
    slots: Option<std::sync::Arc<Semaphore>>,
    /// Concurrency slots: how many this worker's share allows, and how many permits still
    /// out (held by running calls) must be forgotten when they come back, after a share
    /// went down.
    slot_count: Mutex<SlotCount>,
    limited: bool,
}

#[derive(Debug, Default)]
struct SlotCount {
    target: usize,
    debt: usize,
}

impl ModelLimits {
    /// Limits as configured (none: everything passes at once).
    pub fn new(s: LimitSettings) -> Self {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        ModelLimits {
            settings: s,
            slot_count: Mutex::new(SlotCount {
                target: s.concurrency.unwrap_or(0) as usize,
                debt: 0,
            }),
            limited: s != LimitSettings::default(),
            buckets: Mutex::new(Buckets {
                requests: s
                    .requests_per_minute
                    .map(|r| Bucket::new(f64::from(r), minute, now)),
                tokens: s
                    .tokens_per_minute
                    .map(|t| Bucket::new(f64::from(t), minute, now)),
            }),
            slots: s
                .concurrency
                .map(|c| std::sync::Arc::new(Semaphore::new(c as usize))),
        }
    }

    /// Sets this worker's share of the group's limits (the fraction of the group's partitions
    /// it owns): the buckets scale to it, and the concurrency cap to its share rounded down
    /// (at least one slot while it owns anything, so the group's total can exceed the cap only
    /// when there are more workers than slots).
    pub fn set_share(&self, share: f64) {
        let share = share.clamp(0.0, 1.0);
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        {
            let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(bucket), Some(r)) =
                (b.requests.as_mut(), self.settings.requests_per_minute)
            {
                bucket.rescale(f64::from(r) * share, minute, now);
            }
            if let (Some(bucket), Some(t)) = (b.tokens.as_mut(), self.settings.tokens_per_minute) {
                bucket.rescale(f64::from(t) * share, minute, now);
            }
        }
        let (Some(slots), Some(c)) = (&self.slots, self.settings.concurrency) else {
            return;
        };
        let target = if share > 0.0 {
            ((f64::from(c) * share + 1e-9).floor() as usize).max(1)
        } else {
            0
        };
        let mut count = self.slot_count.lock().unwrap_or_else(|e| e.into_inner());
        if target > count.target {
            let mut more = target - count.target;
            let repaid = more.min(count.debt);
            count.debt -= repaid;
            more -= repaid;
            slots.add_permits(more);
        } else {
            let fewer = count.target - target;
            let forgotten = slots.forget_permits(fewer);
            count.debt += fewer - forgotten;
        }
        count.target = target;
    }

    /// Whether a permit just acquired must be forgotten to pay a share's decrease.
    fn repay(&self) -> bool {
        let mut count = self.slot_count.lock().unwrap_or_else(|e| e.into_inner());
        if count.debt > 0 {
            count.debt -= 1;
            true
        } else {
            false
        }
    }

    /// Whether any limit is configured.
    pub fn is_limited(&self) -> bool {
        self.limited
    }

    /// Waits (at most `max_wait`) for one request and `tokens` tokens, and a concurrency slot.
    pub async fn acquire(&self, tokens: u64, max_wait: Duration) -> Result<Grant, Saturated> {
        let started = Instant::now();
        let deadline = started + max_wait;
        let slot = match &self.slots {
            None => None,
            Some(s) => {
                let permit = loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, s.clone().acquire_owned()).await {
                        Ok(Ok(p)) if self.repay() => p.forget(),
                        Ok(Ok(p)) => break Some(p),
                        _ => break None,
                    }
                };
                if permit.is_none() {
                    return Err(Saturated {
                        waited: started.elapsed(),
                        limit: "concurrency",
                    });
                }
                permit
            }
        };
        let n = tokens as f64;
        loop {
            let now = Instant::now();
            let (wait, limit) = {
                let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
                let r = b
                    .requests
                    .as_mut()
                    .map_or(Duration::ZERO, |r| r.wait_for(1.0, now));
                let t = b
                    .tokens
                    .as_mut()
                    .map_or(Duration::ZERO, |t| t.wait_for(n, now));
                if r.is_zero() && t.is_zero() {
                    if let Some(r) = b.requests.as_mut() {
                        r.take(1.0, now);
                    }
                    if let Some(t) = b.tokens.as_mut() {
                        t.take(n, now);
                    }
                    return Ok(Grant {
                        tokens: n,
                        _slot: slot,
                    });
                }
                if r >= t {
                    (r, "requests_per_minute")
                } else {
                    (t, "tokens_per_minute")
                }
            };
            if now + wait > deadline {
                return Err(Saturated {
                    waited: started.elapsed(),
                    limit,
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Settles a grant with the tokens the call really used (none for a failed call).
    pub fn settle(&self, grant: Grant, used: u64) {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = b.tokens.as_mut() {
            let diff = grant.tokens - used as f64;
            if diff > 0.0 {
                t.give(diff);
            } else {
                t.take(-diff, Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Greedy takers on `buckets` for `secs`, one try every 10 ms: the times of the grants.
    fn greedy(buckets: &mut [Bucket], t0: Instant, secs: u64) -> Vec<Duration> {
        let mut grants = Vec::new();
        for step in 0..secs * 100 {
            let now = t0 + Duration::from_millis(step * 10);
            for b in buckets.iter_mut() {
                while b.wait_for(1.0, now).is_zero() {
                    b.take(1.0, now);
                    grants.push(now - t0);
                }
            }
        }
        grants
    }

    fn busiest_minute(grants: &[Duration]) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..grants.len() {
            while grants[end] - grants[start] >= Duration::from_secs(60) {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[test]
    fn a_limit_holds_over_any_minute_and_is_used() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let grants = greedy(&mut [Bucket::new(600.0, minute, t0)], t0, 180);
        assert!(
            busiest_minute(&grants) <= 600,
            "{}",
            busiest_minute(&grants)
        );
        // One second's burst, then 590 a minute: 98% of the quota.
        assert!(grants.len() >= 1_775, "{}", grants.len());
        assert_eq!(grants.iter().filter(|t| t.is_zero()).count(), 10);
    }

    #[test]
    fn shares_add_up_to_the_quota_and_follow_a_rebalance() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        // A worker starts with nothing (share 0 until its first assignment), so a new member
        // brings no burst of its own.
        let joining = |t| {
            let mut b = Bucket::new(600.0, minute, t);
            b.rescale(0.0, minute, t);
            b
        };
        // One worker alone, then three with a third each, then two with a half each.
        let mut alone = [joining(t0)];
        alone[0].rescale(600.0, minute, t0);
        let mut grants = greedy(&mut alone, t0, 30);
        let t1 = t0 + Duration::from_secs(30);
        let mut three = [alone[0].clone(), joining(t1), joining(t1)];
        for b in three.iter_mut() {
            b.rescale(200.0, minute, t1);
        }
        grants.extend(
            greedy(&mut three, t1, 90)
                .iter()
                .map(|d| *d + Duration::from_secs(30)),
        );
        let t2 = t1 + Duration::from_secs(90);
        let mut two = [three[0].clone(), three[1].clone()];
        for b in two.iter_mut() {
            b.rescale(300.0, minute, t2);
        }
        grants.extend(
            greedy(&mut two, t2, 90)
                .iter()
                .map(|d| *d + Duration::from_secs(120)),
        );
        assert!(
            busiest_minute(&grants) <= 600,
            "{}",
            busiest_minute(&grants)
        );
        assert!(
            grants.len() >= 2_040,
            "the quota was used: {}",
            grants.len()
        );
        // A worker that owns nothing calls nothing.
        let mut none = Bucket::new(600.0, minute, t0);
        none.rescale(0.0, minute, t0);
        assert!(none.wait_for(1.0, t0 + minute) > Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_capacity_within_the_bound() {
        let l = ModelLimits::new(LimitSettings {
            requests_per_minute: Some(60),
            ..LimitSettings::default()
        });
        // One second's worth at once.
        l.acquire(0, Duration::ZERO).await.unwrap();
        // The next waits about a second for a refill, within a 2 s bound...
        let started = tokio::time::Instant::now();
        l.acquire(0, Duration::from_secs(2)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(900));
        // ...and with no wait allowed it is refused, naming the limit.
        let e = l.acquire(0, Duration::ZERO).await.unwrap_err();
        assert_eq!(e.limit, "requests_per_minute");
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_cap_follows_the_share() {
        let l = ModelLimits::new(LimitSettings {
            concurrency: Some(6),
            ..LimitSettings::default()
        });
        l.set_share(1.0 / 3.0);
        let a = l.acquire(0, Duration::ZERO).await.unwrap();
        let b = l.acquire(0, Duration::ZERO).await.unwrap();
        assert!(l.acquire(0, Duration::from_millis(10)).await.is_err());
        // Down to one slot while two are out: the first one back is not handed out again.
        l.set_share(1.0 / 6.0);
        l.settle(a, 0);
        assert!(l.acquire(0, Duration::from_millis(10)).await.is_err());
        l.settle(b, 0);
        let c = l.acquire(0, Duration::ZERO).await.unwrap();
        assert!(l.acquire(0, Duration::from_millis(10)).await.is_err());
        // The whole group's cap once it owns everything.
        l.set_share(1.0);
        let more: Vec<_> =
            futures::future::join_all((0..5).map(|_| l.acquire(0, Duration::ZERO))).await;
        assert!(more.iter().all(Result::is_ok));
        assert!(l.acquire(0, Duration::from_millis(10)).await.is_err());
        drop(c);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_settled_with_real_usage() {
        let l = ModelLimits::new(LimitSettings {
            tokens_per_minute: Some(6000),
            ..LimitSettings::default()
        });
        // The estimate takes the whole burst (100) and more; the call used only 10.
        let g = l.acquire(1000, Duration::ZERO).await.unwrap();
        assert!(l.acquire(10, Duration::ZERO).await.is_err());
        l.settle(g, 10);
        l.acquire(80, Duration::ZERO).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_capped() {
        let l = ModelLimits::new(LimitSettings {
            concurrency: Some(2),
            ..LimitSettings::default()
        });
        let a = l.acquire(0, Duration::ZERO).await.unwrap();
        let _b = l.acquire(0, Duration::ZERO).await.unwrap();
        let e = l.acquire(0, Duration::from_millis(100)).await.unwrap_err();
        assert_eq!(e.limit, "concurrency");
        l.settle(a, 0);
        l.acquire(0, Duration::ZERO).await.unwrap();
    }
}
