//! The context manager: what a model sees. A job and its step become one provider-neutral
//! [`ChatRequest`] (the step's system prompt, then the job's messages, with the job's or the
//! step's parameters), and a [`Prompt`] counts its tokens exactly, once per tokenizer, for the
//! router's rules, window checks and cost estimates.
//!
//! Fitting a prompt to a model's window (truncate, summarize, a larger model) and conversation
//! memory come next; they build on these two types.

pub mod fit;
pub mod prompt;
pub mod request;
pub mod template;
pub mod tokens;

pub use prompt::Prompt;
pub use request::ChatRequest;
pub use template::TemplateError;
