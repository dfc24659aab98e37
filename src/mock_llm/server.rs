//! The HTTP edge of the mock: axum routes for the OpenAI chat API and the admin endpoints.
//!
//! Per request: parse, take a snapshot of the config (an `Arc`, so a concurrent `PUT` never
//! blocks or tears a request), draw from a per-request RNG (no shared RNG lock), sleep the
//! simulated latency with `tokio::time::sleep`, then answer as [`decide`] says. No lock is held
//! across an `.await`. Hung requests end when the client disconnects (the handler future is
//! dropped), when `max_hang_s` passes (504) or at shutdown (503), so they cannot pile up.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::behavior::{
    decide, estimate_tokens, prompt_tokens, reply, truncate_to_tokens, ChatMessage, Decision,
};
use super::config::{MockConfigError, MockLlmConfig, ModelBehavior};
use super::log::{
    log_model_name, LoggedMessage, Outcome, RequestLog, RequestRecord, MAX_LOGGED_MESSAGE_CHARS,
};

/// Largest accepted request body. Large enough for a prompt well past a 128k-token window.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Shared state of one mock server: current config, request log, RNG seed, shutdown signal.
/// Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct MockState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Replaced whole on `PUT /mock/models/{name}`; readers clone the `Arc` and let go.
    config: RwLock<Arc<MockLlmConfig>>,
    log: RequestLog,
    base_seed: u64,
    seq: AtomicU64,
    shutdown: CancellationToken,
    hanging: AtomicUsize,
}

impl MockState {
    /// State for a server running `config`. Does not validate; see [`MockLlmConfig::validate`].
    pub fn new(config: MockLlmConfig) -> Self {
        let base_seed = config.seed.unwrap_or_else(rand::random);
        Self {
            inner: Arc::new(Inner {
                log: RequestLog::new(config.request_log_capacity),
                config: RwLock::new(Arc::new(config)),
                base_seed,
                seq: AtomicU64::new(0),
                shutdown: CancellationToken::new(),
                hanging: AtomicUsize::new(0),
            }),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<MockLlmConfig> {
        let guard = self
            .inner
            .config
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Replaces one model's behaviour (the name `default` addresses `[default]`), after
    /// validating it. Requests already in flight keep the behaviour they started with.
    pub fn set_model(&self, name: &str, behavior: ModelBehavior) -> Result<(), MockConfigError> {
        behavior.validate(&model_key(name))?;
        self.update(|c| {
            if name == "default" {
                c.default = behavior;
            } else {
                c.models.insert(name.to_string(), behavior);
            }
        });
        Ok(())
    }

    /// Removes a model's own behaviour so it falls back to `[default]`; false if it had none.
    pub fn remove_model(&self, name: &str) -> bool {
        let mut removed = false;
        self.update(|c| removed = c.models.remove(name).is_some());
        removed
    }

    /// A copy of the request log, oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.inner.log.snapshot(None)
    }

    /// Empties the request log; returns how many records it held.
    pub fn clear_request_log(&self) -> usize {
        self.inner.log.clear()
    }

    /// Number of requests currently hanging.
    pub fn hanging(&self) -> usize {
        self.inner.hanging.load(Ordering::Relaxed)
    }

    fn update(&self, f: impl FnOnce(&mut MockLlmConfig)) {
        let mut guard = self
            .inner
            .config
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut next = MockLlmConfig::clone(&guard);
        f(&mut next);
        *guard = Arc::new(next);
    }

    /// RNG for the `n`th request: reproducible from `(seed, n)`, no shared lock.
    fn rng_for(&self, n: u64) -> StdRng {
        StdRng::seed_from_u64(self.inner.base_seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// Serves the mock on `listener` until `shutdown` resolves, then stops accepting, ends hung
/// and sleeping requests with 503, and returns once open connections have finished.
pub async fn serve(
    listener: TcpListener,
    state: MockState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.inner.shutdown.clone();
    let signal = async move {
        shutdown.await;
        token.cancel();
    };
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::trace!(%err, "mock-llm: cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .await
}

/// The axum router of the mock (chat API, admin endpoints, health).
pub fn router(state: MockState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/mock/requests", get(get_requests).delete(delete_requests))
        .route("/mock/models/{name}", put(put_model).delete(delete_model))
        .route("/mock/config", get(get_config))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The part of an OpenAI chat request the mock reads; other fields are accepted and ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Debug, Serialize)]
struct ChatResponse<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice; 1],
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct Choice {
    index: u32,
    message: AssistantMessage,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
struct AssistantMessage {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<String>,
}

#[derive(Debug, Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

/// Records exactly one [`RequestRecord`] per chat request: explicitly via [`Pending::record`],
/// or as `cancelled` when the handler future is dropped first (client went away).
struct Pending {
    state: MockState,
    at_ms: u64,
    arrived: Instant,
    model: String,
    prompt_tokens: u32,
    messages: Vec<LoggedMessage>,
    done: bool,
}

impl Pending {
    fn record(&mut self, outcome: Outcome, status: StatusCode, completion_tokens: u32) {
        self.push(outcome, status.as_u16(), completion_tokens);
    }

    fn push(&mut self, outcome: Outcome, status: u16, completion_tokens: u32) {
        self.done = true;
        self.state.inner.log.push(RequestRecord {
            at_ms: self.at_ms,
            model: std::mem::take(&mut self.model),
            outcome,
            status,
            latency_ms: u64::try_from(self.arrived.elapsed().as_millis()).unwrap_or(u64::MAX),
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            messages: std::mem::take(&mut self.messages),
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.push(Outcome::Cancelled, 0, 0);
        }
    }
}

/// Counts a hanging request for as long as it lives.
struct HangGuard(MockState);

impl HangGuard {
    fn new(state: &MockState) -> Self {
        state.inner.hanging.fetch_add(1, Ordering::Relaxed);
        Self(state.clone())
    }
}

impl Drop for HangGuard {
    fn drop(&mut self) {
        self.0.inner.hanging.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn chat_completions(
    State(state): State<MockState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut pending = Pending {
        state: state.clone(),
        at_ms: unix_ms(),
        arrived: Instant::now(),
        model: String::new(),
        prompt_tokens: 0,
        messages: Vec::new(),
        done: false,
    };
    let req = match parse_chat_request(body, &mut pending) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    let config = state.config();
    if config.request_log_messages {
        pending.messages = req.messages.iter().map(logged).collect();
    }
    let behavior = config.behavior_for(&req.model);
    let n = state.inner.seq.fetch_add(1, Ordering::Relaxed);
    let mut rng = state.rng_for(n);
    let latency = behavior.latency.sample(&mut rng);
    let draw: f64 = rng.gen();
    // Drawn last, so a seed's latencies and outcomes are the same as before this draw existed.
    let answer_draw: f64 = rng.gen();

    if sleep_or_shutdown(&state, latency).await.is_err() {
        pending.record(Outcome::Error, StatusCode::SERVICE_UNAVAILABLE, 0);
        return shutting_down();
    }

    let prompt_text = req
        .messages
        .iter()
        .map(ChatMessage::text)
        .collect::<Vec<_>>()
        .join("\n");
    let decision = decide(
        behavior,
        bearer_token(&headers),
        &prompt_text,
        pending.prompt_tokens,
        draw,
    );
    let echo = behavior
        .echo_auth_in_errors
        .then(|| headers.get(header::AUTHORIZATION))
        .flatten()
        .and_then(|v| v.to_str().ok());
    let call = Call {
        req: &req,
        behavior,
        n,
        answer_draw,
        echo,
    };
    respond(&state, &config, decision, call, &mut pending).await
}

/// A message as the request log keeps it.
fn logged(m: &ChatMessage) -> LoggedMessage {
    LoggedMessage {
        role: m.role.chars().take(32).collect(),
        content: m.text().chars().take(MAX_LOGGED_MESSAGE_CHARS).collect(),
    }
}

/// The request body as a chat request; a refusal (with the request logged) when it is not one
/// the mock serves.
fn parse_chat_request(
    body: Result<Bytes, BytesRejection>,
    pending: &mut Pending,
) -> Result<ChatRequest, Box<Response>> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        pending.record(Outcome::InvalidRequest, status, 0);
        Box::new(openai_error(status, &rejection.body_text(), None, None))
    })?;
    let req: ChatRequest = serde_json::from_slice(&body).map_err(|err| {
        pending.record(Outcome::InvalidRequest, StatusCode::BAD_REQUEST, 0);
        let msg = format!("invalid chat completion request: {err}");
        Box::new(openai_error(StatusCode::BAD_REQUEST, &msg, None, None))
    })?;
    pending.model = log_model_name(&req.model);
    if req.stream == Some(true) {
        pending.record(Outcome::InvalidRequest, StatusCode::BAD_REQUEST, 0);
        let msg = "baton mock-llm does not support stream=true";
        return Err(Box::new(openai_error(
            StatusCode::BAD_REQUEST,
            msg,
            Some("stream"),
            None,
        )));
    }
    pending.prompt_tokens = prompt_tokens(&req.messages);
    Ok(req)
}

/// What an answer needs besides the decision: the request, its model's behaviour, its sequence
/// number, its draw for classify noise, and the `Authorization` header when errors echo it.
struct Call<'a> {
    req: &'a ChatRequest,
    behavior: &'a ModelBehavior,
    n: u64,
    answer_draw: f64,
    echo: Option<&'a str>,
}

/// The response the decision calls for, logged.
async fn respond(
    state: &MockState,
    config: &MockLlmConfig,
    decision: Decision,
    call: Call<'_>,
    pending: &mut Pending,
) -> Response {
    match decision {
        Decision::Unauthorized => {
            pending.record(Outcome::Unauthorized, StatusCode::UNAUTHORIZED, 0);
            openai_error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided.",
                None,
                Some("invalid_api_key"),
            )
        }
        Decision::ContextLengthExceeded { limit } => {
            pending.record(Outcome::ContextLengthExceeded, StatusCode::BAD_REQUEST, 0);
            let msg = format!(
                "This model's maximum context length is {limit} tokens. However, your messages \
                 resulted in {} tokens. Please reduce the length of the messages.",
                pending.prompt_tokens
            );
            openai_error(
                StatusCode::BAD_REQUEST,
                &msg,
                Some("messages"),
                Some("context_length_exceeded"),
            )
        }
        Decision::ContentFilter => {
            pending.record(Outcome::ContentFilter, StatusCode::BAD_REQUEST, 0);
            openai_error(
                StatusCode::BAD_REQUEST,
                "The response was filtered due to the prompt triggering the content management policy.",
                Some("prompt"),
                Some("content_filter"),
            )
        }
        Decision::Hang => {
            pending.push(Outcome::Hang, 0, 0);
            let _hanging = HangGuard::new(state);
            if sleep_or_shutdown(state, config.max_hang()).await.is_err() {
                return shutting_down();
            }
            openai_error(
                StatusCode::GATEWAY_TIMEOUT,
                "mock-llm: simulated hang reached max_hang_s",
                None,
                Some("timeout"),
            )
        }
        Decision::RateLimited { retry_after_s } => rate_limited(retry_after_s, pending),
        Decision::Error { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            pending.record(Outcome::Error, status, 0);
            simulated_error(status, call.echo)
        }
        Decision::Malformed => {
            let (body, completion_tokens) =
                completion_body(call.req, call.behavior, pending, call.n, call.answer_draw);
            pending.record(Outcome::Malformed, StatusCode::OK, completion_tokens);
            let mut cut = body.len() / 2;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            json_body(StatusCode::OK, body[..cut].to_string())
        }
        Decision::Ok => {
            let (body, completion_tokens) =
                completion_body(call.req, call.behavior, pending, call.n, call.answer_draw);
            pending.record(Outcome::Ok, StatusCode::OK, completion_tokens);
            json_body(StatusCode::OK, body)
        }
    }
}

/// A 429, with Retry-After when the behaviour sends one.
fn rate_limited(retry_after_s: Option<u64>, pending: &mut Pending) -> Response {
    pending.record(Outcome::RateLimited, StatusCode::TOO_MANY_REQUESTS, 0);
    let mut resp = openai_error(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit reached for requests (simulated by baton mock-llm).",
        None,
        Some("rate_limit_exceeded"),
    );
    if let Some(secs) = retry_after_s {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// The serialized completion and its completion-token count. `max_tokens` (or
/// `max_completion_tokens`) cuts the answer and sets `finish_reason: "length"`. `answer_draw`
/// is the request's uniform draw for classify noise.
fn completion_body(
    req: &ChatRequest,
    behavior: &ModelBehavior,
    pending: &Pending,
    n: u64,
    answer_draw: f64,
) -> (String, u32) {
    let reply = reply(
        behavior,
        &req.messages,
        req.response_format.as_ref(),
        answer_draw,
    );
    let mut content = reply.content;
    let mut finish_reason = reply.finish_reason;
    if let (Some(limit), Some(text)) = (req.max_completion_tokens.or(req.max_tokens), &content) {
        if estimate_tokens(text) > limit {
            content = Some(truncate_to_tokens(text, limit));
            finish_reason = "length";
        }
    }
    let completion_tokens = content
        .as_deref()
        .or(reply.refusal.as_deref())
        .map_or(0, estimate_tokens);
    let resp = ChatResponse {
        id: format!("chatcmpl-mock-{n:016x}"),
        object: "chat.completion",
        created: pending.at_ms / 1000,
        model: &req.model,
        choices: [Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content,
                refusal: reply.refusal,
            },
            logprobs: None,
            finish_reason,
        }],
        usage: Usage {
            prompt_tokens: pending.prompt_tokens,
            completion_tokens,
            total_tokens: pending.prompt_tokens.saturating_add(completion_tokens),
        },
    };
    let body = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".to_string());
    (body, completion_tokens)
}

/// Waits `d`, or fails as soon as the server starts shutting down.
async fn sleep_or_shutdown(state: &MockState, d: Duration) -> Result<(), ()> {
    if d.is_zero() {
        return Ok(());
    }
    tokio::select! {
        () = tokio::time::sleep(d) => Ok(()),
        () = state.inner.shutdown.cancelled() => Err(()),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// An error in OpenAI's shape: `{"error":{"message","type","param","code"}}`.
fn openai_error(
    status: StatusCode,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let kind = match status.as_u16() {
        401 => "invalid_request_error",
        403 => "permission_error",
        429 => "requests",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    (status, Json(body)).into_response()
}

/// A simulated error; with `echo`, its message repeats the request's `Authorization` header.
fn simulated_error(status: StatusCode, echo: Option<&str>) -> Response {
    let mut message = match status.as_u16() {
        500 => "The server had an error while processing your request. Sorry about that!",
        503 => "The engine is currently overloaded, please try again later.",
        _ => "Simulated error from baton mock-llm.",
    }
    .to_string();
    if let Some(auth) = echo {
        message.push_str(&format!(
            " Request headers: {{\"authorization\": \"{auth}\"}}"
        ));
    }
    let code = match status.as_u16() {
        404 => Some("model_not_found"),
        429 => Some("rate_limit_exceeded"),
        _ => None,
    };
    openai_error(status, &message, None, code)
}

fn shutting_down() -> Response {
    openai_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "mock-llm is shutting down",
        None,
        None,
    )
}

fn json_body(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn model_key(name: &str) -> String {
    if name == "default" {
        "default".to_string()
    } else {
        format!("models.{}", super::config::quote_key(name))
    }
}

async fn list_models(State(state): State<MockState>) -> Json<Value> {
    let config = state.config();
    let data: Vec<Value> = config
        .models
        .keys()
        .map(|id| serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": "baton-mock" }))
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data }))
}

#[derive(Debug, Deserialize)]
struct RequestsQuery {
    model: Option<String>,
}

async fn get_requests(
    State(state): State<MockState>,
    Query(q): Query<RequestsQuery>,
) -> Json<Vec<RequestRecord>> {
    Json(state.inner.log.snapshot(q.model.as_deref()))
}

async fn delete_requests(State(state): State<MockState>) -> Json<Value> {
    Json(serde_json::json!({ "cleared": state.clear_request_log() }))
}

async fn put_model(
    State(state): State<MockState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return openai_error(rejection.status(), &rejection.body_text(), None, None)
        }
    };
    let parsed = ModelBehavior::from_json_slice(&body, &model_key(&name))
        .and_then(|b| state.set_model(&name, b.clone()).map(|()| b));
    match parsed {
        Ok(behavior) => {
            tracing::info!(model = %name, "mock-llm: model behaviour replaced");
            (StatusCode::OK, Json(behavior)).into_response()
        }
        Err(err) => openai_error(
            StatusCode::BAD_REQUEST,
            &err.to_string(),
            None,
            Some("invalid_config"),
        ),
    }
}

async fn delete_model(State(state): State<MockState>, Path(name): Path<String>) -> Response {
    if name == "default" {
        let msg = "the default behaviour cannot be removed; PUT a new one instead";
        return openai_error(StatusCode::BAD_REQUEST, msg, None, Some("invalid_config"));
    }
    let removed = state.remove_model(&name);
    Json(serde_json::json!({ "removed": removed })).into_response()
}

async fn get_config(State(state): State<MockState>) -> Json<MockLlmConfig> {
    Json(MockLlmConfig::clone(&state.config()))
}

async fn not_found() -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        "Unknown endpoint (baton mock-llm serves POST /v1/chat/completions).",
        None,
        Some("unknown_url"),
    )
}
