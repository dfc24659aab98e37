//! Providers: one module per wire protocol, one normalized answer, one error taxonomy.
//!
//! Every provider maps its failures into [`ProviderError`], and each variant says what to do
//! next ([`Disposition`]): retry on the same model, try the next model, or dead-letter. The
//! mapping from an HTTP status to a variant lives in one place, [`classify_status`].

pub mod openai;

use std::time::Duration;

use crate::config::{ConfigError, ModelConfig};
use crate::envelope::{ChatMessage, ErrorClass, Usage};

/// A request for one chat completion, provider-neutral.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// Messages, system prompt first when there is one.
    pub messages: Vec<ChatMessage>,
    /// Output token cap.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Seed.
    pub seed: Option<i64>,
    /// Stop sequences.
    pub stop: Option<Vec<String>>,
    /// OpenAI-style `response_format`.
    pub response_format: Option<serde_json::Value>,
}

/// A provider's answer, normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The answer text.
    pub text: String,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// Billed usage.
    pub usage: Usage,
}

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: retry on the same model after a backoff.
    RetrySameModel,
    /// This model cannot serve the job (bad credentials, window too small): try the next.
    NextModel,
    /// No model will do better: dead-letter the job.
    DeadLetter,
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// No answer within the call timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Could not connect, or the connection broke.
    #[error("connection failed: {0}")]
    Connect(String),
    /// 5xx.
    #[error("server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// 429.
    #[error("rate limited (429){}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        /// The Retry-After header, when sent.
        retry_after: Option<Duration>,
    },
    /// 401 or 403.
    #[error("credentials refused ({status}): {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// 400 because the prompt is too long for the model.
    #[error("context length exceeded: {0}")]
    ContextLength(String),
    /// 400 because the content filter refused it.
    #[error("content filter: {0}")]
    ContentFilter(String),
    /// 404: the endpoint does not know this model (a config mistake for this model only).
    #[error("model not found (404): {0}")]
    NotFound(String),
    /// Any other 4xx.
    #[error("request rejected ({status}): {message}")]
    BadRequest {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// A 2xx whose body is not a valid completion, or an empty answer.
    #[error("invalid answer: {0}")]
    InvalidOutput(String),
}

impl ProviderError {
    /// The dead-letter / metrics class.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProviderError::Timeout(_) => ErrorClass::ProviderTimeout,
            ProviderError::Connect(_) => ErrorClass::ProviderUnavailable,
            ProviderError::Server { .. } => ErrorClass::ProviderError,
            ProviderError::RateLimited { .. } => ErrorClass::RateLimited,
            ProviderError::Auth { .. } => ErrorClass::AuthFailed,
            ProviderError::ContextLength(_) => ErrorClass::ContextLengthExceeded,
            ProviderError::ContentFilter(_) => ErrorClass::ContentFilter,
            ProviderError::BadRequest { .. } | ProviderError::NotFound(_) => ErrorClass::BadRequest,
            ProviderError::InvalidOutput(_) => ErrorClass::InvalidOutput,
        }
    }

    /// What to do next.
    pub fn disposition(&self) -> Disposition {
        match self {
            ProviderError::Timeout(_)
            | ProviderError::Connect(_)
            | ProviderError::Server { .. }
            | ProviderError::RateLimited { .. }
            | ProviderError::InvalidOutput(_) => Disposition::RetrySameModel,
            ProviderError::Auth { .. }
            | ProviderError::ContextLength(_)
            | ProviderError::NotFound(_) => Disposition::NextModel,
            ProviderError::ContentFilter(_) | ProviderError::BadRequest { .. } => {
                Disposition::DeadLetter
            }
        }
    }

    /// The wait the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// Maps a non-2xx HTTP answer to a [`ProviderError`]. `code` and `message` come from the
/// provider's error body when it has one.
pub fn classify_status(
    status: u16,
    retry_after: Option<Duration>,
    code: Option<&str>,
    message: &str,
) -> ProviderError {
    let message = excerpt(message, 300);
    let code = code.unwrap_or("");
    let lower = message.to_ascii_lowercase();
    match status {
        429 => ProviderError::RateLimited { retry_after },
        401 | 403 => ProviderError::Auth { status, message },
        400 | 413 | 422
            if code == "context_length_exceeded"
                || lower.contains("context length")
                || lower.contains("maximum context") =>
        {
            ProviderError::ContextLength(message)
        }
        400 | 422 if code == "content_filter" || lower.contains("content filter") => {
            ProviderError::ContentFilter(message)
        }
        404 => ProviderError::NotFound(message),
        408 => ProviderError::Timeout(Duration::ZERO),
        s if s >= 500 => ProviderError::Server { status, message },
        _ => ProviderError::BadRequest { status, message },
    }
}

/// At most `max` characters of `s`, for error messages (never a whole prompt).
pub fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A client for one configured model.
#[derive(Debug, Clone)]
pub enum Provider {
    /// OpenAI-compatible endpoint.
    Openai(openai::OpenAiClient),
}

impl Provider {
    /// Builds the client of a model, reading its API key from the environment variable the
    /// config names. A missing variable is a config error naming the key.
    pub fn new(model: &ModelConfig, http: reqwest::Client) -> Result<Provider, ConfigError> {
        let api_key = match &model.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(v),
                _ => {
                    return Err(ConfigError {
                        path: format!("models.{}.api_key_env", model.name),
                        line: None,
                        message: format!("environment variable {var} is not set"),
                    })
                }
            },
        };
        match model.provider {
            crate::config::ProviderKind::Openai => Ok(Provider::Openai(openai::OpenAiClient::new(
                model, api_key, http,
            ))),
        }
    }

    /// One call; no retries here (the pipeline decides those).
    pub async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError> {
        match self {
            Provider::Openai(c) => c.complete(req).await,
        }
    }
}

/// The shared HTTP client: one connection pool for every provider, sized for thousands of
/// concurrent calls.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client builds with static settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes_and_dispositions() {
        let cases = [
            (
                429,
                None,
                "",
                ErrorClass::RateLimited,
                Disposition::RetrySameModel,
            ),
            (
                503,
                None,
                "down",
                ErrorClass::ProviderError,
                Disposition::RetrySameModel,
            ),
            (
                401,
                None,
                "bad key",
                ErrorClass::AuthFailed,
                Disposition::NextModel,
            ),
            (
                403,
                None,
                "",
                ErrorClass::AuthFailed,
                Disposition::NextModel,
            ),
            (
                400,
                Some("context_length_exceeded"),
                "",
                ErrorClass::ContextLengthExceeded,
                Disposition::NextModel,
            ),
            (
                400,
                None,
                "This model's maximum context length is 8192",
                ErrorClass::ContextLengthExceeded,
                Disposition::NextModel,
            ),
            (
                400,
                Some("content_filter"),
                "",
                ErrorClass::ContentFilter,
                Disposition::DeadLetter,
            ),
            (
                400,
                None,
                "bad field",
                ErrorClass::BadRequest,
                Disposition::DeadLetter,
            ),
            (
                404,
                None,
                "no such model",
                ErrorClass::BadRequest,
                Disposition::NextModel,
            ),
            (
                422,
                None,
                "bad field",
                ErrorClass::BadRequest,
                Disposition::DeadLetter,
            ),
        ];
        for (status, code, msg, class, disp) in cases {
            let e = classify_status(status, None, code, msg);
            assert_eq!(
                (e.class(), e.disposition()),
                (class, disp),
                "{status} {code:?} {msg}"
            );
        }
    }

    #[test]
    fn retry_after_is_kept() {
        let e = classify_status(429, Some(Duration::from_secs(3)), None, "");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn excerpt_cuts_on_char_boundaries() {
        assert_eq!(excerpt("héllo wörld", 4), "héll…");
        assert_eq!(excerpt("short", 10), "short");
    }
}
