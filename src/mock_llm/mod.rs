//! `baton mock-llm`: a simulated LLM provider speaking OpenAI's `/v1/chat/completions`.
//!
//! A real HTTP server (loopback by default) whose behaviour is chosen per model name from a
//! [`MockLlmConfig`]: latency distributions, error rates, 429s with `Retry-After`, hangs,
//! malformed bodies, context-window and content-filter rejections, API-key checks, and answers
//! that echo, are canned, or play a keyword-rule classifier with seeded noise. Used by the
//! integration tests, benchmarks, `baton demo` and users' load tests, so it is cheap per request
//! and never blocks: latency is a `tokio::time::sleep`, the config is an `Arc` snapshot and
//! randomness is per request.
//!
//! Guarantees: memory is bounded (request log ring buffer, body limit [`MAX_BODY_BYTES`],
//! hung requests end on client disconnect, `max_hang_s` or shutdown); every chat request leaves
//! exactly one [`RequestRecord`]; usage numbers are a documented, deterministic estimate (see
//! [`behavior`]).
//!
//! Endpoints: `POST /v1/chat/completions`, `GET /v1/models`, `GET|DELETE /mock/requests`
//! (`?model=NAME` filter), `PUT|DELETE /mock/models/{name}`, `GET /mock/config`, `GET /healthz`.
//!
//! Module map: [`config`] (TOML/JSON schema and validation), [`behavior`] (pure decisions,
//! latency sampling, token estimate, answer text), [`log`] (request log), [`server`] (axum
//! edge and [`serve`]).

pub mod behavior;
pub mod config;
pub mod log;
pub mod server;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    AnswerSpec, ClassifyRule, ClassifySpec, ErrorSpec, JsonAnswer, LatencySpec, MockConfigError,
    MockLlmConfig, ModelBehavior, RateLimitSpec,
};
pub use log::{LoggedMessage, Outcome, RequestRecord};
pub use server::{router, serve, MockState, MAX_BODY_BYTES};

/// Listen backlog, sized for thousands of clients connecting at once in load tests.
const LISTEN_BACKLOG: u32 = 4096;

/// A running mock-llm server. Dropping it stops the server in the background; prefer
/// [`MockLlm::shutdown`], which waits for it.
#[derive(Debug)]
pub struct MockLlm {
    addr: SocketAddr,
    state: MockState,
    stop: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl MockLlm {
    /// Validates `config`, binds `addr` (port 0 picks a free port) and spawns the server task.
    /// An invalid config is reported as `io::ErrorKind::InvalidInput`.
    pub async fn start(addr: SocketAddr, config: MockLlmConfig) -> std::io::Result<MockLlm> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "mock-llm listens beyond loopback; its admin endpoints have no auth");
        }
        let state = MockState::new(config);
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            state.clone(),
            stop.clone().cancelled_owned(),
        ));
        tracing::info!(%addr, "mock-llm listening");
        Ok(MockLlm {
            addr,
            state,
            stop,
            task: Some(task),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for an OpenAI client, e.g. `http://127.0.0.1:PORT/v1`. An unspecified bind
    /// address (`0.0.0.0`, `::`) is given as loopback.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/v1", SocketAddr::new(ip, self.addr.port()))
    }

    /// A copy of the request log, oldest first (same data as `GET /mock/requests`).
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.state.request_log()
    }

    /// Empties the request log (same as `DELETE /mock/requests`).
    pub fn clear_request_log(&self) -> usize {
        self.state.clear_request_log()
    }

    /// Replaces one model's behaviour at runtime (same as `PUT /mock/models/{name}`).
    pub fn set_model(&self, name: &str, behavior: ModelBehavior) -> Result<(), MockConfigError> {
        self.state.set_model(name, behavior)
    }

    /// The current configuration (same as `GET /mock/config`).
    pub fn config(&self) -> Arc<MockLlmConfig> {
        self.state.config()
    }

    /// The shared state, for in-process inspection.
    pub fn state(&self) -> &MockState {
        &self.state
    }

    /// Stops accepting, ends hung and sleeping requests with 503 and waits for the server task.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => tracing::info!(addr = %self.addr, "mock-llm stopped"),
                Ok(Err(err)) => {
                    tracing::warn!(addr = %self.addr, %err, "mock-llm stopped with an error")
                }
                Err(err) => tracing::warn!(addr = %self.addr, %err, "mock-llm task failed"),
            }
        }
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Binds with a large listen backlog so bursts of connections are not dropped.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests;
