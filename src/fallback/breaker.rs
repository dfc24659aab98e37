//! A circuit breaker per model: stop sending calls to a model that keeps failing, let one probe
//! decide when it may have recovered.
//!
//! Closed (calls flow) → open after `consecutive_failures` failures in a row, or when at least
//! `min_calls` calls within `window` failed at `failure_rate` or more. Open (calls skip the
//! model, so the next candidate serves) for `cooldown`; then half-open: exactly one call is let
//! through as a probe. Its success closes the circuit; its failure opens it for another
//! cooldown. A probe that never reports (its job was cancelled) is replaced after a cooldown.
//!
//! Only the model's own failures count (timeouts, connection errors, 5xx, malformed answers).
//! A request the provider refused for the request's sake (a 400, a content filter, a prompt too
//! long) shows the model is up. Bad credentials trip the circuit at once for longer
//! ([`Breaker::trip`]): the model leaves rotation until someone fixes the key.
//!
//! Pure state with the clock passed in, so tests drive time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::config::BreakerSettings;

/// The state a dashboard shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// One probe call decides.
    HalfOpen,
    /// Calls skip the model.
    Open,
}

impl CircuitState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

/// Whether a call may go to the model now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call it.
    Call,
    /// Call it: this is the probe of a half-open circuit.
    Probe,
    /// Skip it; the circuit is open (or a probe is out) for about this long.
    Skip(Duration),
}

/// How a call went, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The model answered (or refused the request for the request's sake): it is up.
    Healthy,
    /// The model failed (timeout, connection, 5xx, malformed answer).
    Failed,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

/// Calls and failures in one slice of the failure-rate window.
#[derive(Debug, Clone, Copy)]
struct Slice {
    start: Instant,
    calls: u32,
    failures: u32,
}

/// Slices per window: the failure rate is kept per slice, so recording a call costs the same
/// at ten calls a second as at ten thousand.
const SLICES: u32 = 32;

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive: u32,
    recent: VecDeque<Slice>,
    calls: u32,
    failures: u32,
}

impl Inner {
    fn clear_window(&mut self) {
        self.recent.clear();
        self.calls = 0;
        self.failures = 0;
        self.consecutive = 0;
    }
}

/// One model's circuit.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed circuit.
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive: 0,
                recent: VecDeque::new(),
                calls: 0,
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go out at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut s = self.lock();
        match s.phase {
            Phase::Closed => Admission::Call,
            Phase::Open { until } if now < until => Admission::Skip(until - now),
            Phase::Open { .. } => {
                s.phase = Phase::HalfOpen { probe_since: now };
                Admission::Probe
            }
            Phase::HalfOpen { probe_since } => {
                let stale = probe_since + self.settings.cooldown;
                if now >= stale {
                    // The last probe never reported: send another.
                    s.phase = Phase::HalfOpen { probe_since: now };
                    Admission::Probe
                } else {
                    Admission::Skip(stale - now)
                }
            }
        }
    }

    /// Records how a call admitted as `admission` went; returns the state when it changed.
    pub fn record(
        &self,
        now: Instant,
        admission: Admission,
        outcome: CallOutcome,
    ) -> Option<CircuitState> {
        let mut s = self.lock();
        let failed = outcome == CallOutcome::Failed;
        if admission == Admission::Probe || matches!(s.phase, Phase::HalfOpen { .. }) {
            if admission != Admission::Probe {
                // A call admitted before the circuit opened: the probe decides, not it.
                return None;
            }
            s.clear_window();
            s.phase = if failed {
                Phase::Open {
                    until: now + self.settings.cooldown,
                }
            } else {
                Phase::Closed
            };
            return Some(if failed {
                CircuitState::Open
            } else {
                CircuitState::Closed
            });
        }
        if let Phase::Open { .. } = s.phase {
            // Late results of calls admitted while closed change nothing.
            return None;
        }
        let slice = self.settings.window / SLICES;
        match s.recent.back_mut() {
            Some(b) if now.saturating_duration_since(b.start) < slice => {
                b.calls += 1;
                b.failures += u32::from(failed);
            }
            _ => s.recent.push_back(Slice {
                start: now,
                calls: 1,
                failures: u32::from(failed),
            }),
        }
        s.calls += 1;
        s.failures += u32::from(failed);
        while let Some(b) = s.recent.front().copied() {
            if now.saturating_duration_since(b.start) <= self.settings.window {
                break;
            }
            s.recent.pop_front();
            s.calls -= b.calls;
            s.failures -= b.failures;
        }
        s.consecutive = if failed { s.consecutive + 1 } else { 0 };
        let rate_trips = s.calls >= self.settings.min_calls
            && f64::from(s.failures) / f64::from(s.calls) >= self.settings.failure_rate;
        if failed && (s.consecutive >= self.settings.consecutive_failures || rate_trips) {
            s.phase = Phase::Open {
                until: now + self.settings.cooldown,
            };
            s.clear_window();
            return Some(CircuitState::Open);
        }
        None
    }

    /// Opens the circuit now for `duration` (bad credentials take the model out of rotation).
    pub fn trip(&self, now: Instant, duration: Duration) -> CircuitState {
        let mut s = self.lock();
        s.phase = Phase::Open {
            until: now + duration,
        };
        s.clear_window();
        CircuitState::Open
    }

    /// The state at `now` (an open circuit past its cooldown reads half-open: the next call
    /// probes).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.lock().phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { until } if now < until => CircuitState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CallOutcome::{Failed, Healthy};

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
        }
    }

    fn call(b: &Breaker, t: Instant, outcome: CallOutcome) -> Option<CircuitState> {
        let a = b.admit(t);
        assert_ne!(a, Admission::Skip(Duration::ZERO));
        b.record(t, a, outcome)
    }

    #[test]
    fn consecutive_failures_open_then_one_probe_closes() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        assert_eq!(call(&b, t0, Failed), None);
        assert_eq!(call(&b, t0, Healthy), None); // the run restarts
        assert_eq!(call(&b, t0, Failed), None);
        assert_eq!(call(&b, t0, Failed), None);
        assert_eq!(call(&b, t0, Failed), Some(CircuitState::Open));
        // Open: the model is skipped for the cooldown.
        assert_eq!(
            b.admit(t0 + Duration::from_secs(1)),
            Admission::Skip(Duration::from_secs(4))
        );
        assert_eq!(b.state(t0 + Duration::from_secs(1)), CircuitState::Open);
        // After the cooldown exactly one probe goes out.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert!(matches!(b.admit(t1), Admission::Skip(_)));
        assert_eq!(
            b.record(t1, Admission::Probe, Healthy),
            Some(CircuitState::Closed)
        );
        assert_eq!(b.admit(t1), Admission::Call);
    }

    #[test]
    fn a_failed_probe_opens_for_another_cooldown() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        b.trip(t0, Duration::from_secs(5));
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(
            b.record(t1, Admission::Probe, Failed),
            Some(CircuitState::Open)
        );
        assert!(matches!(
            b.admit(t1 + Duration::from_secs(4)),
            Admission::Skip(_)
        ));
        assert_eq!(b.admit(t1 + Duration::from_secs(5)), Admission::Probe);
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        b.trip(t0, Duration::from_secs(1));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(t1), Admission::Probe);
        // Its job was cancelled; after a cooldown another probe goes.
        assert!(matches!(
            b.admit(t1 + Duration::from_secs(4)),
            Admission::Skip(_)
        ));
        assert_eq!(b.admit(t1 + Duration::from_secs(5)), Admission::Probe);
    }

    #[test]
    fn the_failure_rate_opens_once_enough_calls_were_made() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        // Alternating: never 3 in a row, but 50% of 10 calls.
        let mut opened = None;
        for i in 0..10 {
            let outcome = if i % 2 == 0 { Failed } else { Healthy };
            if let Some(s) = call(&b, t0 + Duration::from_millis(i), outcome) {
                opened = Some((i, s));
            }
        }
        assert_eq!(opened, None, "the 10th call is a success");
        assert_eq!(
            call(&b, t0 + Duration::from_millis(10), Failed),
            Some(CircuitState::Open)
        );
    }

    #[test]
    fn old_calls_leave_the_window() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        for i in 0..9 {
            let outcome = if i % 2 == 0 { Failed } else { Healthy };
            call(&b, t0, outcome);
        }
        // 11 s later the window holds only new calls: one failure among two is not enough.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(call(&b, t1, Healthy), None);
        assert_eq!(call(&b, t1, Failed), None);
        assert_eq!(b.state(t1), CircuitState::Closed);
    }

    #[test]
    fn late_results_of_earlier_calls_do_not_close_an_open_circuit() {
        let b = Breaker::new(settings());
        let t0 = Instant::now();
        let early = b.admit(t0);
        for _ in 0..3 {
            call(&b, t0, Failed);
        }
        assert_eq!(b.record(t0, early, Healthy), None);
        assert_eq!(b.state(t0), CircuitState::Open);
    }
}
