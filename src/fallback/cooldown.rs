//! 429 as a signal to the whole worker: a model that answered "too many requests" cools down
//! for every job of the worker at once, for its Retry-After or, without one, a backoff that
//! grows with each 429 in a row. While it cools, calls skip it (the job moves to the next
//! candidate, or waits in a retry tier); once the time is up one call, the probe, goes out,
//! and its answer ends the cooldown or starts the next, longer one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first cooldown of a 429 without Retry-After; each 429 in a row doubles it.
const BASE: Duration = Duration::from_millis(100);
/// The longest cooldown a 429 without Retry-After brings.
const MAX: Duration = Duration::from_secs(60);

/// Whether a call may go out to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoolAdmission {
    /// Not cooling: call.
    Call,
    /// The cooldown is over: this call is the one probe.
    Probe,
    /// Cooling (or the probe is out) for about this long: skip the model.
    Skip(Duration),
}

#[derive(Debug, Default)]
struct State {
    until: Option<Instant>,
    strikes: u32,
    probe_since: Option<Instant>,
}

/// One cooldown per model (indexed like `Config::models`).
#[derive(Debug)]
pub struct Cooldowns {
    models: Vec<Mutex<State>>,
}

impl Cooldowns {
    /// No model cooling, for `n` models.
    pub fn new(n: usize) -> Self {
        Cooldowns {
            models: (0..n).map(|_| Mutex::new(State::default())).collect(),
        }
    }

    fn state(&self, m: usize) -> Option<std::sync::MutexGuard<'_, State>> {
        self.models
            .get(m)
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether model `m` may be called at `now`; a probe not heard of within `probe_timeout`
    /// is replaced.
    pub fn admit(&self, m: usize, now: Instant, probe_timeout: Duration) -> CoolAdmission {
        let Some(mut s) = self.state(m) else {
            return CoolAdmission::Call;
        };
        let Some(until) = s.until else {
            return CoolAdmission::Call;
        };
        if now < until {
            return CoolAdmission::Skip(until - now);
        }
        match s.probe_since {
            Some(since) if now < since + probe_timeout => {
                CoolAdmission::Skip(since + probe_timeout - now)
            }
            _ => {
                s.probe_since = Some(now);
                CoolAdmission::Probe
            }
        }
    }

    /// How long model `m` still cools at `now`, if it does.
    pub fn remaining(&self, m: usize, now: Instant) -> Option<Duration> {
        let until = self.state(m)?.until?;
        (now < until).then(|| until - now)
    }

    /// Records how a call admitted as `admission` went: `throttled` is `Some(retry_after)`
    /// for a 429. A 429 of a call admitted before the cooldown began extends it but does not
    /// count as another one in a row.
    pub fn record(
        &self,
        m: usize,
        now: Instant,
        admission: CoolAdmission,
        throttled: Option<Option<Duration>>,
    ) {
        let Some(mut s) = self.state(m) else { return };
        match throttled {
            Some(retry_after) => {
                let cooling = s.until.is_some();
                if admission == CoolAdmission::Probe || !cooling {
                    s.strikes = s.strikes.saturating_add(1);
                    s.probe_since = None;
                }
                let backoff = BASE
                    .saturating_mul(1u32 << s.strikes.saturating_sub(1).min(16))
                    .min(MAX);
                let until = now + retry_after.unwrap_or(backoff);
                s.until = Some(s.until.map_or(until, |u| u.max(until)));
            }
            None if admission == CoolAdmission::Probe || s.until.is_none() => {
                *s = State::default();
            }
            // A late answer to a call admitted before the cooldown: the probe decides.
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_cools_the_model_then_one_probe_decides() {
        let c = Cooldowns::new(1);
        let t = Instant::now();
        let probe_timeout = Duration::from_secs(5);
        assert_eq!(c.admit(0, t, probe_timeout), CoolAdmission::Call);
        // Twenty calls went out together; their 429s make one cooldown, not twenty.
        for _ in 0..20 {
            c.record(0, t, CoolAdmission::Call, Some(None));
        }
        assert_eq!(c.remaining(0, t), Some(BASE));
        assert!(matches!(
            c.admit(0, t, probe_timeout),
            CoolAdmission::Skip(_)
        ));
        let later = t + BASE;
        assert_eq!(c.admit(0, later, probe_timeout), CoolAdmission::Probe);
        assert!(
            matches!(c.admit(0, later, probe_timeout), CoolAdmission::Skip(_)),
            "one probe at a time"
        );
        // The probe is throttled too: a longer cooldown.
        c.record(0, later, CoolAdmission::Probe, Some(None));
        assert_eq!(c.remaining(0, later), Some(2 * BASE));
        let again = later + 2 * BASE;
        assert_eq!(c.admit(0, again, probe_timeout), CoolAdmission::Probe);
        c.record(0, again, CoolAdmission::Probe, None);
        assert_eq!(c.admit(0, again, probe_timeout), CoolAdmission::Call);
        // Retry-After sets the cooldown when the provider sends one.
        c.record(
            0,
            again,
            CoolAdmission::Call,
            Some(Some(Duration::from_secs(3))),
        );
        assert_eq!(c.remaining(0, again), Some(Duration::from_secs(3)));
    }
}
