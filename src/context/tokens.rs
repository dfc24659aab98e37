//! Exact prompt token counts with OpenAI's byte-pair encoders (`o200k_base`, `cl100k_base`,
//! from the `bpe-openai` crate), and the chat framing OpenAI adds around each message.
//!
//! For models of other vendors the count is the configured tokenizer's (an approximation that
//! is close for English text); the provider's reported usage is what the job is billed.

use crate::config::TokenizerKind;
use crate::envelope::ChatMessage;

/// Tokens OpenAI adds per chat message (role and separators).
const PER_MESSAGE: u64 = 4;
/// Tokens OpenAI adds to prime the reply.
pub const REPLY_PRIMING: u64 = 3;

/// The byte-pair encoder of `kind`.
pub fn tokenizer(kind: TokenizerKind) -> &'static bpe_openai::Tokenizer {
    match kind {
        TokenizerKind::O200kBase => bpe_openai::o200k_base(),
        TokenizerKind::Cl100kBase => bpe_openai::cl100k_base(),
    }
}

/// Tokens in `text`.
pub fn count_text(kind: TokenizerKind, text: &str) -> u64 {
    tokenizer(kind).count(text) as u64
}

/// Prompt tokens of a chat request made of `messages`.
pub fn count_chat(kind: TokenizerKind, messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| PER_MESSAGE + count_text(kind, &m.content))
        .sum::<u64>()
        + REPLY_PRIMING
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_openai_tokenizers() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(count_text(TokenizerKind::Cl100kBase, "Hello, world!"), 4);
        assert_eq!(count_text(TokenizerKind::O200kBase, "Hello, world!"), 4);
        assert_eq!(
            count_text(TokenizerKind::Cl100kBase, "tiktoken is great!"),
            6
        );
        assert_eq!(count_text(TokenizerKind::O200kBase, ""), 0);
    }

    #[test]
    fn chat_framing_is_added_per_message() {
        let m = |c: &str| ChatMessage {
            role: crate::config::Role::User,
            content: c.into(),
        };
        let one = count_chat(TokenizerKind::O200kBase, &[m("Hello, world!")]);
        assert_eq!(one, 4 + 4 + 3);
        let two = count_chat(
            TokenizerKind::O200kBase,
            &[m("Hello, world!"), m("Hello, world!")],
        );
        assert_eq!(two, one + 8);
    }
}
