//! The output parser: every provider's answer in one normalized shape ([`Completion`]), and
//! what baton reads out of an answer's text: JSON ([`json`]) and a classifier's label
//! ([`label`]).
//!
//! Schema validation and the one repair attempt come next; a truncated, empty or refused answer
//! is already a failure, never a result (the providers map those into their error taxonomy).

pub mod json;
pub mod label;

use crate::config::Usage;

/// A provider's answer, normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The answer text.
    pub text: String,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// Billed usage.
    pub usage: Usage,
}
