//! Configuration of `baton mock-llm`: what each simulated model does.
//!
//! One TOML file (or the JSON body of `PUT /mock/models/{name}`) describes, per model name, the
//! latency distribution, error/429/hang/malformed rates and the answer. Every field is optional;
//! [`MockLlmConfig::validate`] checks ranges and reports the offending key path, e.g.
//! `models."cheap-fast".errors[1].rate: must be between 0 and 1, got 1.5`.
//!
//! A `[models.NAME]` section is a complete behaviour: fields it leaves out take the built-in
//! defaults below, not the values of `[default]`. Requests naming a model that has no section
//! get `[default]`.
//!
//! The answer ([`AnswerSpec`]) is one of:
//! - `answer = { echo = true }` (the default): `You said: <last user message>`;
//! - `answer = { canned = "text" }`: always that text;
//! - `answer = { classify = { rules = [ { contains = ["MSA", "invoice"], answer = "complex" } ],
//!   otherwise = "simple", noise_rate = 0.05 } }`: a deterministic stand-in for a cheap
//!   classifier model. The first rule (in order) with a `contains` string occurring in the last
//!   user message (case-insensitive) gives the label, else `otherwise`. With probability
//!   `noise_rate` (default 0, drawn from the request's seeded RNG) the answer is instead an
//!   off-label sentence, `I think this is probably "<label>" but I am not sure.`, so clients that
//!   validate labels see a rejectable answer. `output_tokens` never pads or trims a classify
//!   answer, so a label comes back exactly (JSON mode still wraps it as `{"answer": "<label>"}`
//!   and a client's `max_tokens` still cuts it);
//! - `answer = { json = "valid" | "invalid_then_valid" | "invalid" }`: JSON for the schema the
//!   request asks for (see [`JsonAnswer`]);
//! - `answer = { truncated = true }`, `{ empty = true }`, `{ refusal = "text" }`: the answers a
//!   client must never publish as results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bound applied to every sampled latency and to `max_hang_s`, so a typo or a lognormal
/// tail cannot park a request (and its memory) for hours.
pub const MAX_LATENCY: Duration = Duration::from_secs(600);

/// Default size of the request log ring buffer.
pub const DEFAULT_REQUEST_LOG_CAPACITY: usize = 100_000;

/// Default time a "hang" outcome holds a request before answering 504.
pub const DEFAULT_MAX_HANG_S: u64 = 600;

/// Slack allowed when checking that a model's outcome rates sum to at most 1.
const RATE_SUM_EPSILON: f64 = 1e-9;

/// Why a mock-llm configuration was rejected. Always fatal at start-up; a `PUT` answers 400.
#[derive(Debug, thiserror::Error)]
pub enum MockConfigError {
    /// The config file could not be read.
    #[error("cannot read mock-llm config {path}: {source}")]
    Io {
        /// File that was being read.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type. The message
    /// comes from the TOML parser and shows the key, line and column.
    #[error("invalid mock-llm config: {0}")]
    Toml(#[from] toml::de::Error),
    /// A JSON model behaviour (admin `PUT`) is malformed or has an unknown key.
    #[error("invalid mock-llm model behaviour: {0}")]
    Json(#[from] serde_json::Error),
    /// A value parsed but is out of range.
    #[error("invalid mock-llm config: {key}: {reason}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `models."x".errors[0].status`.
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

/// The whole mock-llm configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockLlmConfig {
    /// Seed for reproducible runs. Request number `n` (in arrival order) draws from an RNG
    /// seeded with `(seed, n)`, so a sequential client sees the same outcomes every run.
    /// Absent: a random seed per server start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Number of [`RequestRecord`](super::RequestRecord)s kept; older ones are dropped.
    /// 0 disables the log.
    pub request_log_capacity: usize,
    /// Whether each logged request keeps the messages it carried (each cut to 16 KiB), so a
    /// test can check what a model saw. Off by default: load tests send large prompts.
    pub request_log_messages: bool,
    /// Longest time a hung request is held (it ends earlier if the client disconnects).
    /// Capped at [`MAX_LATENCY`].
    pub max_hang_s: u64,
    /// Behaviour for model names without their own section.
    pub default: ModelBehavior,
    /// Behaviour per model name (the request's `model` field).
    pub models: BTreeMap<String, ModelBehavior>,
}

impl Default for MockLlmConfig {
    fn default() -> Self {
        Self {
            seed: None,
            request_log_capacity: DEFAULT_REQUEST_LOG_CAPACITY,
            request_log_messages: false,
            max_hang_s: DEFAULT_MAX_HANG_S,
            default: ModelBehavior::default(),
            models: BTreeMap::new(),
        }
    }
}

impl MockLlmConfig {
    /// Parses and validates a TOML configuration.
    pub fn from_toml_str(s: &str) -> Result<Self, MockConfigError> {
        let config: Self = toml::from_str(s)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, MockConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| MockConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Checks every range; the error names the key path.
    pub fn validate(&self) -> Result<(), MockConfigError> {
        if self.max_hang_s > MAX_LATENCY.as_secs() {
            return Err(invalid(
                "max_hang_s",
                format!(
                    "must be at most {}, got {}",
                    MAX_LATENCY.as_secs(),
                    self.max_hang_s
                ),
            ));
        }
        self.default.validate("default")?;
        for (name, behavior) in &self.models {
            behavior.validate(&format!("models.{}", quote_key(name)))?;
        }
        Ok(())
    }

    /// The behaviour for a model name: its own section, else `[default]`.
    pub fn behavior_for(&self, model: &str) -> &ModelBehavior {
        self.models.get(model).unwrap_or(&self.default)
    }

    /// Longest hang, already capped.
    pub fn max_hang(&self) -> Duration {
        Duration::from_secs(self.max_hang_s).min(MAX_LATENCY)
    }
}

/// What one model does with a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelBehavior {
    /// Simulated latency, applied before every outcome (errors too). Default: none.
    pub latency: LatencySpec,
    /// Simulated HTTP errors, each with its own probability.
    pub errors: Vec<ErrorSpec>,
    /// Simulated 429s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<RateLimitSpec>,
    /// Probability of accepting the request and never answering (until the client disconnects
    /// or `max_hang_s` passes, then 504).
    pub hang_rate: f64,
    /// Probability of a 200 whose JSON body is truncated (not valid JSON).
    pub malformed_rate: f64,
    /// The text of successful answers.
    pub answer: AnswerSpec,
    /// With a `json = "valid"` answer: the probability (0..=1) that a first answer (not a
    /// repair) is invalid anyway, as a real model's sometimes are.
    pub invalid_json_rate: f64,
    /// `[min, max]`: pad or trim the answer so its completion-token estimate lands in range.
    /// Not applied to `classify` answers, whose labels must come back exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<[u32; 2]>,
    /// Prompts estimated above this many tokens get 400 `context_length_exceeded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Prompts containing any of these (case-insensitive) get 400 `content_filter`.
    pub content_filter: Vec<String>,
    /// If set, requests must carry `Authorization: Bearer <api_key>`, else 401.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Simulated errors (`errors`) echo the request's `Authorization` header in their message,
    /// as some gateways' error pages do: a client must keep the key out of what it reports.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub echo_auth_in_errors: bool,
}

impl Default for ModelBehavior {
    fn default() -> Self {
        Self {
            latency: LatencySpec::FixedMs(0),
            errors: Vec::new(),
            rate_limited: None,
            hang_rate: 0.0,
            malformed_rate: 0.0,
            answer: AnswerSpec::Echo(true),
            invalid_json_rate: 0.0,
            output_tokens: None,
            context_window: None,
            content_filter: Vec::new(),
            api_key: None,
            echo_auth_in_errors: false,
        }
    }
}

impl ModelBehavior {
    /// Parses one behaviour from JSON (the body of `PUT /mock/models/{name}`) and validates it.
    pub fn from_json_slice(body: &[u8], key: &str) -> Result<Self, MockConfigError> {
        let behavior: Self = serde_json::from_slice(body)?;
        behavior.validate(key)?;
        Ok(behavior)
    }

    /// Checks ranges; `key` is this behaviour's path in the config, used in errors.
    pub fn validate(&self, key: &str) -> Result<(), MockConfigError> {
        self.latency.validate(&format!("{key}.latency"))?;
        let mut sum = 0.0;
        sum += check_rate(&format!("{key}.hang_rate"), self.hang_rate)?;
        sum += check_rate(&format!("{key}.malformed_rate"), self.malformed_rate)?;
        if let Some(rl) = &self.rate_limited {
            sum += check_rate(&format!("{key}.rate_limited.rate"), rl.rate)?;
        }
        for (i, e) in self.errors.iter().enumerate() {
            let at = format!("{key}.errors[{i}]");
            sum += check_rate(&format!("{at}.rate"), e.rate)?;
            if !(400..=599).contains(&e.status) {
                return Err(invalid(
                    format!("{at}.status"),
                    format!("must be an HTTP error status 400..=599, got {}", e.status),
                ));
            }
        }
        if sum > 1.0 + RATE_SUM_EPSILON {
            return Err(invalid(
                key,
                format!(
                    "hang_rate + malformed_rate + rate_limited.rate + errors[].rate must be at most 1, got {sum}"
                ),
            ));
        }
        match &self.answer {
            AnswerSpec::Echo(false) => {
                return Err(invalid(
                    format!("{key}.answer.echo"),
                    "must be true (use `canned = \"...\"` for a fixed answer)",
                ));
            }
            AnswerSpec::Classify(spec) => spec.validate(&format!("{key}.answer.classify"))?,
            AnswerSpec::Truncated(false) | AnswerSpec::Empty(false) => {
                return Err(invalid(format!("{key}.answer"), "the mode must be `true`"));
            }
            AnswerSpec::Echo(true)
            | AnswerSpec::Canned(_)
            | AnswerSpec::Json(_)
            | AnswerSpec::Truncated(true)
            | AnswerSpec::Empty(true)
            | AnswerSpec::Refusal(_) => {}
        }
        check_rate(&format!("{key}.invalid_json_rate"), self.invalid_json_rate)?;
        if let Some([lo, hi]) = self.output_tokens {
            if lo > hi {
                return Err(invalid(
                    format!("{key}.output_tokens"),
                    format!("min must not exceed max, got [{lo}, {hi}]"),
                ));
            }
        }
        if self.context_window == Some(0) {
            return Err(invalid(format!("{key}.context_window"), "must be positive"));
        }
        if let Some(i) = self.content_filter.iter().position(|w| w.is_empty()) {
            return Err(invalid(
                format!("{key}.content_filter[{i}]"),
                "must not be empty",
            ));
        }
        if self.api_key.as_deref() == Some("") {
            return Err(invalid(format!("{key}.api_key"), "must not be empty"));
        }
        Ok(())
    }
}

/// A latency distribution, written `{ fixed_ms = 20 }`, `{ uniform_ms = [50, 500] }` or
/// `{ lognormal = { p50_ms = 800, p99_ms = 4000 } }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum LatencySpec {
    /// Always this many milliseconds.
    FixedMs(u64),
    /// Uniform over `[min, max]` milliseconds, inclusive.
    UniformMs([u64; 2]),
    /// Lognormal with the given median and 99th percentile:
    /// `mu = ln(p50)`, `sigma = (ln(p99) - ln(p50)) / 2.326`.
    Lognormal {
        /// Median latency, milliseconds.
        p50_ms: u64,
        /// 99th-percentile latency, milliseconds.
        p99_ms: u64,
    },
}

impl Default for LatencySpec {
    fn default() -> Self {
        Self::FixedMs(0)
    }
}

impl LatencySpec {
    fn validate(&self, key: &str) -> Result<(), MockConfigError> {
        let max = MAX_LATENCY.as_millis() as u64;
        match *self {
            Self::FixedMs(ms) if ms > max => Err(invalid(
                format!("{key}.fixed_ms"),
                format!("must be at most {max}, got {ms}"),
            )),
            Self::UniformMs([lo, hi]) if lo > hi || hi > max => Err(invalid(
                format!("{key}.uniform_ms"),
                format!("need min <= max <= {max}, got [{lo}, {hi}]"),
            )),
            Self::Lognormal { p50_ms, p99_ms } if p50_ms == 0 || p50_ms > p99_ms || p99_ms > max => {
                Err(invalid(
                    format!("{key}.lognormal"),
                    format!("need 0 < p50_ms <= p99_ms <= {max}, got p50_ms = {p50_ms}, p99_ms = {p99_ms}"),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// One simulated error status and its probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSpec {
    /// HTTP status, 400..=599.
    pub status: u16,
    /// Probability per request, 0..=1.
    pub rate: f64,
}

/// Simulated rate limiting: 429 with an optional `Retry-After` header.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Probability per request, 0..=1.
    pub rate: f64,
    /// `Retry-After` value in seconds; absent means no header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

/// The answer text, written `{ echo = true }`, `{ canned = "text" }` or
/// `{ classify = { rules = [...], otherwise = "label", noise_rate = 0.05 } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum AnswerSpec {
    /// `You said: <last user message, first 200 characters>`. Must be `true`.
    Echo(bool),
    /// Always this text.
    Canned(String),
    /// A label chosen by keyword rules on the last user message, as a classifier model would.
    Classify(ClassifySpec),
    /// JSON for the schema the request asks for (`response_format.json_schema.schema`).
    Json(JsonAnswer),
    /// Half the echo answer, with `finish_reason: "length"` (cut by the token cap). Must be
    /// `true`.
    Truncated(bool),
    /// An empty answer (`content: ""`). Must be `true`.
    Empty(bool),
    /// A refusal: `message.refusal` is this text and `content` is null.
    Refusal(String),
}

/// How a `json` answer relates to the request's schema, written `answer = { json = "valid" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonAnswer {
    /// An instance of the schema (varied by the first user message).
    Valid,
    /// Invalid (a required property missing, or a property of the wrong type) until the request
    /// carries an assistant turn (a client's repair request sends the rejected answer back),
    /// then valid.
    InvalidThenValid,
    /// Never valid.
    Invalid,
}

/// A rule-based stand-in for a classifier model; see [`ClassifySpec::label_for`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifySpec {
    /// Tried in order; the first match gives the label. May be empty.
    #[serde(default)]
    pub rules: Vec<ClassifyRule>,
    /// Label when no rule matches.
    pub otherwise: String,
    /// Probability (0..=1) of answering an off-label sentence instead of the label.
    #[serde(default)]
    pub noise_rate: f64,
}

/// One classification rule: `{ contains = ["MSA", "invoice"], answer = "complex" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRule {
    /// Matches when any of these occurs in the text (case-insensitive substring).
    pub contains: Vec<String>,
    /// Label answered on a match.
    pub answer: String,
}

impl ClassifySpec {
    /// The label for `text`: the first rule with a `contains` string occurring in it
    /// (case-insensitive), else `otherwise`.
    pub fn label_for(&self, text: &str) -> &str {
        let lower = text.to_lowercase();
        self.rules
            .iter()
            .find(|r| r.contains.iter().any(|w| lower.contains(&w.to_lowercase())))
            .map_or(self.otherwise.as_str(), |r| r.answer.as_str())
    }

    fn validate(&self, key: &str) -> Result<(), MockConfigError> {
        check_rate(&format!("{key}.noise_rate"), self.noise_rate)?;
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("{key}.rules[{i}]");
            if rule.contains.is_empty() {
                return Err(invalid(
                    format!("{at}.contains"),
                    "needs at least one string",
                ));
            }
            if let Some(j) = rule.contains.iter().position(String::is_empty) {
                return Err(invalid(format!("{at}.contains[{j}]"), "must not be empty"));
            }
            if rule.answer.is_empty() {
                return Err(invalid(format!("{at}.answer"), "must not be empty"));
            }
        }
        if self.otherwise.is_empty() {
            return Err(invalid(format!("{key}.otherwise"), "must not be empty"));
        }
        Ok(())
    }
}

impl Default for AnswerSpec {
    fn default() -> Self {
        Self::Echo(true)
    }
}

fn check_rate(key: &str, rate: f64) -> Result<f64, MockConfigError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(invalid(key, format!("must be between 0 and 1, got {rate}")))
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> MockConfigError {
    MockConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Quotes a TOML key when it is not a bare key, as a user would write it.
pub(crate) fn quote_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_has_defaults() {
        let c = MockLlmConfig::from_toml_str("").unwrap();
        assert_eq!(c, MockLlmConfig::default());
        assert_eq!(c.request_log_capacity, DEFAULT_REQUEST_LOG_CAPACITY);
        assert_eq!(c.default.answer, AnswerSpec::Echo(true));
    }

    #[test]
    fn full_example_parses() {
        let c = MockLlmConfig::from_toml_str(
            r#"
seed = 42
request_log_capacity = 1000
[default]
latency = { fixed_ms = 20 }
[models."cheap-fast"]
latency = { uniform_ms = [50, 500] }
errors = [ { status = 500, rate = 0.02 }, { status = 503, rate = 0.01 } ]
rate_limited = { rate = 0.05, retry_after_s = 1 }
hang_rate = 0.0
malformed_rate = 0.0
answer = { canned = "hi" }
output_tokens = [20, 200]
context_window = 128000
content_filter = ["forbidden-word"]
api_key = "sk-test"
[models.slow]
latency = { lognormal = { p50_ms = 800, p99_ms = 4000 } }
"#,
        )
        .unwrap();
        assert_eq!(c.seed, Some(42));
        assert_eq!(c.default.latency, LatencySpec::FixedMs(20));
        let m = c.behavior_for("cheap-fast");
        assert_eq!(m.latency, LatencySpec::UniformMs([50, 500]));
        assert_eq!(m.errors[1].status, 503);
        assert_eq!(m.rate_limited.unwrap().retry_after_s, Some(1));
        assert_eq!(m.answer, AnswerSpec::Canned("hi".into()));
        assert_eq!(m.api_key.as_deref(), Some("sk-test"));
        assert_eq!(
            c.behavior_for("slow").latency,
            LatencySpec::Lognormal {
                p50_ms: 800,
                p99_ms: 4000
            }
        );
        assert_eq!(c.behavior_for("unknown"), &c.default);
        // Round trip through JSON (GET /mock/config) and TOML.
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<MockLlmConfig>(&json).unwrap(), c);
        let toml_text = toml::to_string(&c).unwrap();
        assert_eq!(MockLlmConfig::from_toml_str(&toml_text).unwrap(), c);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = MockLlmConfig::from_toml_str("[models.a]\nhang_rat = 0.1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("hang_rat"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = MockLlmConfig::from_toml_str("seed = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("seed"), "{err}");
        let err =
            MockLlmConfig::from_toml_str("[default]\nlatency = { gaussian = 3 }\n").unwrap_err();
        assert!(err.to_string().contains("gaussian"), "{err}");
    }

    #[test]
    fn range_errors_name_the_key_path() {
        let cases = [
            (
                "[models.\"cheap-fast\"]\nerrors = [{status = 500, rate = 0.1}, {status = 503, rate = 1.5}]",
                "models.cheap-fast.errors[1].rate",
            ),
            (
                "[models.\"a b\"]\nerrors = [{status = 200, rate = 0.1}]",
                "models.\"a b\".errors[0].status",
            ),
            ("[default]\nhang_rate = 0.6\nmalformed_rate = 0.6", "default:"),
            (
                "[default]\nlatency = { uniform_ms = [5, 1] }",
                "default.latency.uniform_ms",
            ),
            (
                "[default]\nlatency = { lognormal = { p50_ms = 0, p99_ms = 1 } }",
                "default.latency.lognormal",
            ),
            ("[default]\noutput_tokens = [9, 3]", "default.output_tokens"),
            ("[default]\nanswer = { echo = false }", "default.answer.echo"),
            (
                "[models.\"gpt-4.1-nano\"]\nanswer = { classify = { otherwise = \"s\", noise_rate = 1.5 } }",
                "models.\"gpt-4.1-nano\".answer.classify.noise_rate",
            ),
            (
                "[models.nano]\nanswer = { classify = { otherwise = \"s\", noise_rate = -0.1 } }",
                "models.nano.answer.classify.noise_rate",
            ),
            (
                "[default]\nanswer = { classify = { otherwise = \"\" } }",
                "default.answer.classify.otherwise",
            ),
            (
                "[default]\nanswer = { classify = { rules = [{ contains = [\"a\"], answer = \"x\" }, { contains = [], answer = \"y\" }], otherwise = \"s\" } }",
                "default.answer.classify.rules[1].contains",
            ),
            (
                "[default]\nanswer = { classify = { rules = [{ contains = [\"a\", \"\"], answer = \"x\" }], otherwise = \"s\" } }",
                "default.answer.classify.rules[0].contains[1]",
            ),
            (
                "[default]\nanswer = { classify = { rules = [{ contains = [\"a\"], answer = \"\" }], otherwise = \"s\" } }",
                "default.answer.classify.rules[0].answer",
            ),
            ("[default]\ncontext_window = 0", "default.context_window"),
            ("[default]\ncontent_filter = [\"\"]", "default.content_filter[0]"),
            ("[default]\napi_key = \"\"", "default.api_key"),
            ("max_hang_s = 100000", "max_hang_s"),
        ];
        for (text, key) in cases {
            let err = MockLlmConfig::from_toml_str(text).unwrap_err();
            assert!(
                matches!(err, MockConfigError::Invalid { .. }),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn classify_answer_parses_and_round_trips() {
        let c = MockLlmConfig::from_toml_str(
            r#"
[models."gpt-4.1-nano"]
answer = { classify = { rules = [ { contains = ["MSA", "indemnity", "invoice"], answer = "complex" } ], otherwise = "simple", noise_rate = 0.05 } }
[models.bare]
answer = { classify = { otherwise = "simple" } }
"#,
        )
        .unwrap();
        let want = ClassifySpec {
            rules: vec![ClassifyRule {
                contains: vec!["MSA".into(), "indemnity".into(), "invoice".into()],
                answer: "complex".into(),
            }],
            otherwise: "simple".into(),
            noise_rate: 0.05,
        };
        assert_eq!(
            c.behavior_for("gpt-4.1-nano").answer,
            AnswerSpec::Classify(want)
        );
        let AnswerSpec::Classify(bare) = &c.behavior_for("bare").answer else {
            panic!("bare is not classify");
        };
        assert!(bare.rules.is_empty());
        assert_eq!(bare.noise_rate, 0.0);
        // Round trip through JSON (GET /mock/config, PUT /mock/models/{name}) and TOML.
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<MockLlmConfig>(&json).unwrap(), c);
        let behavior = serde_json::to_vec(c.behavior_for("gpt-4.1-nano")).unwrap();
        assert_eq!(
            &ModelBehavior::from_json_slice(&behavior, "models.x").unwrap(),
            c.behavior_for("gpt-4.1-nano")
        );
        let toml_text = toml::to_string(&c).unwrap();
        assert_eq!(MockLlmConfig::from_toml_str(&toml_text).unwrap(), c);
        // Unknown keys inside classify and its rules are rejected by name.
        for text in [
            "[default]\nanswer = { classify = { otherwise = \"s\", nois_rate = 0.1 } }",
            "[default]\nanswer = { classify = { otherwise = \"s\", rules = [{ contains = [\"a\"], answer = \"x\", nois_rate = 1 }] } }",
        ] {
            let err = MockLlmConfig::from_toml_str(text).unwrap_err();
            assert!(err.to_string().contains("nois_rate"), "{err}");
        }
    }

    #[test]
    fn json_behavior_parses_and_rejects_unknown_fields() {
        let b = ModelBehavior::from_json_slice(
            br#"{"errors":[{"status":503,"rate":1.0}]}"#,
            "models.x",
        )
        .unwrap();
        assert_eq!(b.errors[0].status, 503);
        let err = ModelBehavior::from_json_slice(br#"{"eror":[]}"#, "models.x").unwrap_err();
        assert!(err.to_string().contains("eror"), "{err}");
    }

    #[test]
    fn load_reports_missing_file() {
        let err = MockLlmConfig::load(Path::new("/nonexistent/mock.toml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/mock.toml"), "{err}");
    }
}
