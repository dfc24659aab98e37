//! OpenAI-compatible `/v1/chat/completions` (OpenAI, Azure-style gateways, vLLM, Ollama,
//! `baton mock-llm`): request encoding, answer decoding, error mapping.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use futures::future::BoxFuture;

use super::{classify_status, redact, Provider, ProviderError};
use crate::config::{ModelConfig, Usage};
use crate::context::ChatRequest;
use crate::envelope::ChatMessage;
use crate::output::{Completion, ToolCall};
use crate::util::excerpt;

/// Client for one model on an OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct OpenAiClient {
    url: String,
    /// `url` parsed once (parsing it on every call showed in the worker's profile); `None`
    /// when it does not parse, and each call then fails with reqwest's own message.
    parsed_url: Option<reqwest::Url>,
    /// `Bearer <key>`, built once and marked sensitive (never printed by reqwest).
    auth: Option<reqwest::header::HeaderValue>,
    provider_model: String,
    api_key: Option<String>,
    timeout: Duration,
    http: reqwest::Client,
}

impl std::fmt::Debug for OpenAiClient {
    // Hand-written so the API key can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("url", &self.url)
            .field("provider_model", &self.provider_model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a serde_json::Value>,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<WireCompletionDetails>,
}

#[derive(Deserialize)]
struct WireCompletionDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

#[derive(Deserialize)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize)]
struct WireErrorBody {
    error: WireError,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl OpenAiClient {
    /// A client for `model`; `api_key` is sent as a bearer token when present.
    pub fn new(model: &ModelConfig, api_key: Option<String>, http: reqwest::Client) -> Self {
        let url = format!("{}/chat/completions", model.base_url);
        let auth = api_key.as_ref().and_then(|key| {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        OpenAiClient {
            parsed_url: reqwest::Url::parse(&url).ok(),
            auth,
            url,
            provider_model: model.provider_model.clone(),
            api_key,
            timeout: model.timeout,
            http,
        }
    }

    /// One call, mapped into the provider-neutral shapes.
    async fn call(&self, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let body = WireRequest {
            model: &self.provider_model,
            messages: &req.messages,
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed,
            stop: req.stop.as_deref(),
            response_format: req.response_format.as_ref(),
        };
        let mut builder = match &self.parsed_url {
            Some(url) => self.http.post(url.clone()),
            None => self.http.post(&self.url),
        }
        .timeout(self.timeout)
        .json(&body);
        if let Some(auth) = &self.auth {
            builder = builder.header(reqwest::header::AUTHORIZATION, auth.clone());
        } else if let Some(key) = &self.api_key {
            // A key that is not a valid header value: reqwest reports it on the call.
            builder = builder.bearer_auth(key);
        }
        let resp = builder.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        if !(200..300).contains(&status) {
            let (code, message) = match serde_json::from_slice::<WireErrorBody>(&bytes) {
                Ok(b) => (
                    b.error.code.map(|c| match c {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    }),
                    b.error.message,
                ),
                Err(_) => (None, String::from_utf8_lossy(&bytes).into_owned()),
            };
            let secret = self.api_key.as_deref();
            return Err(classify_status(
                status,
                retry_after,
                code.as_deref().map(|c| redact(c, secret)).as_deref(),
                &redact(&message, secret),
            ));
        }
        decode_completion(&bytes, self.api_key.as_deref())
    }

    fn transport_error(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout(self.timeout)
        } else {
            // Strip the URL from the message: it may carry credentials in the query string.
            ProviderError::Connect(e.without_url().to_string())
        }
    }
}

impl Provider for OpenAiClient {
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(self.call(request))
    }
}

/// Decodes a 2xx body into a [`Completion`]; a body that is not one is reported with an
/// excerpt, `secret` redacted.
fn decode_completion(bytes: &[u8], secret: Option<&str>) -> Result<Completion, ProviderError> {
    let wire: WireResponse = serde_json::from_slice(bytes).map_err(|e| {
        // serde's message may quote the body too ("invalid type: string \"...\""): the whole
        // text is redacted before it is cut.
        let body = String::from_utf8_lossy(bytes);
        let error = redact(&e.to_string(), secret).into_owned();
        ProviderError::Malformed(format!(
            "body is not a chat completion ({}): {}",
            excerpt(&error, 200),
            excerpt(&redact(&body, secret), 120)
        ))
    })?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Malformed("no choices in the answer".into()))?;
    if choice.finish_reason.as_deref() == Some("content_filter") {
        return Err(ProviderError::ContentFilter(
            "the provider's content filter withheld the answer".into(),
        ));
    }
    let usage = wire.usage.map_or(Usage::default(), |u| Usage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
        cached_input_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
        reasoning_tokens: u
            .completion_tokens_details
            .map_or(0, |d| d.reasoning_tokens),
    });
    let message = choice.message;
    // An empty, truncated or refused answer is the output parser's to judge; it comes back
    // normalized, with its usage (it was billed).
    Ok(Completion {
        text: message.content.unwrap_or_default(),
        finish_reason: choice.finish_reason,
        usage,
        tool_calls: message
            .tool_calls
            .into_iter()
            .map(|t| ToolCall {
                id: t.id,
                name: t.function.name,
                arguments: t.function.arguments,
            })
            .collect(),
        refusal: message.refusal.filter(|r| !r.trim().is_empty()),
    })
}

/// Retry-After in seconds (the HTTP-date form is rare for APIs and treated as absent).
fn parse_retry_after(v: &str) -> Option<Duration> {
    // try_from: a huge or negative value from a provider must not panic the worker.
    v.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_completion_with_usage() {
        let body = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}"#;
        let c = decode_completion(body, None).unwrap();
        assert_eq!(c.text, "hi");
        assert_eq!(
            c.usage,
            Usage {
                input_tokens: 10,
                output_tokens: 3,
                total_tokens: 13,
                ..Usage::default()
            }
        );
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        let body = br#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2000,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":1536}}}"#;
        assert_eq!(
            decode_completion(body, None)
                .unwrap()
                .usage
                .cached_input_tokens,
            1536
        );
    }

    #[test]
    fn malformed_bodies_are_malformed_responses() {
        for body in [&b"{\"choices\":[{\"mess"[..], b"{\"choices\":[]}"] {
            assert!(matches!(
                decode_completion(body, None),
                Err(ProviderError::Malformed(_))
            ));
        }
    }

    #[test]
    fn refusals_tool_calls_and_reasoning_tokens_are_normalized() {
        let body = br#"{"choices":[{"message":{"content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"completion_tokens_details":{"reasoning_tokens":4}}}"#;
        let c = decode_completion(body, None).unwrap();
        assert_eq!(c.refusal.as_deref(), Some("I can't help with that."));
        assert_eq!(c.usage.reasoning_tokens, 4);
        let body = br#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"answer","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}]}"#;
        let c = decode_completion(body, None).unwrap();
        assert_eq!(c.tool_calls[0].name, "answer");
        assert_eq!(c.tool_calls[0].arguments, r#"{"a":1}"#);
        let empty =
            decode_completion(br#"{"choices":[{"message":{"content":"  "}}]}"#, None).unwrap();
        assert_eq!(
            empty.text.trim(),
            "",
            "an empty answer is the output parser's to judge"
        );
    }

    #[test]
    fn a_filtered_answer_is_a_content_filter_error() {
        let body =
            br#"{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}"#;
        assert!(matches!(
            decode_completion(body, None),
            Err(ProviderError::ContentFilter(_))
        ));
    }

    #[test]
    fn a_malformed_body_echoing_the_key_is_reported_without_it() {
        let key = "sk-echoed-secret-value";
        let body = format!(r#"{{"note":"auth was Bearer {key}","choices":"#);
        let e = decode_completion(body.as_bytes(), Some(key)).unwrap_err();
        assert!(matches!(e, ProviderError::Malformed(_)));
        assert!(!e.to_string().contains(key), "{e}");
        assert!(e.to_string().contains("[REDACTED]"), "{e}");
        // serde quotes a value of the wrong type in its own message.
        let body = format!(r#"{{"choices":[],"usage":{{"prompt_tokens":"Bearer {key}"}}}}"#);
        let e = decode_completion(body.as_bytes(), Some(key)).unwrap_err();
        assert!(!e.to_string().contains(key), "{e}");
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("1e300"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let m = crate::config::Config::from_toml(include_str!("../../examples/support.toml"), None)
            .unwrap();
        let c = OpenAiClient::new(
            &m.models[0],
            Some("sk-secret".into()),
            reqwest::Client::new(),
        );
        assert!(!format!("{c:?}").contains("sk-secret"));
    }
}
