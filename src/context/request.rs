//! Prompt assembly: the provider-neutral request of a step's call and of a classifier's call.

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
    /// The request for `job` on `step`: the step's system prompt, then the job's messages; the
    /// job's parameters, with the step's `max_tokens` when the job sets none.
    pub fn for_step(step: &StepConfig, job: &Job) -> ChatRequest {
        let mut messages = Vec::new();
        if let Some(sp) = &step.system_prompt {
            messages.push(ChatMessage {
                role: Role::System,
                content: sp.clone(),
            });
        }
        messages.extend(job.chat_messages());
        let params = job.params.clone().unwrap_or_default();
        ChatRequest {
            messages,
            max_tokens: params.max_tokens.or(step.max_tokens),
            temperature: params.temperature,
            top_p: params.top_p,
            seed: params.seed,
            stop: params.stop,
            response_format: job.response_format.clone(),
        }
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
        let r = ChatRequest::for_step(&c.steps[0], &job);
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.messages.last().unwrap().content, "help");
        assert_eq!(r.max_tokens, Some(50));
    }
}
