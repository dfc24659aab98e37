//! A step's `context`: what happens when its prompt does not fit the model about to be called
//! (`overflow`), and how much conversation memory its jobs carry.

use serde::Deserialize;

use super::error::Resolver;
use super::routes::ModelIndex;

/// `context = { overflow = "truncate", summarize_model = "cheap", memory_turns = 20 }` as
/// written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStepContext {
    /// What happens to a prompt too long for a model's window.
    #[serde(default)]
    pub overflow: Overflow,
    /// The model that condenses what `summarize` would otherwise drop.
    pub summarize_model: Option<toml::Spanned<String>>,
    /// Earlier turns of a conversation a job is given, at most (the newest ones).
    pub memory_turns: Option<usize>,
}

/// What happens to a prompt too long for a model's window (its prompt plus the output tokens
/// reserved for the answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Only models whose window fits the prompt are candidates (no model fits: the job is
    /// dead-lettered `context_length_exceeded`).
    #[default]
    LargerModel,
    /// The prompt is never cut and never moved: if the model about to be called cannot take
    /// it, the job is dead-lettered `context_length_exceeded`.
    Reject,
    /// Keep the system prompt and the newest turns; a single long message keeps its head and
    /// tail, with the cut marked.
    Truncate,
    /// As `truncate`, but what would be dropped is condensed by `summarize_model` first.
    Summarize,
}

/// A step's resolved `context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepContext {
    /// What happens to a prompt too long for a model's window.
    pub overflow: Overflow,
    /// Index of the summarizing model (with `summarize`).
    pub summarize_model: Option<usize>,
    /// Earlier turns of a conversation a job is given, at most.
    pub memory_turns: usize,
}

/// Default cap on the earlier turns a conversation's job is given.
pub const DEFAULT_MEMORY_TURNS: usize = 50;

impl Default for StepContext {
    fn default() -> Self {
        StepContext {
            overflow: Overflow::LargerModel,
            summarize_model: None,
            memory_turns: DEFAULT_MEMORY_TURNS,
        }
    }
}

impl RawStepContext {
    /// Checks the keys against each other and resolves the summarizing model.
    pub fn resolve(
        &self,
        path: &str,
        models: &ModelIndex<'_>,
        r: &mut Resolver<'_>,
    ) -> StepContext {
        let summarize_model = match (&self.summarize_model, self.overflow) {
            (Some(name), Overflow::Summarize) => {
                models.resolve(&format!("{path}.summarize_model"), name, r)
            }
            (None, Overflow::Summarize) => {
                r.err(
                    &format!("{path}.summarize_model"),
                    "missing: `overflow = \"summarize\"` needs the model that summarizes",
                );
                None
            }
            (Some(name), _) => {
                r.err_at(
                    &format!("{path}.summarize_model"),
                    name.span().start,
                    "only with `overflow = \"summarize\"`",
                );
                None
            }
            (None, _) => None,
        };
        StepContext {
            overflow: self.overflow,
            summarize_model,
            memory_turns: self.memory_turns.unwrap_or(DEFAULT_MEMORY_TURNS),
        }
    }
}
