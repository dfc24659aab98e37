//! A step's prompt with its token counts, computed once per tokenizer on first use: rules,
//! window checks, cost estimates and the classifier call all read the same counts, so a long
//! prompt is tokenized once per tokenizer, not once per question.

use std::sync::OnceLock;

use minijinja::Environment;

use super::request::ChatRequest;
use super::template::TemplateError;
use super::tokens;
use crate::config::{StepConfig, TokenizerKind};
use crate::envelope::Job;

/// The job's prompt as the provider will see it, with token counts computed once per tokenizer.
#[derive(Debug)]
pub struct Prompt {
    /// The step's request: the step's system prompt, then the job's messages, and the job's
    /// (or step's) parameters.
    pub request: ChatRequest,
    /// The job's own text (its messages, without the step's system prompt), for rules.
    pub content: String,
    /// How many of the request's messages come before the job's own (the step's system
    /// prompt, the conversation's earlier turns).
    lead: usize,
    /// Per tokenizer: tokens of the job's own messages, framing included (the part of the count
    /// the answer and the classification calls share).
    own: Counts,
    /// Per tokenizer: the whole prompt.
    all: Counts,
}

/// One lazily computed count per tokenizer.
#[derive(Debug, Default)]
struct Counts {
    o200k: OnceLock<u64>,
    cl100k: OnceLock<u64>,
}

impl Counts {
    fn get(&self, kind: TokenizerKind, count: impl FnOnce() -> u64) -> u64 {
        let cell = match kind {
            TokenizerKind::O200kBase => &self.o200k,
            TokenizerKind::Cl100kBase => &self.cl100k,
        };
        *cell.get_or_init(count)
    }
}

impl Prompt {
    /// The prompt of `job` on `step`, its templates rendered from `templates`.
    pub fn new(
        templates: &Environment<'static>,
        step: &StepConfig,
        job: &Job,
    ) -> Result<Prompt, TemplateError> {
        let request = ChatRequest::for_step(templates, step, job)?;
        // The system prompt and the conversation's earlier turns come before the job's own.
        let lead =
            usize::from(step.system_template.is_some()) + super::request::memory(step, job).len();
        let own = &request.messages[lead..];
        let content = match own {
            [one] => one.content.clone(),
            many => many
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        Ok(Prompt {
            request,
            content,
            lead,
            own: Counts::default(),
            all: Counts::default(),
        })
    }

    /// Tokens of the job's own messages with `kind`'s tokenizer, framing included, without the
    /// reply priming (counted on first use).
    pub fn own_tokens(&self, kind: TokenizerKind) -> u64 {
        self.own.get(kind, || {
            tokens::count_chat(kind, &self.request.messages[self.lead..]) - tokens::REPLY_PRIMING
        })
    }

    /// Prompt tokens of the step's call with `kind`'s tokenizer (counted on first use).
    pub fn tokens(&self, kind: TokenizerKind) -> u64 {
        self.all.get(kind, || {
            let lead = tokens::count_chat(kind, &self.request.messages[..self.lead])
                - tokens::REPLY_PRIMING;
            lead + self.own_tokens(kind) + tokens::REPLY_PRIMING
        })
    }
}
