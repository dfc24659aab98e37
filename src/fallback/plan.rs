//! Where a job goes after a failed round: its step's next retry tier (a delayed topic), or,
//! when a later round cannot help or the tiers are spent, a terminal record: the dead-letter
//! topic, or the human-review topic for the error classes the route escalates.

use std::time::Duration;

use crate::config::{ErrorClass, RetryTier};

/// Where a failed job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Retry tier `tier` (0-based), due after `delay`.
    RetryTier {
        /// The tier.
        tier: usize,
        /// How long the record waits there: the tier's delay, or longer if the provider asked.
        delay: Duration,
    },
    /// A terminal failure record: to the review topic when `escalate`, else the step's
    /// dead-letter topic.
    Terminal {
        /// Whether the route sends this class to a person.
        escalate: bool,
        /// Whether a later round might have helped but the job has been through every tier.
        tiers_spent: bool,
    },
}

/// Whether a job that failed this way may succeed in a later round, so it goes to a delayed
/// retry tier rather than straight to a terminal record: the provider side was down, slow,
/// saturated, garbled or blank. Everything else needs a person: bad input, policy, a request
/// the provider refuses on its merits, bad credentials, and an answer every candidate got
/// wrong (failing the step's schema after its repair, truncated, refused).
pub fn may_succeed_later(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::ProviderTimeout
            | ErrorClass::ProviderUnavailable
            | ErrorClass::ProviderError
            | ErrorClass::RateLimited
            | ErrorClass::MalformedResponse
            | ErrorClass::EmptyOutput
    )
}

/// The plan for a job whose round failed with `class`, consumed from retry tier `from_tier`
/// (`None`: the step's input topic), the provider having asked to wait `not_before`; `review`
/// lists the classes the route escalates.
pub fn after_round(
    class: ErrorClass,
    from_tier: Option<usize>,
    tiers: &[RetryTier],
    not_before: Option<Duration>,
    review: &[ErrorClass],
) -> Plan {
    let next = from_tier.map_or(0, |t| t + 1);
    let later = may_succeed_later(class);
    match tiers.get(next) {
        Some(t) if later => Plan::RetryTier {
            tier: next,
            delay: t.delay.max(not_before.unwrap_or_default()),
        },
        _ => Plan::Terminal {
            escalate: escalates(class, review),
            tiers_spent: later && from_tier.is_some(),
        },
    }
}

/// Whether a terminal failure of `class` goes to a person (the review topic) rather than the
/// dead-letter topic: the route lists the class in `review`.
pub fn escalates(class: ErrorClass, review: &[ErrorClass]) -> bool {
    review.contains(&class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<RetryTier> {
        ["30s", "5m"]
            .iter()
            .map(|t| RetryTier {
                name: t.to_string(),
                delay: humantime::parse_duration(t).unwrap(),
            })
            .collect()
    }

    #[test]
    fn only_provider_side_failures_are_retried_later() {
        assert!(may_succeed_later(ErrorClass::ProviderTimeout));
        assert!(may_succeed_later(ErrorClass::RateLimited));
        assert!(may_succeed_later(ErrorClass::ProviderUnavailable));
        assert!(!may_succeed_later(ErrorClass::ContentFilter));
        assert!(!may_succeed_later(ErrorClass::BadRequest));
        assert!(!may_succeed_later(ErrorClass::PolicyUnsatisfiable));
        assert!(!may_succeed_later(ErrorClass::InvalidJson));
        assert!(!may_succeed_later(ErrorClass::AuthFailed));
    }

    #[test]
    fn rounds_climb_the_tiers_then_end_in_a_terminal_record() {
        let (t, s) = (tiers(), Duration::from_secs);
        let e = ErrorClass::ProviderError;
        assert_eq!(
            after_round(e, None, &t, None, &[]),
            Plan::RetryTier {
                tier: 0,
                delay: s(30)
            }
        );
        // A provider's long Retry-After holds the record back longer than the tier's delay.
        assert_eq!(
            after_round(e, Some(0), &t, Some(s(900)), &[]),
            Plan::RetryTier {
                tier: 1,
                delay: s(900)
            }
        );
        let terminal = |escalate, tiers_spent| Plan::Terminal {
            escalate,
            tiers_spent,
        };
        assert_eq!(
            after_round(e, Some(1), &t, None, &[]),
            terminal(false, true)
        );
        let filtered = ErrorClass::ContentFilter;
        assert_eq!(
            after_round(filtered, None, &t, None, &[filtered]),
            terminal(true, false)
        );
        assert_eq!(after_round(e, None, &[], None, &[]), terminal(false, false));
    }
}
