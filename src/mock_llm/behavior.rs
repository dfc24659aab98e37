//! The pure core of the mock: which outcome a request gets, how long it waits, what it answers
//! and how many tokens that counts as. No I/O and no clocks; randomness comes in as arguments,
//! so every rule here is unit-tested with fixed draws.
//!
//! Token estimate (documented contract, deterministic for the same text):
//! `estimate_tokens(text) = ceil(chars / 4)` (Unicode scalar values, roughly OpenAI's English
//! average); `prompt_tokens = 3 + Σ over messages (4 + estimate_tokens(content))`, the same
//! per-message overhead (4) and reply priming (3) as OpenAI's cookbook counter;
//! `completion_tokens = estimate_tokens(answer)`.
//!
//! Answer text: echo, canned or classify (see [`AnswerSpec`]). A classify answer is the label
//! of the first matching rule, or with probability `noise_rate` (decided by a uniform draw
//! passed in, from the request's seeded RNG) the off-label [`classify_noise_text`]; unlike echo
//! and canned it is never fitted to `output_tokens`.

use std::time::Duration;

use rand::Rng;
use rand_distr::StandardNormal;
use serde::Deserialize;
use serde_json::Value;

use super::config::{AnswerSpec, JsonAnswer, LatencySpec, ModelBehavior, MAX_LATENCY};

/// Tokens added per message for role and framing.
pub const TOKENS_PER_MESSAGE: u32 = 4;
/// Tokens added once per prompt to prime the reply.
pub const TOKENS_REPLY_PRIMING: u32 = 3;
/// The z-score of the 99th percentile of a standard normal.
const Z_P99: f64 = 2.326;
/// Longest slice of the last user message an echo answer repeats.
const ECHO_MAX_CHARS: usize = 200;
/// Text appended (cyclically) to reach `output_tokens.min`.
const FILLER: &str = " lorem ipsum dolor sit amet consectetur adipiscing elit";

/// One chat message as far as the mock cares: `content` may be a string, an array of
/// content parts (`[{"type":"text","text":"..."}]`) or null.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`...
    #[serde(default)]
    pub role: String,
    /// Message content in any of the OpenAI shapes.
    #[serde(default)]
    pub content: Value,
}

impl ChatMessage {
    /// The text of the message: the string, or the `text` parts joined by newlines.
    pub fn text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

/// Token estimate of one text: `ceil(chars / 4)`.
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count();
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

/// Token estimate of a prompt; see the module docs for the formula.
pub fn prompt_tokens(messages: &[ChatMessage]) -> u32 {
    messages.iter().fold(TOKENS_REPLY_PRIMING, |acc, m| {
        acc.saturating_add(TOKENS_PER_MESSAGE)
            .saturating_add(estimate_tokens(&m.text()))
    })
}

/// What the mock does with one request, decided after the simulated latency.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 400 `context_length_exceeded`.
    ContextLengthExceeded {
        /// The model's window.
        limit: u32,
    },
    /// 400 `content_filter`.
    ContentFilter,
    /// Never answer.
    Hang,
    /// 429, with `Retry-After` if set.
    RateLimited {
        /// Seconds for the `Retry-After` header.
        retry_after_s: Option<u64>,
    },
    /// A configured error status.
    Error {
        /// HTTP status.
        status: u16,
    },
    /// 200 with a truncated JSON body.
    Malformed,
    /// 200 with a normal completion.
    Ok,
}

/// Picks the random outcome for a uniform draw `u` in `[0, 1)`, by walking the cumulative
/// rates in a fixed order: hang, rate_limited, errors (in order), malformed; the rest is ok.
pub fn choose_outcome(b: &ModelBehavior, u: f64) -> Decision {
    let mut edge = b.hang_rate;
    if u < edge {
        return Decision::Hang;
    }
    if let Some(rl) = &b.rate_limited {
        edge += rl.rate;
        if u < edge {
            return Decision::RateLimited {
                retry_after_s: rl.retry_after_s,
            };
        }
    }
    for e in &b.errors {
        edge += e.rate;
        if u < edge {
            return Decision::Error { status: e.status };
        }
    }
    edge += b.malformed_rate;
    if u < edge {
        return Decision::Malformed;
    }
    Decision::Ok
}

/// Full decision: deterministic checks first (auth, context window, content filter), then the
/// random draw. `bearer` is the token from the `Authorization` header, `prompt_text` all message
/// texts joined.
pub fn decide(
    b: &ModelBehavior,
    bearer: Option<&str>,
    prompt_text: &str,
    prompt_tokens: u32,
    u: f64,
) -> Decision {
    if let Some(key) = &b.api_key {
        if bearer != Some(key.as_str()) {
            return Decision::Unauthorized;
        }
    }
    if let Some(limit) = b.context_window {
        if prompt_tokens > limit {
            return Decision::ContextLengthExceeded { limit };
        }
    }
    if !b.content_filter.is_empty() {
        let lower = prompt_text.to_lowercase();
        if b.content_filter
            .iter()
            .any(|w| lower.contains(&w.to_lowercase()))
        {
            return Decision::ContentFilter;
        }
    }
    choose_outcome(b, u)
}

/// `(mu, sigma)` of the lognormal with the given median and 99th percentile (milliseconds).
pub fn lognormal_params(p50_ms: u64, p99_ms: u64) -> (f64, f64) {
    let mu = (p50_ms.max(1) as f64).ln();
    let sigma = ((p99_ms.max(1) as f64).ln() - mu).max(0.0) / Z_P99;
    (mu, sigma)
}

impl LatencySpec {
    /// Draws one latency, capped at [`MAX_LATENCY`].
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let ms = match *self {
            Self::FixedMs(ms) => ms as f64,
            Self::UniformMs([lo, hi]) => rng.gen_range(lo..=hi.max(lo)) as f64,
            Self::Lognormal { p50_ms, p99_ms } => {
                let (mu, sigma) = lognormal_params(p50_ms, p99_ms);
                let z: f64 = rng.sample(StandardNormal);
                (mu + sigma * z).exp()
            }
        };
        Duration::from_secs_f64(ms.max(0.0) / 1000.0).min(MAX_LATENCY)
    }
}

/// What the mock answers on a 200: content (absent for a refusal), a refusal, and why it
/// stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// `message.content`.
    pub content: Option<String>,
    /// `message.refusal`.
    pub refusal: Option<String>,
    /// `finish_reason`.
    pub finish_reason: &'static str,
}

/// The reply to `messages` under `b`: the special modes (JSON for the request's schema,
/// truncated, empty, refusal), else [`answer_text`]. `response_format` is the request's.
pub fn reply(
    b: &ModelBehavior,
    messages: &[ChatMessage],
    response_format: Option<&Value>,
    u: f64,
) -> Reply {
    let text = |content: String, finish_reason| Reply {
        content: Some(content),
        refusal: None,
        finish_reason,
    };
    match &b.answer {
        AnswerSpec::Json(mode) => {
            let slip = u < b.invalid_json_rate;
            text(json_answer(*mode, slip, messages, response_format), "stop")
        }
        AnswerSpec::Truncated(_) => {
            let full = echo_text(messages);
            let half: String = full.chars().take(full.chars().count() / 2).collect();
            text(half, "length")
        }
        AnswerSpec::Empty(_) => text(String::new(), "stop"),
        AnswerSpec::Refusal(why) => Reply {
            content: None,
            refusal: Some(why.clone()),
            finish_reason: "stop",
        },
        _ => {
            let json_mode = matches!(
                response_format
                    .and_then(|f| f.get("type"))
                    .and_then(Value::as_str),
                Some("json_object" | "json_schema")
            );
            text(answer_text(b, messages, json_mode, u), "stop")
        }
    }
}

/// A `json` answer: an instance of the request's schema (varied by the first user message), or
/// an invalid one, as `mode` says (a valid-mode first answer that `slip`s is invalid too).
fn json_answer(
    mode: JsonAnswer,
    slip: bool,
    messages: &[ChatMessage],
    response_format: Option<&Value>,
) -> String {
    let schema = response_format
        .and_then(|f| f.pointer("/json_schema/schema"))
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}));
    // Varied by the first user message: a repair request (same errors for every job) still gets
    // the answer its original question would have.
    let first_user = messages
        .iter()
        .find(|m| m.role == "user")
        .map(ChatMessage::text);
    let seed = xxhash_rust::xxh3::xxh3_64(first_user.unwrap_or_default().as_bytes());
    let valid = crate::config::schema::sample(&schema, seed);
    let repairing = messages.iter().any(|m| m.role == "assistant");
    let invalid = match mode {
        JsonAnswer::Valid => slip && !repairing,
        JsonAnswer::InvalidThenValid => !repairing,
        JsonAnswer::Invalid => true,
    };
    if invalid {
        invalid_instance(&schema, valid).to_string()
    } else {
        valid.to_string()
    }
}

/// `valid` made invalid for `schema`: its first required property removed, else its first
/// property given a value of the wrong type, else a bare string where an object belongs.
fn invalid_instance(schema: &Value, mut valid: Value) -> Value {
    let first_required = schema
        .get("required")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(Value::as_str);
    let Some(obj) = valid.as_object_mut() else {
        return Value::String("not what the schema asks for".into());
    };
    if let Some(key) = first_required {
        obj.remove(key);
        return valid;
    }
    match obj.iter_mut().next() {
        Some((_, v)) => {
            *v = if v.is_string() {
                serde_json::json!(12345)
            } else {
                serde_json::json!("wrong type")
            };
            valid
        }
        None => Value::String("not what the schema asks for".into()),
    }
}

/// The answer text before any `max_tokens` cut: echo or canned fitted to `output_tokens`, or a
/// classify label (never fitted, so it comes back exactly); in JSON mode wrapped as
/// `{"answer": "..."}` unless it already is JSON (then untouched). `u` is a uniform draw in
/// `[0, 1)` deciding classify noise (`u < noise_rate`).
pub fn answer_text(b: &ModelBehavior, messages: &[ChatMessage], json_mode: bool, u: f64) -> String {
    let (raw, fit) = match &b.answer {
        AnswerSpec::Canned(text) => (text.clone(), true),
        // The special modes answer through [`reply`]; here they read as echo.
        AnswerSpec::Echo(_)
        | AnswerSpec::Json(_)
        | AnswerSpec::Truncated(_)
        | AnswerSpec::Empty(_)
        | AnswerSpec::Refusal(_) => (echo_text(messages), true),
        AnswerSpec::Classify(spec) => {
            let label = spec.label_for(&last_user_text(messages));
            let text = if u < spec.noise_rate {
                classify_noise_text(label)
            } else {
                label.to_string()
            };
            (text, false)
        }
    };
    if json_mode && serde_json::from_str::<Value>(&raw).is_ok() {
        return raw;
    }
    let fitted = match b.output_tokens {
        Some(range) if fit => fit_tokens(&raw, range),
        _ => raw,
    };
    if json_mode {
        serde_json::json!({ "answer": fitted }).to_string()
    } else {
        fitted
    }
}

/// The off-label answer of a noisy classifier: mentions `label` but is not a label, so a client
/// validating against its label set rejects it.
pub fn classify_noise_text(label: &str) -> String {
    format!("I think this is probably \"{label}\" but I am not sure.")
}

/// The text of the last `user` message, or empty if there is none.
fn last_user_text(messages: &[ChatMessage]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(ChatMessage::text)
        .unwrap_or_default()
}

/// `You said: <last user message, whitespace collapsed, first 200 chars>`.
pub fn echo_text(messages: &[ChatMessage]) -> String {
    let last = last_user_text(messages);
    let collapsed = last.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "You said nothing.".to_string();
    }
    let short: String = collapsed.chars().take(ECHO_MAX_CHARS).collect();
    format!("You said: {short}")
}

/// Pads (with filler words) or trims `text` so `estimate_tokens` lands in `[min, max]`.
/// Text already in range is returned unchanged.
pub fn fit_tokens(text: &str, [min, max]: [u32; 2]) -> String {
    let tokens = estimate_tokens(text);
    if tokens > max {
        truncate_to_tokens(text, max)
    } else if tokens < min {
        let want_chars = min as usize * 4;
        let have = text.chars().count();
        let mut out = text.to_string();
        out.extend(FILLER.chars().cycle().take(want_chars.saturating_sub(have)));
        out
    } else {
        text.to_string()
    }
}

/// The longest prefix of `text` whose estimate is at most `tokens`.
pub fn truncate_to_tokens(text: &str, tokens: u32) -> String {
    text.chars().take(tokens as usize * 4).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_llm::config::{ClassifyRule, ClassifySpec, ErrorSpec, RateLimitSpec};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: Value::String(content.into()),
        }
    }

    #[test]
    fn token_estimate_is_ceil_chars_over_4() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("ééééé"), 2, "counts chars, not bytes");
        let m = [msg("system", "be brief"), msg("user", "hello")];
        assert_eq!(prompt_tokens(&m), 3 + (4 + 2) + (4 + 2));
        assert_eq!(prompt_tokens(&[]), 3);
    }

    #[test]
    fn content_parts_are_joined() {
        let m: ChatMessage = serde_json::from_value(serde_json::json!({
            "role": "user",
            "content": [{"type": "text", "text": "ab"}, {"type": "image_url"}, {"type": "text", "text": "cd"}]
        }))
        .unwrap();
        assert_eq!(m.text(), "ab\ncd");
        let null: ChatMessage =
            serde_json::from_value(serde_json::json!({"role": "assistant", "content": null}))
                .unwrap();
        assert_eq!(null.text(), "");
    }

    fn mixed() -> ModelBehavior {
        ModelBehavior {
            hang_rate: 0.1,
            rate_limited: Some(RateLimitSpec {
                rate: 0.1,
                retry_after_s: Some(2),
            }),
            errors: vec![
                ErrorSpec {
                    status: 500,
                    rate: 0.1,
                },
                ErrorSpec {
                    status: 503,
                    rate: 0.1,
                },
            ],
            malformed_rate: 0.1,
            ..ModelBehavior::default()
        }
    }

    #[test]
    fn outcome_follows_cumulative_rates() {
        let b = mixed();
        assert_eq!(choose_outcome(&b, 0.05), Decision::Hang);
        assert_eq!(
            choose_outcome(&b, 0.15),
            Decision::RateLimited {
                retry_after_s: Some(2)
            }
        );
        assert_eq!(choose_outcome(&b, 0.25), Decision::Error { status: 500 });
        assert_eq!(choose_outcome(&b, 0.35), Decision::Error { status: 503 });
        assert_eq!(choose_outcome(&b, 0.45), Decision::Malformed);
        assert_eq!(choose_outcome(&b, 0.55), Decision::Ok);
        assert_eq!(choose_outcome(&ModelBehavior::default(), 0.0), Decision::Ok);
        let always = ModelBehavior {
            errors: vec![ErrorSpec {
                status: 503,
                rate: 1.0,
            }],
            ..ModelBehavior::default()
        };
        assert_eq!(
            choose_outcome(&always, 0.999_999),
            Decision::Error { status: 503 }
        );
    }

    #[test]
    fn deterministic_checks_come_first() {
        let b = ModelBehavior {
            api_key: Some("sk-test".into()),
            context_window: Some(10),
            content_filter: vec!["Forbidden".into()],
            ..mixed()
        };
        assert_eq!(decide(&b, None, "x", 5, 0.9), Decision::Unauthorized);
        assert_eq!(
            decide(&b, Some("nope"), "x", 5, 0.9),
            Decision::Unauthorized
        );
        assert_eq!(
            decide(&b, Some("sk-test"), "x", 11, 0.9),
            Decision::ContextLengthExceeded { limit: 10 }
        );
        assert_eq!(
            decide(&b, Some("sk-test"), "a FORBIDDEN word", 5, 0.9),
            Decision::ContentFilter
        );
        assert_eq!(decide(&b, Some("sk-test"), "fine", 10, 0.9), Decision::Ok);
        assert_eq!(decide(&b, Some("sk-test"), "fine", 10, 0.0), Decision::Hang);
    }

    #[test]
    fn fixed_and_uniform_latency() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            LatencySpec::FixedMs(200).sample(&mut rng),
            Duration::from_millis(200)
        );
        for _ in 0..1000 {
            let d = LatencySpec::UniformMs([50, 500]).sample(&mut rng);
            assert!((50..=500).contains(&(d.as_millis() as u64)), "{d:?}");
        }
        assert_eq!(LatencySpec::FixedMs(u64::MAX).sample(&mut rng), MAX_LATENCY);
    }

    #[test]
    fn lognormal_quantiles_are_roughly_right() {
        let (mu, sigma) = lognormal_params(800, 4000);
        assert!((mu - 800f64.ln()).abs() < 1e-12);
        assert!((sigma - (4000f64.ln() - 800f64.ln()) / 2.326).abs() < 1e-12);

        let spec = LatencySpec::Lognormal {
            p50_ms: 800,
            p99_ms: 4000,
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut v: Vec<f64> = (0..50_000)
            .map(|_| spec.sample(&mut rng).as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        let p50 = v[v.len() / 2];
        let p99 = v[v.len() * 99 / 100];
        assert!((p50 / 800.0 - 1.0).abs() < 0.05, "p50 = {p50}");
        assert!((p99 / 4000.0 - 1.0).abs() < 0.10, "p99 = {p99}");

        let flat = LatencySpec::Lognormal {
            p50_ms: 300,
            p99_ms: 300,
        };
        let d = flat.sample(&mut rng).as_secs_f64() * 1000.0;
        assert!((d - 300.0).abs() < 1e-6, "{d}");
    }

    #[test]
    fn echo_and_canned_answers() {
        let m = [
            msg("user", "first"),
            msg("assistant", "ok"),
            msg("user", "  what   is\n2+2? "),
        ];
        let b = ModelBehavior::default();
        assert_eq!(answer_text(&b, &m, false, 0.0), "You said: what is 2+2?");
        assert_eq!(answer_text(&b, &[], false, 0.0), "You said nothing.");
        let long = "x".repeat(1000);
        assert_eq!(
            echo_text(&[msg("user", &long)]).len(),
            "You said: ".len() + 200
        );
        let canned = ModelBehavior {
            answer: AnswerSpec::Canned("fixed".into()),
            ..ModelBehavior::default()
        };
        assert_eq!(answer_text(&canned, &m, false, 0.0), "fixed");
        assert_eq!(answer_text(&canned, &m, true, 0.0), r#"{"answer":"fixed"}"#);
        let canned_json = ModelBehavior {
            answer: AnswerSpec::Canned(r#"{"label":"spam"}"#.into()),
            output_tokens: Some([50, 60]),
            ..ModelBehavior::default()
        };
        assert_eq!(
            answer_text(&canned_json, &m, true, 0.0),
            r#"{"label":"spam"}"#
        );
    }

    fn classifier(noise_rate: f64) -> ModelBehavior {
        ModelBehavior {
            answer: AnswerSpec::Classify(ClassifySpec {
                rules: vec![
                    ClassifyRule {
                        contains: vec!["MSA".into(), "indemnity".into()],
                        answer: "complex".into(),
                    },
                    ClassifyRule {
                        contains: vec!["invoice".into()],
                        answer: "billing".into(),
                    },
                ],
                otherwise: "simple".into(),
                noise_rate,
            }),
            ..ModelBehavior::default()
        }
    }

    fn classify(b: &ModelBehavior, text: &str) -> String {
        answer_text(b, &[msg("user", text)], false, 0.5)
    }

    fn classify_at(b: &ModelBehavior, u: f64) -> String {
        answer_text(b, &[msg("user", "hi")], false, u)
    }

    #[test]
    fn classify_first_matching_rule_wins() {
        let b = classifier(0.0);
        assert_eq!(classify(&b, "please review this MSA"), "complex");
        assert_eq!(classify(&b, "an invoice"), "billing");
        // Both rules match: the first in order wins.
        assert_eq!(classify(&b, "invoice attached to the MSA"), "complex");
        assert_eq!(classify(&b, "what's the weather"), "simple");
        assert_eq!(answer_text(&b, &[], false, 0.5), "simple");
    }

    #[test]
    fn classify_is_case_insensitive_on_the_last_user_message() {
        let b = classifier(0.0);
        assert_eq!(classify(&b, "the msa says"), "complex");
        assert_eq!(classify(&b, "INDEMNITY clause"), "complex");
        assert_eq!(classify(&b, "Invoice #3"), "billing");
        let m = [
            msg("system", "you classify MSA contracts"),
            msg("user", "an invoice"),
            msg("assistant", "billing"),
            msg("user", "hello"),
        ];
        assert_eq!(answer_text(&b, &m, false, 0.5), "simple");
    }

    #[test]
    fn classify_noise_follows_the_draw() {
        let labels = ["complex", "billing", "simple"];
        let always = classifier(1.0);
        let never = classifier(0.0);
        for i in 0..100 {
            let u = f64::from(i) / 100.0;
            for text in ["MSA", "invoice", "other"] {
                let noisy = answer_text(&always, &[msg("user", text)], false, u);
                assert!(!labels.contains(&noisy.as_str()), "{noisy}");
                assert!(noisy.starts_with("I think this is probably \""), "{noisy}");
                let clean = answer_text(&never, &[msg("user", text)], false, u);
                assert!(labels.contains(&clean.as_str()), "{clean}");
            }
        }
        assert_eq!(
            answer_text(&always, &[msg("user", "MSA")], false, 0.999_999),
            r#"I think this is probably "complex" but I am not sure."#
        );
        let some = classifier(0.3);
        assert_eq!(classify_at(&some, 0.29), classify_noise_text("simple"));
        assert_eq!(classify_at(&some, 0.3), "simple");
    }

    #[test]
    fn classify_answers_are_not_padded_or_trimmed() {
        let b = ModelBehavior {
            output_tokens: Some([50, 60]),
            ..classifier(0.0)
        };
        assert_eq!(classify(&b, "MSA"), "complex");
        let tight = ModelBehavior {
            output_tokens: Some([0, 1]),
            ..classifier(1.0)
        };
        assert_eq!(classify(&tight, "MSA"), classify_noise_text("complex"));
        // JSON mode wraps the exact label, like any non-JSON answer.
        assert_eq!(
            answer_text(&b, &[msg("user", "MSA")], true, 0.5),
            r#"{"answer":"complex"}"#
        );
    }

    #[test]
    fn output_tokens_pad_and_trim() {
        let padded = fit_tokens("hi", [20, 200]);
        assert_eq!(estimate_tokens(&padded), 20);
        assert!(padded.starts_with("hi lorem"));
        let long = "word ".repeat(400);
        let trimmed = fit_tokens(&long, [1, 50]);
        assert_eq!(estimate_tokens(&trimmed), 50);
        assert_eq!(fit_tokens("in range", [1, 10]), "in range");
        assert_eq!(fit_tokens("", [0, 0]), "");
    }
}
