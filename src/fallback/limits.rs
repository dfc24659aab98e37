//! Rate limits per model: requests per minute and tokens per minute as token buckets, and a cap
//! on concurrent requests, so baton stays under a provider's quota instead of collecting 429s.
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

/// A token bucket: `capacity` tokens, refilled continuously at `capacity` per `period`.
#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket of `capacity` refilled over `period`.
    pub fn new(capacity: f64, period: Duration, now: Instant) -> Self {
        Bucket {
            capacity,
            per_second: capacity / period.as_secs_f64(),
            tokens: capacity,
            last: now,
        }
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
        let need = n.min(self.capacity) - self.tokens;
        if need <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(need / self.per_second)
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
    buckets: Mutex<Buckets>,
    slots: Option<std::sync::Arc<Semaphore>>,
    limited: bool,
}

impl ModelLimits {
    /// Limits as configured (none: everything passes at once).
    pub fn new(s: LimitSettings) -> Self {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        ModelLimits {
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
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, s.clone().acquire_owned()).await {
                    Ok(Ok(p)) => Some(p),
                    _ => {
                        return Err(Saturated {
                            waited: started.elapsed(),
                            limit: "concurrency",
                        })
                    }
                }
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

    #[test]
    fn a_bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(60.0, Duration::from_secs(60), t0);
        assert_eq!(b.wait_for(60.0, t0), Duration::ZERO);
        b.take(60.0, t0);
        // One token per second.
        assert_eq!(b.wait_for(1.0, t0), Duration::from_secs(1));
        assert_eq!(b.wait_for(1.0, t0 + Duration::from_secs(1)), Duration::ZERO);
        // Debt delays later takers; giving back shortens the wait.
        b.take(10.0, t0 + Duration::from_secs(1));
        assert_eq!(
            b.wait_for(1.0, t0 + Duration::from_secs(1)),
            Duration::from_secs(10)
        );
        b.give(5.0);
        assert_eq!(
            b.wait_for(1.0, t0 + Duration::from_secs(1)),
            Duration::from_secs(5)
        );
        // More than the whole bucket waits for a full one, not forever.
        let mut b = Bucket::new(60.0, Duration::from_secs(60), t0);
        assert_eq!(b.wait_for(1000.0, t0), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_capacity_within_the_bound() {
        let l = ModelLimits::new(LimitSettings {
            requests_per_minute: Some(60),
            ..LimitSettings::default()
        });
        // A full bucket: 60 at once.
        for _ in 0..60 {
            l.acquire(0, Duration::ZERO).await.unwrap();
        }
        // The 61st waits a second for a refill, within a 2 s bound...
        let started = tokio::time::Instant::now();
        l.acquire(0, Duration::from_secs(2)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(900));
        // ...and with no wait allowed it is refused, naming the limit.
        let e = l.acquire(0, Duration::ZERO).await.unwrap_err();
        assert_eq!(e.limit, "requests_per_minute");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_settled_with_real_usage() {
        let l = ModelLimits::new(LimitSettings {
            tokens_per_minute: Some(6000),
            ..LimitSettings::default()
        });
        // The estimate takes the whole minute's budget; the call used only 1,000.
        let g = l.acquire(6000, Duration::ZERO).await.unwrap();
        assert!(l.acquire(1000, Duration::ZERO).await.is_err());
        l.settle(g, 1000);
        l.acquire(5000, Duration::ZERO).await.unwrap();
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
