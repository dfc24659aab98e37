//! Prompt assembly: the provider-neutral request of a step's call and of a classifier's call.

use minijinja::Environment;

use super::template::{self, TemplateError};
use crate::config::{ClassifierConfig, Role, StepConfig};
use crate::envelope::{ChatMessage, Job};

/// A request for one chat completion, provider-neutral.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// Messages, system prompt first when there is one.
    pub messages: Vec<ChatMessage>,
    /// Output token cap.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Seed.
    pub seed: Option<i64>,
    /// Stop sequences.
    pub stop: Option<Vec<String>>,
    /// OpenAI-style `response_format`.
    pub response_format: Option<serde_json::Value>,
}

impl ChatRequest {
    /// The request for `job` on `step`: the step's system prompt, then (on a pipeline's first
    /// step) the earlier turns of the job's conversation, then the job's own messages
    /// ([`own_messages`]); the job's parameters, with the step's `max_tokens` when the job sets
    /// none; the step's JSON Schema as the response format, else the job's.
    pub fn for_step(
        templates: &Environment<'static>,
        step: &StepConfig,
        job: &Job,
    ) -> Result<ChatRequest, TemplateError> {
        let scope = template::scope(job);
        let mut messages = Vec::new();
        if let Some(name) = &step.system_template {
            messages.push(ChatMessage {
                role: Role::System,
                content: template::render(templates, name, &scope)?,
            });
        }
        messages.extend(memory(step, job).iter().cloned());
        messages.extend(own_messages(templates, step, job, &scope)?);
        let params = job.params.clone().unwrap_or_default();
        Ok(ChatRequest {
            messages,
            max_tokens: params.max_tokens.or(step.max_tokens),
            temperature: params.temperature,
            top_p: params.top_p,
            seed: params.seed,
            stop: params.stop,
            response_format: match &step.response_schema {
                Some(s) => Some(s.wire_format()),
                None => job.response_format.clone(),
            },
        })
    }

    /// Whether the request asks for a JSON answer (a JSON object or schema response format).
    pub fn wants_json(&self) -> bool {
        let kind = self
            .response_format
            .as_ref()
            .and_then(|f| f.get("type"))
            .and_then(serde_json::Value::as_str);
        matches!(kind, Some("json_object" | "json_schema"))
    }

    /// The classification call for `job`: the classifier's instructions, then the job's own
    /// messages; a short, deterministic answer.
    pub fn for_classifier(c: &ClassifierConfig, job: &Job) -> ChatRequest {
        let mut messages = vec![ChatMessage {
            role: Role::System,
            content: c.prompt.clone(),
        }];
        messages.extend(job.chat_messages());
        ChatRequest {
            messages,
            max_tokens: Some(c.max_tokens),
            temperature: Some(0.0),
            ..ChatRequest::default()
        }
    }
}

/// The earlier turns of the job's conversation the step's model sees: on a pipeline's first
/// step, the newest `context.memory_turns` (a turn is the job's message and the answer).
pub fn memory<'j>(step: &StepConfig, job: &'j Job) -> &'j [ChatMessage] {
    if step.previous.is_some() {
        return &[];
    }
    let skip = job
        .memory
        .len()
        .saturating_sub(2 * step.context.memory_turns);
    &job.memory[skip..]
}

/// What the job itself says to the step's model: the step's `user` template rendered as one
/// user message; without one, the previous step's answer (a later step) or the job's messages.
fn own_messages(
    templates: &Environment<'static>,
    step: &StepConfig,
    job: &Job,
    scope: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<ChatMessage>, TemplateError> {
    let user = |content| {
        vec![ChatMessage {
            role: Role::User,
            content,
        }]
    };
    if let Some(name) = &step.user_template {
        return Ok(user(template::render(templates, name, scope)?));
    }
    let previous = step
        .previous
        .as_ref()
        .and_then(|p| job.trail.iter().rev().find(|t| &t.step == p));
    Ok(match previous {
        Some(t) => user(t.output.text.clone()),
        None => job.chat_messages(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_step_request_puts_the_system_prompt_first() {
        let c = Config::from_toml(include_str!("../../examples/support.toml"), None).unwrap();
        let job: Job =
            serde_json::from_str(r#"{"id":"1","input":"help","params":{"max_tokens":50}}"#)
                .unwrap();
        let r = ChatRequest::for_step(&c.templates, &c.steps[0], &job).unwrap();
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.messages.last().unwrap().content, "help");
        assert_eq!(r.max_tokens, Some(50));
    }
}
