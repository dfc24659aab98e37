//! The fallback handler: the whole failure policy, as pure decisions the pipeline and the
//! worker act on.
//!
//! - [`Fate`]: what one failed provider call means, for the job (retry the model, try the next
//!   candidate, give up the round) and for the model (a failure, a sign it is up, or out of
//!   rotation). One enum, read by the attempt loop and by the circuits alike.
//! - [`retry`]: the in-process wait before calling a model again (full-jitter backoff, the
//!   provider's Retry-After up to a cap; a longer one defers to a retry tier).
//! - [`breaker`] and [`Circuits`]: one circuit breaker per model.
//! - [`cooldown`]: a 429 cools its model for every job of the worker, one probe at a time.
//! - [`limits`]: each model kept under its provider's quota (requests and tokens per minute,
//!   concurrency).
//! - [`plan`]: where a job goes after a failed round: a delayed retry tier with its due time,
//!   the dead-letter topic, or human review.

pub mod breaker;
pub mod circuits;
pub mod cooldown;
pub mod limits;
pub mod plan;
pub mod retry;

pub use breaker::{Admission, Breaker, BreakerSettings, CallOutcome, CircuitState};
pub use circuits::Circuits;

use crate::config::ContentFilterPolicy;
use crate::providers::ProviderError;

/// What a failed provider call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The model failed, maybe for a moment (connection, 5xx, a garbled answer): call it
    /// again after a backoff; it counts against its circuit.
    Transient,
    /// The model took the call and went silent until the timeout: the next candidate gets the
    /// next attempt (another wait as long would leave it no time; calling the same model again
    /// is `worker.retry_timeouts`); it counts against its circuit.
    Stalled,
    /// The provider asks to slow down (429): call again after its Retry-After or a backoff;
    /// the model is up (quotas are the rate limiter's business, not the circuit's).
    Throttled,
    /// This model cannot take this job (the prompt is too long for its window): only a
    /// candidate with a larger window may; the model is up.
    NotThisModel,
    /// This provider endpoint refuses this job (its content filter) and the route lets another
    /// endpoint try: a candidate on another `base_url` may; the model is up.
    NotThisProvider,
    /// This model can take no job until its config is fixed (bad credentials, an unknown
    /// model id): the next candidate; the model leaves rotation.
    Misconfigured,
    /// The request itself is refused (content filter, other 4xx): no model will do better;
    /// the model is up.
    Refused,
    /// The model answered, but nothing a result can be made of (truncated, empty, refused, or
    /// off its schema after the repair attempt): the next candidate may do better; the model
    /// is up. The output parser says so; no HTTP error maps here.
    Unfit,
}

impl Fate {
    /// What `e` means, under a route whose content-filter policy is `policy`.
    pub fn of(e: &ProviderError, policy: ContentFilterPolicy) -> Fate {
        match e {
            ProviderError::Timeout(_) => Fate::Stalled,
            ProviderError::Connect(_)
            | ProviderError::Server { .. }
            | ProviderError::Malformed(_) => Fate::Transient,
            ProviderError::RateLimited { .. } => Fate::Throttled,
            ProviderError::ContextLength(_) => Fate::NotThisModel,
            ProviderError::Auth { .. } | ProviderError::NotFound(_) => Fate::Misconfigured,
            ProviderError::ContentFilter(_) if policy == ContentFilterPolicy::OtherProvider => {
                Fate::NotThisProvider
            }
            ProviderError::ContentFilter(_) | ProviderError::BadRequest { .. } => Fate::Refused,
        }
    }

    /// Whether the same model is worth calling again.
    pub fn retries_same_model(self) -> bool {
        matches!(self, Fate::Transient | Fate::Throttled)
    }

    /// Whether the failure only says "not this model" (its window, its config): the job itself
    /// was not refused.
    pub fn rules_out_model(self) -> bool {
        matches!(self, Fate::NotThisModel | Fate::Misconfigured | Fate::Unfit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ErrorClass;
    use crate::providers::classify_status;

    #[test]
    fn statuses_map_to_classes_and_fates() {
        use Fate::*;
        let cases = [
            (429, None, "", ErrorClass::RateLimited, Throttled),
            (503, None, "down", ErrorClass::ProviderError, Transient),
            (401, None, "bad key", ErrorClass::AuthFailed, Misconfigured),
            (403, None, "", ErrorClass::AuthFailed, Misconfigured),
            (
                400,
                Some("context_length_exceeded"),
                "",
                ErrorClass::ContextLengthExceeded,
                NotThisModel,
            ),
            (
                400,
                None,
                "This model's maximum context length is 8192",
                ErrorClass::ContextLengthExceeded,
                NotThisModel,
            ),
            (
                400,
                Some("content_filter"),
                "",
                ErrorClass::ContentFilter,
                Refused,
            ),
            (400, None, "bad field", ErrorClass::BadRequest, Refused),
            (
                404,
                None,
                "no such model",
                ErrorClass::BadRequest,
                Misconfigured,
            ),
            (422, None, "bad field", ErrorClass::BadRequest, Refused),
        ];
        for (status, code, msg, class, fate) in cases {
            let e = classify_status(status, None, code, msg);
            assert_eq!(
                (e.class(), Fate::of(&e, ContentFilterPolicy::DeadLetter)),
                (class, fate),
                "{status} {code:?} {msg}"
            );
        }
        let filtered = ProviderError::ContentFilter("no".into());
        assert_eq!(
            Fate::of(&filtered, ContentFilterPolicy::OtherProvider),
            NotThisProvider
        );
    }
}
