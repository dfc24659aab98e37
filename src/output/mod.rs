//! The output parser: every provider's answer in one normalized shape ([`Completion`]), and
//! what baton reads out of it before anything is published.
//!
//! [`read`] is the one gate between a provider's answer and a result: a refusal, an answer cut
//! by the token cap (`length`) and an empty answer are [`Rejection`]s, never results. When the
//! step asks for JSON, the answer's JSON is extracted ([`json`], from a fenced block or the
//! surrounding prose) and validated against the step's JSON Schema ([`schema`]); a schema
//! failure says what is wrong, so the pipeline can send it back to the model for its one repair
//! ([`repair_prompt`]). A classifier's answer is read as one of its labels ([`label`]).

pub mod json;
pub mod label;
pub mod schema;

use serde_json::Value;

use crate::config::{ErrorClass, ResponseSchema, Usage};
pub use crate::envelope::ToolCall;

/// A provider's answer, normalized.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// The answer text (empty when the model only called tools or refused).
    pub text: String,
    /// Why generation stopped, in the normalized vocabulary: `stop`, `length`, `tool_calls`,
    /// `content_filter` (each adapter maps its own words into these).
    pub finish_reason: Option<String>,
    /// Billed usage.
    pub usage: Usage,
    /// Tool calls the model made, in order.
    pub tool_calls: Vec<ToolCall>,
    /// The model's explicit refusal, when the provider reports one apart from the text.
    pub refusal: Option<String>,
}

/// What a step expects of an answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    /// The step's JSON Schema, when it has one.
    pub schema: Option<&'a ResponseSchema>,
    /// Whether the answer must be JSON (a schema, or a job asking for a JSON response format).
    pub json: bool,
}

/// Why an answer cannot be a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The model refused, saying this.
    Refused(String),
    /// Cut by the output token cap.
    Truncated,
    /// No text and no tool call.
    Empty,
    /// JSON was asked for and the answer holds none.
    NotJson,
    /// The answer's JSON fails the step's schema: the validator's messages, each with where.
    Invalid(Vec<String>),
}

impl Rejection {
    /// The error class a step failing this way ends with.
    pub fn class(&self) -> ErrorClass {
        match self {
            Rejection::Refused(_) => ErrorClass::ModelRefusal,
            Rejection::Truncated => ErrorClass::OutputTruncated,
            Rejection::Empty => ErrorClass::EmptyOutput,
            Rejection::NotJson | Rejection::Invalid(_) => ErrorClass::InvalidOutput,
        }
    }

    /// Whether the same model may fix it when told what is wrong (the one repair attempt).
    pub fn repairable(&self) -> bool {
        matches!(self, Rejection::NotJson | Rejection::Invalid(_))
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Refused(_) => f.write_str("the model refused to answer"),
            Rejection::Truncated => {
                f.write_str("the answer was cut by the output token cap (finish reason length)")
            }
            Rejection::Empty => f.write_str("the model answered nothing"),
            Rejection::NotJson => f.write_str("the answer holds no JSON"),
            Rejection::Invalid(errors) => {
                // Where, not what: the validator's messages quote the answer's values, which
                // must not reach dead letters and the status topic (the repair prompt, to the
                // same model, has them in full).
                let at: Vec<&str> = errors
                    .iter()
                    .map(|e| e.split_once(": ").map_or(e.as_str(), |(at, _)| at))
                    .collect();
                write!(f, "the answer fails the schema at {}", at.join(", "))
            }
        }
    }
}

/// Reads `c` as a step expecting `expect`: the answer's JSON (`None` when it has none and none
/// was asked for), or why it cannot be a result.
pub fn read(c: &Completion, expect: Expect<'_>) -> Result<Option<Value>, Rejection> {
    if let Some(why) = &c.refusal {
        return Err(Rejection::Refused(why.clone()));
    }
    if c.finish_reason.as_deref() == Some("length") {
        return Err(Rejection::Truncated);
    }
    let text = match (c.text.trim(), c.tool_calls.first()) {
        ("", None) => return Err(Rejection::Empty),
        // A structured answer given as a tool call (forced tool use) carries its JSON there.
        ("", Some(call)) => call.arguments.as_str(),
        (t, _) => t,
    };
    if !(expect.json || expect.schema.is_some()) {
        return Ok(json::extract(text));
    }
    let value = json::find(text).ok_or(Rejection::NotJson)?;
    if let Some(s) = expect.schema {
        schema::validate(s, &value).map_err(Rejection::Invalid)?;
    }
    Ok(Some(value))
}

/// The message that asks a model to repair its answer: what was wrong, and what to send back.
pub fn repair_prompt(rejection: &Rejection, expect: Expect<'_>) -> String {
    let what = match rejection {
        Rejection::Invalid(errors) => format!(
            "Your answer does not match the required JSON Schema:\n- {}",
            errors.join("\n- ")
        ),
        _ => "Your answer does not contain the JSON that was asked for.".to_string(),
    };
    let schema = expect
        .schema
        .map(|s| format!("\nThe schema:\n{}", s.schema))
        .unwrap_or_default();
    format!("{what}{schema}\nReply with the corrected JSON only, no other text.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> ResponseSchema {
        ResponseSchema::compile(
            "risk",
            serde_json::json!({
                "type": "object",
                "required": ["risk"],
                "properties": {"risk": {"enum": ["low", "high"]}}
            }),
        )
        .unwrap()
    }

    fn answer(text: &str) -> Completion {
        Completion {
            text: text.into(),
            finish_reason: Some("stop".into()),
            ..Completion::default()
        }
    }

    #[test]
    fn refusals_truncations_and_empty_answers_are_never_results() {
        let mut c = answer("half an ans");
        c.finish_reason = Some("length".into());
        assert_eq!(read(&c, Expect::default()), Err(Rejection::Truncated));
        assert_eq!(
            read(&answer("  \n"), Expect::default()),
            Err(Rejection::Empty)
        );
        let mut c = answer("");
        c.refusal = Some("I can't help with that.".into());
        let r = read(&c, Expect::default()).unwrap_err();
        assert_eq!(r.class(), ErrorClass::ModelRefusal);
        assert!(!r.repairable());
    }

    #[test]
    fn json_is_found_in_prose_and_checked_against_the_schema() {
        let s = schema();
        let expect = Expect {
            schema: Some(&s),
            json: true,
        };
        let ok = read(
            &answer("Sure! Here it is: {\"risk\": \"high\"} Hope it helps."),
            expect,
        );
        assert_eq!(ok, Ok(Some(serde_json::json!({"risk": "high"}))));
        let bad = read(&answer("```json\n{\"risk\": \"medium\"}\n```"), expect).unwrap_err();
        let Rejection::Invalid(errors) = &bad else {
            panic!("{bad:?}")
        };
        assert!(errors[0].contains("/risk"), "{errors:?}");
        assert!(bad.repairable());
        assert_eq!(bad.class(), ErrorClass::InvalidOutput);
        assert!(repair_prompt(&bad, expect).contains("/risk"));
        assert_eq!(
            read(&answer("no json here"), expect),
            Err(Rejection::NotJson)
        );
    }

    #[test]
    fn without_a_schema_prose_is_not_mined_for_json() {
        assert_eq!(
            read(&answer("see [1] and {x}"), Expect::default()),
            Ok(None)
        );
        assert_eq!(
            read(&answer("{\"a\": 1}"), Expect::default()),
            Ok(Some(serde_json::json!({"a": 1})))
        );
    }

    #[test]
    fn a_tool_call_carries_the_structured_answer() {
        let mut c = answer("");
        c.tool_calls.push(ToolCall {
            id: "t1".into(),
            name: "answer".into(),
            arguments: "{\"risk\":\"low\"}".into(),
        });
        let s = schema();
        let expect = Expect {
            schema: Some(&s),
            json: true,
        };
        assert_eq!(
            read(&c, expect),
            Ok(Some(serde_json::json!({"risk": "low"})))
        );
    }
}
