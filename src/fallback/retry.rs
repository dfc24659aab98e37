//! Calling a model again in process: after a failure worth retrying, wait a full-jitter
//! exponential backoff, or the provider's Retry-After when that is longer, then call the same
//! model again, up to `worker.provider_attempts` calls. A Retry-After beyond
//! [`MAX_IN_PROCESS_RETRY_AFTER`] is too long to hold a job slot: the job moves on, and should
//! its round fail, its retry tier is due no sooner than the provider asked.

use std::time::Duration;

use backoff::backoff::Backoff;

use super::Fate;

/// The longest Retry-After honoured in process; a longer one ends this model's attempts.
pub const MAX_IN_PROCESS_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Call the same model again after this wait.
    Retry(Duration),
    /// Move on to the next candidate.
    NextCandidate,
    /// End the round: no candidate will do better.
    GiveUp,
}

/// What follows a call that failed with `fate`, the provider having asked to wait
/// `retry_after`; `last_attempt` when the model has had its calls. Also returns the wait the
/// job's retry tier must honour, when the provider asked for more than the in-process cap.
pub fn next_after(
    fate: Fate,
    retry_after: Option<Duration>,
    last_attempt: bool,
    backoff: &mut impl Backoff,
) -> (Next, Option<Duration>) {
    if fate == Fate::Refused {
        return (Next::GiveUp, None);
    }
    if !fate.retries_same_model() {
        return (Next::NextCandidate, None);
    }
    match retry_after {
        Some(ra) if ra > MAX_IN_PROCESS_RETRY_AFTER => (Next::NextCandidate, Some(ra)),
        // Out of calls on this model: the next one needs no wait.
        _ if last_attempt => (Next::NextCandidate, None),
        ra => {
            let b = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
            (Next::Retry(ra.map_or(b, |ra| ra.max(b))), None)
        }
    }
}

/// Exponential backoff with full jitter for in-process retries.
pub fn attempt_backoff() -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(100))
        .with_multiplier(2.0)
        // Full jitter: each wait is drawn from [0, 2 × the exponential interval], so clients
        // that failed together do not retry together.
        .with_randomization_factor(1.0)
        .with_max_interval(Duration::from_secs(5))
        .with_max_elapsed_time(None)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fate_has_its_next_step() {
        let mut b = attempt_backoff();
        let s = Duration::from_secs;
        assert_eq!(
            next_after(Fate::Refused, None, false, &mut b),
            (Next::GiveUp, None)
        );
        for f in [
            Fate::NotThisModel,
            Fate::NotThisProvider,
            Fate::Misconfigured,
        ] {
            assert_eq!(
                next_after(f, None, false, &mut b),
                (Next::NextCandidate, None)
            );
        }
        // A transient failure waits a jittered backoff of at most 2 × 100 ms at first...
        match next_after(Fate::Transient, None, false, &mut attempt_backoff()) {
            (Next::Retry(w), None) => assert!(w <= Duration::from_millis(200), "{w:?}"),
            other => panic!("{other:?}"),
        }
        // ...or as long as the provider asked, when that is longer...
        assert_eq!(
            next_after(Fate::Throttled, Some(s(3)), false, &mut b),
            (Next::Retry(s(3)), None)
        );
        // ...but a long Retry-After moves on and holds the retry tier back.
        assert_eq!(
            next_after(Fate::Throttled, Some(s(30)), false, &mut b),
            (Next::NextCandidate, Some(s(30)))
        );
        // The last call on a model moves on without waiting.
        assert_eq!(
            next_after(Fate::Transient, Some(s(3)), true, &mut b),
            (Next::NextCandidate, None)
        );
    }
}
