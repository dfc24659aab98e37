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
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
    /// Input tokens the provider served from its prompt cache (billed at the cached price).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    /// Output tokens the model spent reasoning before its answer (billed as output tokens;
    /// included in `output_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
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
    /// The record has no value at all.
    EmptyPayload,
    /// The value is not UTF-8.
    InvalidUtf8,
    /// The value is not JSON.
    InvalidJson,
    /// JSON, but not a job envelope (missing or non-string `id`, wrong field types...).
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
