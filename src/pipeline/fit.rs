//! A candidate's prompt fitted to its window by the step's overflow strategy (the pure cuts
//! are the context manager's, `context::fit`). The fit is checked for every candidate,
//! fallbacks included, so a model with a smaller window gets a fitted prompt, never a blind
//! provider 400. `summarize` asks the step's summarizing model to condense what would be
//! dropped; the summary call is billed to the job and held to its policy (sensitivity,
//! residency, cost ceiling): a summarizer the job may not use, or one that fails, leaves the
//! plain truncation.

use tokio::time::Instant;

use super::call::CallSpec;
use super::StepRunner;
use crate::config::{ContentFilterPolicy, Overflow, Role, StepConfig};
use crate::context::fit::{self, Cut};
use crate::context::{ChatRequest, Prompt};
use crate::envelope::{ChatMessage, Job};
use crate::router;

/// Output tokens a summary may take.
const SUMMARY_TOKENS: u32 = 400;
/// What the summary's note adds around its text.
const SUMMARY_FRAMING: u64 = 40;

/// The prompt for one candidate.
pub(super) enum Fitted {
    /// Send this request (its prompt has `tokens` tokens); a summary cost `summary_usd`.
    Ready {
        request: ChatRequest,
        tokens: u64,
        summary_usd: f64,
    },
    /// The prompt cannot go to this model; a larger window may take it.
    TooLong(String),
    /// The prompt does not fit and the step rejects rather than fits: the job fails.
    Rejected(String),
}

/// What fitting needs besides the candidate.
pub(super) struct FitFor<'a> {
    pub step: &'a StepConfig,
    pub job: &'a Job,
    pub prompt: &'a Prompt,
    /// USD left under the job's cost ceiling, if it has one.
    pub budget_left: Option<f64>,
    /// The round's deadline.
    pub deadline: Instant,
}

impl StepRunner {
    /// The prompt of `f` for model `m`.
    pub(super) async fn fit(&self, m: usize, f: &FitFor<'_>) -> Fitted {
        let model = &self.config.models[m];
        let request = &f.prompt.request;
        let reserved = u64::from(
            request
                .max_tokens
                .unwrap_or(router::DEFAULT_EXPECTED_OUTPUT_TOKENS),
        );
        let window = u64::from(model.context_window);
        let budget = window.saturating_sub(reserved);
        let tokens = f.prompt.tokens(model.tokenizer);
        if tokens <= budget {
            return Fitted::Ready {
                request: request.clone(),
                tokens,
                summary_usd: 0.0,
            };
        }
        let too_long = format!(
            "{tokens} prompt + {reserved} output tokens exceed {}'s context window of {window}",
            model.name
        );
        let overflow = f.step.context.overflow;
        match overflow {
            Overflow::Reject => return Fitted::Rejected(too_long),
            Overflow::LargerModel => return Fitted::TooLong(too_long),
            Overflow::Truncate | Overflow::Summarize => {}
        }
        let kind = model.tokenizer;
        // What a summary cost is billed even when it cannot be used (it did not fit after all).
        let mut summary_usd = 0.0;
        if overflow == Overflow::Summarize {
            let room = budget.saturating_sub(u64::from(SUMMARY_TOKENS) + SUMMARY_FRAMING);
            if let Ok(cut) = fit::truncate(&request.messages, kind, room) {
                if let Some((summary, usd)) = self.summarize(&cut, f).await {
                    summary_usd = usd;
                    let messages = fit::with_summary(cut, &summary);
                    let tokens = fit::prompt_tokens(&messages, kind);
                    if !summary.is_empty() && tokens <= budget {
                        let request = ChatRequest {
                            messages,
                            ..request.clone()
                        };
                        return Fitted::Ready {
                            request,
                            tokens,
                            summary_usd,
                        };
                    }
                }
            }
        }
        match fit::truncate(&request.messages, kind, budget) {
            Ok(cut) => {
                let tokens = fit::prompt_tokens(&cut.messages, kind);
                let request = ChatRequest {
                    messages: cut.messages,
                    ..request.clone()
                };
                Fitted::Ready {
                    request,
                    tokens,
                    summary_usd,
                }
            }
            Err(e) => Fitted::TooLong(format!("{too_long}: {e}")),
        }
    }

    /// A summary of what `cut` dropped, from the step's summarizing model, and what it cost;
    /// `None` when nothing was dropped, or the summarizer may not or could not do it.
    async fn summarize(&self, cut: &Cut, f: &FitFor<'_>) -> Option<(String, f64)> {
        let s = f.step.context.summarize_model?;
        let model = &self.config.models[s];
        if cut.dropped.is_empty() {
            return None;
        }
        if let Some(why) = router::forbidden_reason(model, f.job) {
            tracing::debug!(model = %model.name, %why, "summarizer not allowed for this job; truncating");
            return None;
        }
        let instructions = ChatMessage {
            role: Role::System,
            content: "Summarize the text below so another model can use it as context: keep names, numbers, dates, decisions and open questions; be brief.".into(),
        };
        let text = ChatMessage {
            role: Role::User,
            content: cut.dropped.clone(),
        };
        // The dropped part may itself be longer than the summarizer's window.
        let room = u64::from(model.context_window).saturating_sub(u64::from(SUMMARY_TOKENS));
        let messages = fit::truncate(&[instructions, text], model.tokenizer, room)
            .ok()?
            .messages;
        let tokens = fit::prompt_tokens(&messages, model.tokenizer);
        if f.budget_left
            .is_some_and(|left| model.cost_usd(tokens, u64::from(SUMMARY_TOKENS)) > left)
        {
            return None;
        }
        let request = ChatRequest {
            messages,
            max_tokens: Some(SUMMARY_TOKENS),
            temperature: Some(0.0),
            ..ChatRequest::default()
        };
        let spec = CallSpec {
            step: f.step,
            variant: None,
            policy: ContentFilterPolicy::DeadLetter,
            tokens: tokens + u64::from(SUMMARY_TOKENS),
            deadline: Some(f.deadline),
        };
        let made = self.guarded_call(s, &request, spec).await.ok()?;
        let c = made.result.ok()?;
        let usd = model.usage_cost_usd(&c.usage);
        // A summary cut by its cap is still a summary; an empty or refused one is none (and
        // is billed all the same).
        let summary = c.text.trim().to_string();
        Some((summary, usd))
    }
}
