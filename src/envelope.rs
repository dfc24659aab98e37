//! The typed messages baton reads and writes: the job envelope, the result envelope, and the
//! decoding of a raw Kafka record into a job (with the error class of every way it can fail).
//!
//! Usage and error classes are the config's shared vocabulary ([`crate::config::vocab`]).
//!
//! Decoding is pure: bytes in, a [`Job`] or a [`DecodeError`] out. The JSON Schema of the job
//! envelope, `topics/schemas/job.schema.json`, is the contract: the decoder checks a payload
//! against it (built in) before it reads it into these structs, its Rust form, so it accepts
//! exactly what the schema accepts. serde alone is laxer than the schema: a derived struct
//! also takes a JSON array (`"messages": [["user","hi"]]`), an `Option` takes `null`, an
//! enum takes `{"user": null}`.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::vocab::whole;
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
    #[serde(deserialize_with = "whole::deserialize")]
    pub latency_ms: u64,
    /// Provider calls made for the step.
    #[serde(deserialize_with = "whole::deserialize")]
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::option"
    )]
    pub max_tokens: Option<u32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Seed, for providers that support it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::option"
    )]
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::option"
    )]
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
    /// Wall time of the step's answering round, from pick-up to answer, in milliseconds.
    pub latency_ms: u64,
    /// How long the answering provider call took, in milliseconds.
    #[serde(default)]
    pub provider_latency_ms: u64,
    /// The job's whole time, from its first consumption (at any step) to this answer, over
    /// every step, round and retry-tier wait, in milliseconds.
    #[serde(default)]
    pub total_ms: u64,
    /// How long the job waited in its input topic before it was first consumed (from the
    /// record's timestamp), in milliseconds.
    #[serde(default)]
    pub queue_ms: u64,
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
    #[error("record has no value, or a zero-byte one")]
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
    /// The payload starts with a UTF-8 byte order mark, which JSON forbids (RFC 8259 §8.1);
    /// class [`ErrorClass::InvalidJson`]. Named apart because the mark is invisible in most
    /// tools and the producer's fix is one setting (write UTF-8 without BOM).
    #[error("payload starts with a UTF-8 byte order mark (BOM, bytes EF BB BF): JSON must not; have the producer write UTF-8 without BOM")]
    Bom,
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
            DecodeError::Bom | DecodeError::Json(_) => ErrorClass::InvalidJson,
            DecodeError::Envelope(_) => ErrorClass::InvalidEnvelope,
            DecodeError::UnknownPipeline(_) => ErrorClass::UnknownPipeline,
        }
    }
}

/// The job envelope's JSON Schema, the contract the decoder enforces.
pub const JOB_SCHEMA: &str = include_str!("../topics/schemas/job.schema.json");

/// [`JOB_SCHEMA`], compiled once. It is part of the binary and every decoder test compiles
/// it, so failing here is a build defect, not bad input.
static JOB_VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(JOB_SCHEMA).expect("job.schema.json is JSON");
    jsonschema::validator_for(&schema).expect("job.schema.json is a valid JSON Schema")
});

/// Decodes a record value into a job for the step's `pipeline`.
///
/// Checks, in order: presence (a missing or zero-byte value), size, then the envelope
/// ([`decode_envelope`]), then that a `pipeline` field, if any, names this pipeline.
pub fn decode_job(
    payload: Option<&[u8]>,
    max_bytes: usize,
    pipeline: &str,
    known_pipelines: &[String],
) -> Result<Job, DecodeError> {
    let bytes = payload
        .filter(|b| !b.is_empty())
        .ok_or(DecodeError::Empty)?;
    if bytes.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    let job = decode_envelope(bytes)?;
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

/// Decodes a job envelope: UTF-8 without a byte order mark, JSON, valid against
/// [`JOB_SCHEMA`] (a JSON object with a non-blank string `id`, `messages` or `input`, every
/// field of its type...), then read into a [`Job`].
pub fn decode_envelope(bytes: &[u8]) -> Result<Job, DecodeError> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(DecodeError::Bom);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::Utf8(e.to_string()))?;
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    JOB_VALIDATOR
        .validate(&value)
        .map_err(|e| DecodeError::Envelope(schema_violation(&e)))?;
    // The schema passed, so this fails only where a Rust type is narrower than the schema
    // says (none known: the corpus test in tests/schemas.rs looks for such gaps).
    serde_json::from_value(value).map_err(|e| DecodeError::Envelope(e.to_string()))
}

/// What a schema violation says, where: `` `messages[0].role`: must be one of [...] ``. The
/// offending value is masked: it may be a prompt, and this text goes into dead-letter
/// headers and status records.
fn schema_violation(e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as Kind;
    use jsonschema::paths::LocationSegment;
    let mut at = String::new();
    for segment in e.instance_path().segments() {
        match segment {
            LocationSegment::Property(p) if at.is_empty() => at.push_str(&p),
            LocationSegment::Property(p) => {
                at.push('.');
                at.push_str(&p);
            }
            LocationSegment::Index(i) => at.push_str(&format!("[{i}]")),
        }
    }
    let what = match e.kind() {
        Kind::AnyOf { .. } if at.is_empty() => "a job needs `messages` or `input`".to_string(),
        Kind::Type { .. } if at.is_empty() => {
            let kind = match e.instance().as_ref() {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                Value::Null => "null",
                Value::Object(_) => "an object",
            };
            format!("a job must be a JSON object, not {kind}")
        }
        // The crate's own text shortens the list ("or 2 other candidates"); a closed
        // vocabulary is short, and a producer needs all of it.
        Kind::Enum { options } => format!("must be one of {options}"),
        _ => e.masked_with("the value").to_string(),
    };
    if at.is_empty() {
        what
    } else {
        format!("`{at}`: {what}")
    }
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
            (b" ", ErrorClass::InvalidJson),
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

    #[test]
    fn a_zero_byte_value_is_an_empty_payload() {
        let e = decode(b"").unwrap_err();
        assert_eq!(e.class(), ErrorClass::EmptyPayload, "{e}");
    }

    #[test]
    fn a_byte_order_mark_is_named() {
        let e = decode(b"\xEF\xBB\xBF{\"id\":\"a\",\"input\":\"x\"}").unwrap_err();
        assert_eq!(e.class(), ErrorClass::InvalidJson);
        assert!(e.to_string().contains("byte order mark (BOM"), "{e}");
    }

    /// serde reads a struct from a JSON array too (its fields in order); the schema does not.
    #[test]
    fn a_job_and_everything_in_it_are_json_objects() {
        for bytes in [
            br#"["a", null, null, null, [{"role":"user","content":"hi"}]]"# as &[u8],
            br#"{"id":"a","messages":[["user","hi"]]}"#,
            br#"{"id":"a","input":"x","params":[0.2, 100]}"#,
            br#"{"id":"a","input":"x","policy":["public"]}"#,
            br#""a job""#,
            b"null",
        ] {
            let e = decode(bytes).expect_err(&String::from_utf8_lossy(bytes));
            assert_eq!(e.class(), ErrorClass::InvalidEnvelope, "{e}");
        }
        let e = decode(br#"[{"id":"a","input":"x"}]"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a job envelope: a job must be a JSON object, not an array"
        );
    }

    #[test]
    fn roles_and_sensitivities_are_closed_vocabularies() {
        for bytes in [
            br#"{"id":"a","messages":[{"role":"admin","content":"hi"}]}"# as &[u8],
            br#"{"id":"a","messages":[{"role":"User","content":"hi"}]}"#,
            br#"{"id":"a","messages":[{"role":7,"content":"hi"}]}"#,
            br#"{"id":"a","messages":[{"role":{"user":null},"content":"hi"}]}"#,
            br#"{"id":"a","input":"x","policy":{"sensitivity":17}}"#,
            br#"{"id":"a","input":"x","policy":{"sensitivity":{"public":null}}}"#,
        ] {
            let e = decode(bytes).expect_err(&String::from_utf8_lossy(bytes));
            assert_eq!(
                e.class(),
                ErrorClass::InvalidEnvelope,
                "{}: {e}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// `null` is not a string: an optional field is left out, not set to `null`.
    #[test]
    fn null_is_not_a_value_for_a_typed_field() {
        for field in ["pipeline", "task", "tenant", "params", "policy", "trail"] {
            let json = format!(r#"{{"id":"a","input":"x","{field}":null}}"#);
            let e = decode(json.as_bytes()).expect_err(&json);
            assert_eq!(e.class(), ErrorClass::InvalidEnvelope, "{json}: {e}");
        }
        let ok = decode(br#"{"id":"a","input":"x","metadata":null}"#);
        assert!(ok.is_ok(), "metadata is any JSON: {ok:?}");
    }

    #[test]
    fn whole_numbers_written_as_floats_are_integers() {
        let job = decode(br#"{"id":"a","input":"x","params":{"max_tokens":64.0}}"#).unwrap();
        assert_eq!(job.params.unwrap().max_tokens, Some(64));
        let e = decode(br#"{"id":"a","input":"x","params":{"max_tokens":64.5}}"#).unwrap_err();
        assert_eq!(e.class(), ErrorClass::InvalidEnvelope);
    }

    /// The reason goes into dead-letter headers and status records: it says where and what,
    /// never the value (a prompt, maybe).
    #[test]
    fn a_schema_violation_names_the_field_not_the_value() {
        let e = decode(br#"{"id":"a","messages":[{"role":"user","content":["secret prompt"]}]}"#)
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("`messages[0].content`"), "{text}");
        assert!(!text.contains("secret prompt"), "{text}");
        let e = decode(br#"{"id":"a","messages":[{"role":"admin","content":"x"}]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"not a job envelope: `messages[0].role`: must be one of ["system","user","assistant","tool"]"#
        );
        let e = decode(br#"{"id":"a","metadata":{}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a job envelope: a job needs `messages` or `input`"
        );
    }
}
