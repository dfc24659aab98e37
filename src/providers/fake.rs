//! A scripted in-process provider: each call takes the next step of its script (the last step
//! repeats), and every request is kept, so tests of the step runner's failure paths need no
//! network, no broker and no mock server. Time is tokio's, so a paused test clock drives the
//! simulated latency.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Provider, ProviderError};
use crate::config::Usage;
use crate::context::ChatRequest;
use crate::output::Completion;

/// What one call does.
#[derive(Debug, Clone)]
pub enum Script {
    /// Answers this text after `after`, billing `usage`.
    Answer {
        /// The answer.
        text: String,
        /// Its usage.
        usage: Usage,
        /// How long the call takes.
        after: Duration,
    },
    /// Fails with this error after `after`.
    Fail {
        /// The error.
        error: ProviderError,
        /// How long the call takes.
        after: Duration,
    },
    /// Answers this completion as it is (a truncated, refused or tool-calling answer).
    Complete(Completion),
    /// Never answers: a provider that took the request and went silent.
    Hang,
}

impl Script {
    /// An immediate answer of `text`, billing 10 input and 5 output tokens.
    pub fn answer(text: &str) -> Script {
        Script::Answer {
            text: text.to_string(),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                total_tokens: 15,
                ..Usage::default()
            },
            after: Duration::ZERO,
        }
    }

    /// An immediate failure.
    pub fn fail(error: ProviderError) -> Script {
        Script::Fail {
            error,
            after: Duration::ZERO,
        }
    }

    /// This step, taking `d` before it answers or fails.
    pub fn after(mut self, d: Duration) -> Script {
        match &mut self {
            Script::Answer { after, .. } | Script::Fail { after, .. } => *after = d,
            Script::Complete(_) | Script::Hang => {}
        }
        self
    }
}

/// A provider that plays a script.
#[derive(Debug)]
pub struct ScriptedProvider {
    script: Mutex<VecDeque<Script>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl ScriptedProvider {
    /// A provider playing `steps` in order, the last one for every call after it.
    pub fn new(steps: Vec<Script>) -> ScriptedProvider {
        assert!(!steps.is_empty(), "a script needs at least one step");
        ScriptedProvider {
            script: Mutex::new(steps.into()),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many calls were made.
    pub fn calls(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn next_step(&self, request: &ChatRequest) -> Script {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
        let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
        match script.len() {
            1 => script[0].clone(),
            _ => script.pop_front().unwrap_or(Script::Hang),
        }
    }
}

impl Provider for ScriptedProvider {
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        let step = self.next_step(request);
        Box::pin(async move {
            match step {
                Script::Answer { text, usage, after } => {
                    tokio::time::sleep(after).await;
                    Ok(Completion {
                        text,
                        finish_reason: Some("stop".into()),
                        usage,
                        ..Completion::default()
                    })
                }
                Script::Fail { error, after } => {
                    tokio::time::sleep(after).await;
                    Err(error)
                }
                Script::Complete(c) => Ok(c),
                Script::Hang => std::future::pending().await,
            }
        })
    }
}
