//! The request log: one [`RequestRecord`] per chat request, in a bounded ring buffer.
//!
//! Memory is bounded by `request_log_capacity` records (the oldest are dropped), by
//! [`MAX_MODEL_NAME_CHARS`] per record and, when `request_log_messages` keeps the messages a
//! request carried (so tests can check what a model saw), by [`MAX_LOGGED_MESSAGE_CHARS`] per
//! message. The lock is a plain mutex held only to push, clear or
//! copy, never across an `.await`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

/// Model names longer than this are cut in the log, so a hostile client cannot grow it.
pub const MAX_MODEL_NAME_CHARS: usize = 200;

/// Messages longer than this are cut in the log.
pub const MAX_LOGGED_MESSAGE_CHARS: usize = 16_384;

/// One message of a logged request: its role and (cut) text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedMessage {
    /// `system`, `user`, `assistant`...
    pub role: String,
    /// The text, cut to [`MAX_LOGGED_MESSAGE_CHARS`].
    pub content: String,
}

/// How a request ended, as written in `GET /mock/requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 200 with a normal completion.
    Ok,
    /// A configured error status (or 503 because the server was shutting down).
    Error,
    /// 429.
    RateLimited,
    /// Accepted and never answered (status 0).
    Hang,
    /// 200 with a truncated JSON body.
    Malformed,
    /// 400 `context_length_exceeded`.
    ContextLengthExceeded,
    /// 400 `content_filter`.
    ContentFilter,
    /// 401.
    Unauthorized,
    /// 400/413: the request body was not a valid chat request (no latency applied).
    InvalidRequest,
    /// The client went away during the simulated latency (status 0).
    Cancelled,
}

/// One chat request as seen by the mock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Unix time in milliseconds when the request arrived.
    pub at_ms: u64,
    /// The request's `model` (cut to [`MAX_MODEL_NAME_CHARS`]); empty if the body was invalid.
    pub model: String,
    /// How it ended.
    pub outcome: Outcome,
    /// HTTP status sent; 0 when none was (hang, cancelled).
    pub status: u16,
    /// Milliseconds from arrival to the response (for a hang: to the start of the hang).
    pub latency_ms: u64,
    /// Prompt token estimate (see `behavior` module docs).
    pub prompt_tokens: u32,
    /// Completion token estimate of the answer sent (0 for errors).
    pub completion_tokens: u32,
    /// The messages the request carried, when `request_log_messages` is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<LoggedMessage>,
}

/// Bounded, thread-safe log of [`RequestRecord`]s.
#[derive(Debug)]
pub struct RequestLog {
    capacity: usize,
    records: Mutex<VecDeque<RequestRecord>>,
}

impl RequestLog {
    /// An empty log keeping at most `capacity` records (0: keep none).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            records: Mutex::new(VecDeque::new()),
        }
    }

    /// Appends a record, dropping the oldest when full.
    pub fn push(&self, record: RequestRecord) {
        if self.capacity == 0 {
            return;
        }
        let mut records = self.lock();
        while records.len() >= self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// A copy of the records, oldest first, optionally only those for one model.
    pub fn snapshot(&self, model: Option<&str>) -> Vec<RequestRecord> {
        let records = self.lock();
        match model {
            Some(m) => records.iter().filter(|r| r.model == m).cloned().collect(),
            None => records.iter().cloned().collect(),
        }
    }

    /// Removes every record; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut records = self.lock();
        let n = records.len();
        records.clear();
        n
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<RequestRecord>> {
        // A panic while holding this lock cannot leave the deque half-updated in a way that
        // matters for a test log, so recover from poisoning instead of propagating it.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Cuts a model name for the log.
pub fn log_model_name(model: &str) -> String {
    model.chars().take(MAX_MODEL_NAME_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(model: &str, at_ms: u64) -> RequestRecord {
        RequestRecord {
            at_ms,
            model: model.into(),
            outcome: Outcome::Ok,
            status: 200,
            latency_ms: 1,
            prompt_tokens: 2,
            completion_tokens: 3,
            messages: Vec::new(),
        }
    }

    #[test]
    fn ring_buffer_drops_oldest() {
        let log = RequestLog::new(3);
        for i in 0..5 {
            log.push(rec(if i % 2 == 0 { "a" } else { "b" }, i));
        }
        let all: Vec<u64> = log.snapshot(None).iter().map(|r| r.at_ms).collect();
        assert_eq!(all, [2, 3, 4]);
        assert_eq!(log.snapshot(Some("a")).len(), 2);
        assert_eq!(log.clear(), 3);
        assert!(log.snapshot(None).is_empty());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let log = RequestLog::new(0);
        log.push(rec("a", 1));
        assert!(log.snapshot(None).is_empty());
    }

    #[test]
    fn outcome_wire_names() {
        let json = serde_json::to_value(Outcome::ContextLengthExceeded).unwrap();
        assert_eq!(json, "context_length_exceeded");
        assert_eq!(
            serde_json::to_value(Outcome::RateLimited).unwrap(),
            "rate_limited"
        );
        assert_eq!(log_model_name(&"m".repeat(500)).len(), MAX_MODEL_NAME_CHARS);
    }
}
