//! The shared vocabulary every room speaks: message roles, data sensitivity, the closed set of
//! error classes, and token usage. Serde gives each its one string form (snake_case), used in
//! config, envelopes, headers and metric labels alike.

use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions (a step's system prompt, a classifier's instructions).
    System,
    /// The end user, or the job's input.
    User,
    /// A model's earlier answer.
    Assistant,
    /// A tool's result.
    Tool,
}

impl Role {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// Data sensitivity, ordered from least to most sensitive.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// May go anywhere.
    Public,
    /// Company-internal; the default for a job that does not say.
    #[default]
    Internal,
    /// Customer or business confidential data.
    Confidential,
    /// Must stay on models explicitly allowed for it (typically on-premise).
    Restricted,
}

impl Sensitivity {
    /// The lowercase name used in config, envelopes and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "public",
            Sensitivity::Internal => "internal",
            Sensitivity::Confidential => "confidential",
            Sensitivity::Restricted => "restricted",
        }
    }
}

/// Token usage of one call, or of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(deserialize_with = "whole::deserialize")]
    pub input_tokens: u64,
    /// Completion tokens.
    #[serde(deserialize_with = "whole::deserialize")]
    pub output_tokens: u64,
    /// Their sum.
    #[serde(deserialize_with = "whole::deserialize")]
    pub total_tokens: u64,
    /// Input tokens the provider served from its prompt cache (billed at the cached price).
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "whole::deserialize"
    )]
    pub cached_input_tokens: u64,
    /// Output tokens the model spent reasoning before its answer (billed as output tokens;
    /// included in `output_tokens`).
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "whole::deserialize"
    )]
    pub reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The closed set of reasons a job fails (the `baton-error-class` header, the `error_class`
/// metric label). What each class means for the job is the fallback policy's to say
/// (`fallback::plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The record value is larger than `worker.max_payload_bytes`.
    PayloadTooLarge,
    /// The record has no value, or a zero-byte one.
    EmptyPayload,
    /// The value is not UTF-8.
    InvalidUtf8,
    /// The value is not JSON (or starts with a UTF-8 byte order mark, which JSON forbids).
    InvalidJson,
    /// JSON, but not what `topics/schemas/job.schema.json` accepts (not an object, a missing
    /// or blank `id`, a wrong field type, an unknown role or sensitivity...).
    InvalidEnvelope,
    /// The job names a pipeline that is not configured (or not this topic's).
    UnknownPipeline,
    /// No allowed model satisfies the job's policy.
    PolicyUnsatisfiable,
    /// The provider timed out on every attempt.
    ProviderTimeout,
    /// The provider could not be reached.
    ProviderUnavailable,
    /// The provider answered 5xx on every attempt.
    ProviderError,
    /// The provider kept answering 429.
    RateLimited,
    /// The provider refused the credentials (401/403).
    AuthFailed,
    /// The prompt does not fit the model's context window.
    ContextLengthExceeded,
    /// The provider's content filter refused the job.
    ContentFilter,
    /// The provider rejected the request (other 4xx).
    BadRequest,
    /// The provider's 2xx body was not a valid completion (garbled, cut, no choices): the
    /// model may do better on another call.
    MalformedResponse,
    /// The answer is not what the step asked for: not JSON, or JSON that fails the step's
    /// schema even after the one repair attempt on every candidate.
    InvalidOutput,
    /// The answer was cut by the output token cap (finish reason `length`).
    OutputTruncated,
    /// The model answered nothing (no text and no tool call).
    EmptyOutput,
    /// The model refused to answer (the provider's explicit refusal).
    ModelRefusal,
    /// A step's prompt template references something the job does not have.
    TemplateError,
    /// The broker refused the output for good (e.g. larger than the topic allows).
    OutputRejected,
    /// baton failed while processing the record (a bug); the record is kept as it came.
    InternalError,
}

impl ErrorClass {
    /// The snake_case name used in headers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::PayloadTooLarge => "payload_too_large",
            ErrorClass::EmptyPayload => "empty_payload",
            ErrorClass::InvalidUtf8 => "invalid_utf8",
            ErrorClass::InvalidJson => "invalid_json",
            ErrorClass::InvalidEnvelope => "invalid_envelope",
            ErrorClass::UnknownPipeline => "unknown_pipeline",
            ErrorClass::PolicyUnsatisfiable => "policy_unsatisfiable",
            ErrorClass::ProviderTimeout => "provider_timeout",
            ErrorClass::ProviderUnavailable => "provider_unavailable",
            ErrorClass::ProviderError => "provider_error",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::AuthFailed => "auth_failed",
            ErrorClass::ContextLengthExceeded => "context_length_exceeded",
            ErrorClass::ContentFilter => "content_filter",
            ErrorClass::BadRequest => "bad_request",
            ErrorClass::MalformedResponse => "malformed_response",
            ErrorClass::InvalidOutput => "invalid_output",
            ErrorClass::OutputTruncated => "output_truncated",
            ErrorClass::EmptyOutput => "empty_output",
            ErrorClass::ModelRefusal => "model_refusal",
            ErrorClass::TemplateError => "template_error",
            ErrorClass::OutputRejected => "output_rejected",
            ErrorClass::InternalError => "internal_error",
        }
    }
}

/// Integers as JSON Schema's `integer` has them: any number with no fractional part, `5` or
/// `5.0`. serde turns `5.0` down for an integer field, which would make the job decoder refuse
/// envelopes `topics/schemas/job.schema.json` accepts (a producer whose JSON library writes
/// every number as a float).
pub mod whole {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};
    use serde_json::Number;

    /// A whole number that fits `T`, written with or without a fractional `.0`.
    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        convert(&Number::deserialize(d)?)
    }

    /// [`deserialize`] for an optional field; `null` is `None`.
    pub fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        Option::<Number>::deserialize(d)?
            .map(|n| convert(&n))
            .transpose()
    }

    fn convert<T: TryFrom<i128>, E: Error>(n: &Number) -> Result<T, E> {
        let whole = match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Some(i128::from(i)),
            (None, Some(u), _) => Some(i128::from(u)),
            // `as` saturates: a float beyond i128 (1e40) stays out of range for every target.
            (None, None, Some(f)) if f.fract() == 0.0 => Some(f as i128),
            _ => None,
        }
        .ok_or_else(|| E::custom(format!("expected a whole number, got {n}")))?;
        T::try_from(whole).map_err(|_| E::custom(format!("{n} is out of range")))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn parse<T: TryFrom<i128>>(json: &str) -> Result<T, serde_json::Error> {
            deserialize(&mut serde_json::Deserializer::from_str(json))
        }

        #[test]
        fn whole_floats_are_integers_and_the_rest_are_refused() {
            assert_eq!(parse::<u32>("5").unwrap(), 5);
            assert_eq!(parse::<u32>("5.0").unwrap(), 5);
            assert_eq!(parse::<u64>("1e3").unwrap(), 1000);
            assert_eq!(parse::<i64>("-2.0").unwrap(), -2);
            assert!(parse::<u32>("5.5").is_err());
            assert!(parse::<u32>("-1").is_err());
            assert!(parse::<u32>("4294967296").is_err());
            assert!(parse::<u64>("1e30").is_err());
            assert!(parse::<u64>("\"5\"").is_err());
        }
    }
}
