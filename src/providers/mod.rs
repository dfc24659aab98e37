//! Providers: one file per wire format behind one trait, one error taxonomy.
//!
//! A [`Provider`] makes one call and maps its answer into the output parser's normalized
//! [`Completion`], and its failures into [`ProviderError`]; what a failure means (retry, next
//! model, give up) is the fallback policy's to say (`fallback::Fate`). The mapping from an HTTP
//! status to an error lives in one place, [`classify_status`]. [`fake`] is a scripted
//! in-process provider for tests.

pub mod fake;
pub mod openai;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::{Config, ConfigError, ConfigErrors, ErrorClass, ModelConfig, ProviderKind};
use crate::context::ChatRequest;
use crate::output::Completion;

/// One configured model's client. Implementations make exactly one call per `complete` (no
/// retries: the pipeline and the fallback policy decide those) and never log or return a secret.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// One call, mapped into the provider-neutral shapes.
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>>;
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
    /// A 2xx whose body is not a valid completion.
    #[error("malformed response: {0}")]
    Malformed(String),
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
            ProviderError::Malformed(_) => ErrorClass::MalformedResponse,
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
    let message = crate::util::excerpt(message, 300);
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
        400 | 422 if is_policy_refusal(code, &lower) => ProviderError::ContentFilter(message),
        404 => ProviderError::NotFound(message),
        // The server gave up waiting for the request and said so at once: not a silent model.
        408 => ProviderError::Server { status, message },
        s if s >= 500 => ProviderError::Server { status, message },
        _ => ProviderError::BadRequest { status, message },
    }
}

/// Whether a 400 is the provider's content policy refusing the prompt: OpenAI's
/// `content_policy_violation` ("rejected as a result of our safety system"), Azure OpenAI's
/// `content_filter` (its innermost code `ResponsibleAIPolicyViolation`), or a message saying so.
fn is_policy_refusal(code: &str, lower_message: &str) -> bool {
    matches!(
        code,
        "content_filter" | "content_policy_violation" | "ResponsibleAIPolicyViolation"
    ) || [
        "content filter",
        "content management policy",
        "content policy",
        "safety system",
    ]
    .iter()
    .any(|s| lower_message.contains(s))
}

/// `text` with every occurrence of `secret` (a model's API key) replaced by `[REDACTED]`. A
/// provider's error body may echo the request's headers; what baton reports of it (dead
/// letters, logs, results) must not carry the key. Applied to the whole text, before any
/// excerpt could cut the key and leave a prefix of it.
pub fn redact<'a>(text: &'a str, secret: Option<&str>) -> std::borrow::Cow<'a, str> {
    match secret {
        Some(s) if !s.is_empty() && text.contains(s) => text.replace(s, "[REDACTED]").into(),
        _ => text.into(),
    }
}

/// Builds the client of a model, reading its API key from the environment variable the config
/// names. A missing variable is a config error naming the key.
pub fn build(model: &ModelConfig, http: reqwest::Client) -> Result<Arc<dyn Provider>, ConfigError> {
    let api_key = match &model.api_key_env {
        None => None,
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                return Err(ConfigError::new(
                    &format!("models.{}.api_key_env", model.name),
                    format!("environment variable {var} is not set"),
                ))
            }
        },
    };
    Ok(match model.provider {
        ProviderKind::Openai => Arc::new(openai::OpenAiClient::new(model, api_key, http)),
    })
}

/// Every model's client, indexed like `config.models`, over one shared connection pool.
pub fn build_all(config: &Config) -> Result<Vec<Arc<dyn Provider>>, ConfigErrors> {
    let http = http_client();
    let mut providers = Vec::new();
    let mut errors = Vec::new();
    for m in &config.models {
        match build(m, http.clone()) {
            Ok(p) => providers.push(p),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors {
            source_name: None,
            errors,
        });
    }
    Ok(providers)
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
    fn statuses_map_to_classes() {
        let cases = [
            (429, None, "", ErrorClass::RateLimited),
            (503, None, "down", ErrorClass::ProviderError),
            (401, None, "bad key", ErrorClass::AuthFailed),
            (403, None, "", ErrorClass::AuthFailed),
            (
                400,
                Some("context_length_exceeded"),
                "",
                ErrorClass::ContextLengthExceeded,
            ),
            (
                400,
                None,
                "This model's maximum context length is 8192",
                ErrorClass::ContextLengthExceeded,
            ),
            (400, Some("content_filter"), "", ErrorClass::ContentFilter),
            // OpenAI (seen classed `bad_request`, so `review = ["content_filter"]` missed it).
            (
                400,
                Some("content_policy_violation"),
                "Your request was rejected as a result of our safety system. Your prompt may \
                 contain text that is not allowed by our safety system.",
                ErrorClass::ContentFilter,
            ),
            // Azure OpenAI.
            (
                400,
                Some("content_filter"),
                "The response was filtered due to the prompt triggering Azure OpenAI's content \
                 management policy.",
                ErrorClass::ContentFilter,
            ),
            (400, None, "bad field", ErrorClass::BadRequest),
            (404, None, "no such model", ErrorClass::BadRequest),
            (422, None, "bad field", ErrorClass::BadRequest),
        ];
        for (status, code, msg, class) in cases {
            let e = classify_status(status, None, code, msg);
            assert_eq!(e.class(), class, "{status} {code:?} {msg}");
        }
    }

    #[test]
    fn an_echoed_key_is_redacted_whole_before_any_excerpt() {
        let key = "sk-test-0123456789abcdef0123456789abcdef";
        let body = format!("{} Authorization: Bearer {key}", "x".repeat(290));
        let e = classify_status(500, None, None, &redact(&body, Some(key)));
        let text = e.to_string();
        assert!(!text.contains(key), "{text}");
        assert!(
            !text.contains("sk-test-0123"),
            "no prefix of the key either: {text}"
        );
        assert_eq!(redact("nothing here", Some(key)), "nothing here");
        assert_eq!(redact("sk", None), "sk");
    }

    #[test]
    fn retry_after_is_kept() {
        let e = classify_status(429, Some(Duration::from_secs(3)), None, "");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_missing_api_key_variable_names_the_key() {
        let text = r#"
[models.m]
base_url = "http://127.0.0.1:1/v1"
api_key_env = "BATON_TEST_SURELY_UNSET_VAR"

[pipelines.p]
steps = [{ name = "s", model = "m" }]
"#;
        let c = Config::from_toml(text, None).unwrap();
        let e = build_all(&c).unwrap_err();
        assert_eq!(e.errors[0].path, "models.m.api_key_env");
        assert!(e.errors[0].message.contains("BATON_TEST_SURELY_UNSET_VAR"));
    }
}
