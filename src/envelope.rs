//! The typed messages baton reads and writes: the job envelope, the result envelope, and the
//! decoding of a raw Kafka record into a job (with the error class of every way it can fail).
//!
//! Usage and error classes are the config's shared vocabulary ([`crate::config::vocab`]).
//!
//! Decoding is pure: bytes in, a [`Job`] or a [`DecodeError`] out. The JSON Schema of the job
//! envelope lives in `topics/schemas/job.schema.json`; these structs are its Rust form.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ErrorClass, Role, Sensitivity, Usage};

/// A job as a producer publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Idempotency key; every record about this job carries it.
    pub id: String,
    /// Pipeline name; when present it must match the topic's pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Task type, used by routing (`simple`, `complex`, `classify`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Tenant the job belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Chat messages; either these or `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// Plain input text, sent as one user message; either this or `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Generation parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
    /// Policy constraints; never relaxed by routing or fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Requested response format (OpenAI `response_format` shape), passed to the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Conversation the job belongs to (also the record key, when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Passed through untouched to the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The earlier steps of its pipeline, in order, each with its output: what a step's
    /// templates read as `steps.<name>`. Written by baton when it forwards a job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trail: Vec<TrailEntry>,
    /// The earlier turns of its conversation, restored by the worker from the memory topic
    /// before the job runs (never part of the envelope).
    #[serde(skip)]
    pub memory: Vec<ChatMessage>,
}

/// A conversation's memory, as the compacted memory topic keeps it (key = conversation id):
/// its latest turns, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryRecord {
    /// The conversation.
    pub conversation_id: String,
    /// Its turns, oldest first, each once.
    pub turns: Vec<Turn>,
}

/// One finished turn of a conversation: what the job said and what the model answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The job that made the turn (a redo after a crash replaces it, never doubles it).
    pub job_id: String,
    /// The job's own messages.
    pub messages: Vec<ChatMessage>,
    /// The final answer.
    pub answer: String,
    /// When it finished (RFC 3339).
    pub at: String,
    /// The job's tenant: another tenant's job never sees this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The job's sensitivity: a job allowed less never sees this turn.
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// The job's required residency: a job without the same one never sees this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<String>,
}

impl MemoryRecord {
    /// The turns `job` may see, as chat messages, oldest first: its own turn left out (a job
    /// run again after a crash does not see itself), and every turn its policy forbids (another
    /// tenant's, a more sensitive one, one bound to a residency the job does not require), so
    /// a policy constraint holds for the whole prompt.
    pub fn messages_for(&self, job: &Job) -> Vec<ChatMessage> {
        let residency = job.policy.as_ref().and_then(|p| p.residency.as_ref());
        self.turns
            .iter()
            .filter(|t| t.job_id != job.id)
            .filter(|t| t.tenant == job.tenant && t.sensitivity <= job.sensitivity())
            .filter(|t| t.residency.is_none() || t.residency.as_ref() == residency)
            .flat_map(|t| {
                t.messages
                    .iter()
                    .cloned()
                    .chain(std::iter::once(ChatMessage {
                        role: Role::Assistant,
                        content: t.answer.clone(),
                    }))
            })
            .collect()
    }

    /// Adds `turn` (replacing an earlier one of the same job), then keeps the newest
    /// `max_turns` within `max_bytes` of text.
    pub fn append(&mut self, turn: Turn, max_turns: usize, max_bytes: usize) {
        self.turns.retain(|t| t.job_id != turn.job_id);
        self.turns.push(turn);
        let excess = self.turns.len().saturating_sub(max_turns.max(1));
        self.turns.drain(..excess);
        let size =
            |t: &Turn| t.answer.len() + t.messages.iter().map(|m| m.content.len()).sum::<usize>();
        let mut total: usize = self.turns.iter().map(size).sum();
        while total > max_bytes && self.turns.len() > 1 {
            total -= size(&self.turns[0]);
            self.turns.remove(0);
        }
    }
}

/// One finished step of a pipeline, as the trail carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrailEntry {
    /// Step name.
    pub step: String,
    /// Config name of the model that answered.
    pub model: String,
    /// Provider of that model.
    pub provider: String,
    /// A/B variant, when the step's route has variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Usage of the answering call.
    pub usage: Usage,
    /// Cost of the step, every billed call of every round, USD.
    pub cost_usd: f64,
    /// Wall time of the step's answering round, milliseconds.
    pub latency_ms: u64,
    /// Provider calls made for the step.
    pub attempts: u32,
    /// The answer.
    pub output: Output,
}

/// A tool call in a model's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments, as the JSON text the model wrote.
    pub arguments: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

/// Generation parameters a job may set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Output token cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Seed, for providers that support it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
}

/// Policy constraints of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Data sensitivity; `internal` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<Sensitivity>,
    /// Required residency tag (`eu`, `us`...); an `on_prem` model satisfies any residency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<String>,
    /// Cost ceiling for the job, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Latency ceiling for the job, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<u64>,
}

impl Job {
    /// The job's sensitivity, `internal` when it does not say.
    pub fn sensitivity(&self) -> Sensitivity {
        self.policy
            .as_ref()
            .and_then(|p| p.sensitivity)
            .unwrap_or(Sensitivity::Internal)
    }

    /// The messages to send: `messages`, or `input` as one user message.
    pub fn chat_messages(&self) -> Vec<ChatMessage> {
        match (&self.messages, &self.input) {
            (Some(m), _) => m.clone(),
            (None, Some(text)) => vec![ChatMessage {
                role: Role::User,
                content: text.clone(),
            }],
            (None, None) => Vec::new(),
        }
    }
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The answer text.
    pub text: String,
    /// The answer parsed as JSON, when it is JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// Why the model stopped (`stop`, `tool_calls`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Tool calls the model made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// How the job was routed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteDecision {
    /// The route's name.
    pub route: String,
    /// The class the job was given.
    pub class: String,
    /// What gave the class: a rule's name, `classifier`, or `default` (with why).
    pub rule: String,
    /// The A/B variant, when the route has variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The classification call, when the route asked its classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierCall>,
    /// Prompt tokens of the first candidate, counted with its tokenizer.
    pub prompt_tokens: u64,
    /// Whether that count is an estimate (a model of a vendor whose tokenizer baton does not
    /// have; its provider's reported usage is what is billed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_tokens_estimated: bool,
    /// The allowed candidates, in the order they would be tried.
    pub candidates: Vec<String>,
    /// Estimated cost of the call on each candidate, in USD, in candidate order.
    pub estimated_cost_usd: Vec<f64>,
    /// Models dropped by a constraint, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedModel>,
}

/// The classification call of a route's classifier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassifierCall {
    /// The model asked.
    pub model: String,
    /// Its answer (cut to 64 characters), when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Whether the answer was one of the labels.
    pub valid: bool,
    /// What went wrong, when it did: off-label answer, provider error, not allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the call cost, in USD (part of the job's cost).
    pub cost_usd: f64,
}

/// A model a hard constraint removed from the candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedModel {
    /// The model.
    pub model: String,
    /// Why.
    pub reason: String,
}

/// What baton publishes when a step finishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job id.
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Step name.
    pub step: String,
    /// Tenant, copied from the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Conversation, copied from the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The answer.
    pub output: Output,
    /// Config name of the model that answered.
    pub model: String,
    /// Provider of that model.
    pub provider: String,
    /// A/B variant, when the route has variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Usage of the answering call.
    pub usage: Usage,
    /// Cost of every billed attempt of this step, in USD.
    pub cost_usd: f64,
    /// Wall time of the step, from pick-up to answer, in milliseconds.
    pub latency_ms: u64,
    /// Provider calls made for this step, over every round.
    pub attempts: u32,
    /// Rounds the job spent waiting in retry tiers before this answer.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retries: u32,
    /// The routing decision.
    pub route: RouteDecision,
    /// When the worker picked the job up (RFC 3339).
    pub started_at: String,
    /// When the answer was ready (RFC 3339).
    pub finished_at: String,
    /// Copied from the job, untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// What the whole job cost, every step and round of its pipeline, USD.
    #[serde(default)]
    pub total_cost_usd: f64,
    /// For a pipeline of several steps, the final result's trail: every step, this one last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trail: Vec<TrailEntry>,
}

/// Where a job stands on a step, as `baton.status` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Published to the step's topic, not picked up yet.
    Queued,
    /// A worker is running it.
    Running,
    /// Waiting in a retry tier for its next round.
    Retrying,
    /// The step answered (for the last step: the job is finished).
    Done,
    /// Sent to a person (the review topic): the job needs a decision.
    Failed,
    /// Dead-lettered.
    Dead,
}

impl JobState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
        }
    }

    /// Whether the job will not move on by itself.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Dead)
    }
}

/// One update on `baton.status` (key = job id; compaction keeps each job's latest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The job id.
    pub job_id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// The step the job is on.
    pub step: String,
    /// Where it stands there.
    pub state: JobState,
    /// When it got there (RFC 3339).
    pub at: String,
    /// The same, Unix milliseconds.
    pub at_ms: u64,
    /// Provider calls made on this step so far, over every round.
    pub attempts: u32,
    /// The last error's class, when the step failed a round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// The last error (never the prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The model that answered, or the last one tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// When a retrying job's next round is due (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<u64>,
    /// The pipeline's steps the job has finished, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps_done: Vec<String>,
}

/// Why a record could not be decoded into a job. Every variant dead-letters the record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// See [`ErrorClass::EmptyPayload`].
    #[error("record has no value")]
    Empty,
    /// See [`ErrorClass::PayloadTooLarge`].
    #[error("payload is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Actual size.
        size: usize,
        /// `worker.max_payload_bytes`.
        limit: usize,
    },
    /// See [`ErrorClass::InvalidUtf8`].
    #[error("payload is not valid UTF-8: {0}")]
    Utf8(String),
    /// See [`ErrorClass::InvalidJson`].
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    /// See [`ErrorClass::InvalidEnvelope`].
    #[error("not a job envelope: {0}")]
    Envelope(String),
    /// See [`ErrorClass::UnknownPipeline`].
    #[error("{0}")]
    UnknownPipeline(String),
}

impl DecodeError {
    /// The dead-letter error class.
    pub fn class(&self) -> ErrorClass {
        match self {
            DecodeError::Empty => ErrorClass::EmptyPayload,
            DecodeError::TooLarge { .. } => ErrorClass::PayloadTooLarge,
            DecodeError::Utf8(_) => ErrorClass::InvalidUtf8,
            DecodeError::Json(_) => ErrorClass::InvalidJson,
            DecodeError::Envelope(_) => ErrorClass::InvalidEnvelope,
            DecodeError::UnknownPipeline(_) => ErrorClass::UnknownPipeline,
        }
    }
}

/// Decodes a record value into a job for the step's `pipeline`.
///
/// Checks, in order: presence, size, UTF-8, JSON syntax, envelope shape (types, a non-empty
/// string `id`, `messages` or `input`), and that a `pipeline` field, if any, names this pipeline.
pub fn decode_job(
    payload: Option<&[u8]>,
    max_bytes: usize,
    pipeline: &str,
    known_pipelines: &[String],
) -> Result<Job, DecodeError> {
    let bytes = payload.ok_or(DecodeError::Empty)?;
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::Utf8(e.to_string()))?;
    let job: Job = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeError::Envelope(e.to_string()),
        _ => DecodeError::Json(e.to_string()),
    })?;
    if job.id.trim().is_empty() {
        return Err(DecodeError::Envelope(
            "`id` must be a non-empty string".into(),
        ));
    }
    match (&job.messages, &job.input) {
        (None, None) => {
            return Err(DecodeError::Envelope(
                "a job needs `messages` or `input`".into(),
            ))
        }
        (Some(m), _) if m.is_empty() => {
            return Err(DecodeError::Envelope("`messages` must not be empty".into()))
        }
        _ => {}
    }
    if let Some(c) = job.policy.as_ref().and_then(|p| p.max_cost_usd) {
        if c < 0.0 {
            return Err(DecodeError::Envelope(format!(
                "`policy.max_cost_usd` must not be negative, got {c}"
            )));
        }
    }
    if let Some(p) = &job.pipeline {
        if p != pipeline {
            let why = if known_pipelines.iter().any(|k| k == p) {
                format!("job names pipeline {p:?} but arrived on a topic of pipeline {pipeline:?}")
            } else {
                format!("unknown pipeline {p:?}")
            };
            return Err(DecodeError::UnknownPipeline(why));
        }
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Job, DecodeError> {
        decode_job(
            Some(bytes),
            1024,
            "support",
            &["support".into(), "other".into()],
        )
    }

    #[test]
    fn a_minimal_job_decodes() {
        let job = decode(br#"{"id":"j1","input":"hello"}"#).unwrap();
        assert_eq!(job.id, "j1");
        assert_eq!(job.chat_messages()[0].content, "hello");
        assert_eq!(job.sensitivity(), Sensitivity::Internal);
    }

    #[test]
    fn unknown_fields_are_tolerated_and_metadata_kept() {
        let job = decode(br#"{"id":"j1","input":"x","future":1,"metadata":{"a":[1,2]}}"#).unwrap();
        assert_eq!(job.metadata, Some(serde_json::json!({"a":[1,2]})));
    }

    #[test]
    fn each_bad_input_gets_its_class() {
        let cases: Vec<(&[u8], ErrorClass)> = vec![
            (b"\xff\xfe{}", ErrorClass::InvalidUtf8),
            (b"{not json", ErrorClass::InvalidJson),
            (b"", ErrorClass::InvalidJson),
            (br#"{"input":"x"}"#, ErrorClass::InvalidEnvelope),
            (br#"{"id":42,"input":"x"}"#, ErrorClass::InvalidEnvelope),
            (br#"{"id":"","input":"x"}"#, ErrorClass::InvalidEnvelope),
            (br#"{"id":"a"}"#, ErrorClass::InvalidEnvelope),
            (
                br#"{"id":"a","input":"x","params":{"max_tokens":"many"}}"#,
                ErrorClass::InvalidEnvelope,
            ),
            (
                br#"{"id":"a","input":"x","policy":{"sensitivity":"secret"}}"#,
                ErrorClass::InvalidEnvelope,
            ),
            (br#"[1,2]"#, ErrorClass::InvalidEnvelope),
            (
                br#"{"id":"a","input":"x","pipeline":"nope"}"#,
                ErrorClass::UnknownPipeline,
            ),
            (
                br#"{"id":"a","input":"x","pipeline":"other"}"#,
                ErrorClass::UnknownPipeline,
            ),
        ];
        for (bytes, class) in cases {
            let got = decode(bytes).expect_err(&String::from_utf8_lossy(bytes));
            assert_eq!(
                got.class(),
                class,
                "{}: {got}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn oversized_and_missing_payloads() {
        let big = vec![b' '; 2000];
        assert_eq!(
            decode(&big).unwrap_err().class(),
            ErrorClass::PayloadTooLarge
        );
        let none = decode_job(None, 10, "support", &[]).unwrap_err();
        assert_eq!(none.class(), ErrorClass::EmptyPayload);
    }
}
