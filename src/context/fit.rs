//! Fitting a prompt to a model's window, as pure functions over its messages.
//!
//! The budget is the window minus the output tokens reserved for the answer. [`truncate`]
//! keeps every system message and the newest turns that fit, dropping the oldest; when the
//! newest message alone is too long (one long document), it keeps its head and tail and marks
//! the cut in the text. What was dropped is returned too, so the `summarize` strategy can
//! condense it into a note ([`with_summary`]) instead of losing it. Counts are the model's
//! tokenizer's, framing included, so a fitted prompt is within the budget by construction.

use super::tokens::{self, REPLY_PRIMING};
use crate::config::{Role, TokenizerKind};
use crate::envelope::ChatMessage;

/// Tokens a chat message costs besides its text (role and separators).
const FRAMING: u64 = 4;

/// The prompt cannot be fitted: even its system messages and the smallest part of its newest
/// message exceed the budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the prompt needs at least {need} tokens; the window leaves {budget}")]
pub struct TooSmall {
    /// Tokens the irreducible part needs.
    pub need: u64,
    /// Tokens the window leaves for the prompt.
    pub budget: u64,
}

/// A fitted prompt and what was cut from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// The messages to send.
    pub messages: Vec<ChatMessage>,
    /// What was left out, as text (older turns as `role: text` lines, or the middle of a long
    /// message); empty when nothing was.
    pub dropped: String,
    /// Where a summary of `dropped` belongs in `messages`.
    pub summary_at: usize,
}

/// `messages` fitted to `budget` prompt tokens of `kind`: unchanged when they fit.
pub fn truncate(
    messages: &[ChatMessage],
    kind: TokenizerKind,
    budget: u64,
) -> Result<Cut, TooSmall> {
    let cost = |m: &ChatMessage| FRAMING + tokens::count_text(kind, &m.content);
    let costs: Vec<u64> = messages.iter().map(cost).collect();
    let total: u64 = costs.iter().sum::<u64>() + REPLY_PRIMING;
    let lead = messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .count();
    if total <= budget {
        return Ok(Cut {
            messages: messages.to_vec(),
            dropped: String::new(),
            summary_at: lead,
        });
    }
    let system: u64 = messages
        .iter()
        .zip(&costs)
        .filter(|(m, _)| m.role == Role::System)
        .map(|(_, c)| c)
        .sum();
    let turns: Vec<usize> = (0..messages.len())
        .filter(|&i| messages[i].role != Role::System)
        .collect();
    let Some((&newest, older)) = turns.split_last() else {
        return Err(TooSmall {
            need: total,
            budget,
        });
    };
    let mut left = budget.saturating_sub(system + REPLY_PRIMING);
    let as_text = |turns: &[usize]| {
        turns
            .iter()
            .map(|&i| format!("{}: {}", messages[i].role.as_str(), messages[i].content))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if costs[newest] > left {
        // Every older turn goes too: what is dropped is them, then the newest one's middle.
        let mut cut = cut_middle(messages, newest, kind, left, budget, system)?;
        if !older.is_empty() {
            cut.dropped = format!("{}\n{}", as_text(older), cut.dropped);
        }
        return Ok(cut);
    }
    left -= costs[newest];
    // The newest older turns that fit, walking back; the rest are dropped.
    let mut keep_from = older.len();
    while keep_from > 0 && costs[older[keep_from - 1]] <= left {
        keep_from -= 1;
        left -= costs[older[keep_from]];
    }
    let dropped: Vec<usize> = older[..keep_from].to_vec();
    let dropped_text = as_text(&dropped);
    let kept: Vec<ChatMessage> = (0..messages.len())
        .filter(|i| !dropped.contains(i))
        .map(|i| messages[i].clone())
        .collect();
    Ok(Cut {
        messages: kept,
        dropped: dropped_text,
        summary_at: lead,
    })
}

/// Only message `i` (the newest) with its middle cut: every system message, then its head and
/// tail around a marker, within `left` tokens for it.
fn cut_middle(
    messages: &[ChatMessage],
    i: usize,
    kind: TokenizerKind,
    left: u64,
    budget: u64,
    system: u64,
) -> Result<Cut, TooSmall> {
    let tokenizer = tokens::tokenizer(kind);
    let ids = tokenizer.encode(messages[i].content.as_str());
    let marker = |n: usize| format!("\n[... {n} tokens cut to fit the context window ...]\n");
    let overhead = FRAMING + tokens::count_text(kind, &marker(ids.len())) + 2;
    let Some(room) = left.checked_sub(overhead).filter(|&r| r > 0) else {
        return Err(TooSmall {
            need: system + REPLY_PRIMING + overhead + 1,
            budget,
        });
    };
    // Head and tail share the room; a cut at a token boundary can split a character, so each
    // side gives up a token until it decodes.
    let mut head = (room as usize).div_ceil(2);
    let mut tail = room as usize / 2;
    let decoded = |r: std::ops::Range<usize>| tokenizer.decode(&ids[r]);
    let head_text = loop {
        match decoded(0..head) {
            Some(t) => break t,
            None => head -= 1,
        }
    };
    let tail_text = loop {
        match decoded(ids.len() - tail..ids.len()) {
            Some(t) => break t,
            None => tail -= 1,
        }
    };
    let cut = ids.len() - head - tail;
    let middle = tokenizer
        .decode(&ids[head..ids.len() - tail])
        .unwrap_or_default();
    let mut fitted = ChatMessage {
        role: messages[i].role,
        content: format!("{head_text}{}{tail_text}", marker(cut)),
    };
    // Re-encoding the joined text can merge tokens differently; trim until it fits for sure.
    while FRAMING + tokens::count_text(kind, &fitted.content) > left && head + tail > 0 {
        if head >= tail {
            head -= 1;
        } else {
            tail -= 1;
        }
        let (h, t) = (
            decoded(0..head).unwrap_or_default(),
            decoded(ids.len() - tail..ids.len()).unwrap_or_default(),
        );
        fitted.content = format!("{h}{}{t}", marker(ids.len() - head - tail));
    }
    let mut out: Vec<ChatMessage> = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .cloned()
        .collect();
    let summary_at = out.len();
    out.push(fitted);
    Ok(Cut {
        messages: out,
        dropped: middle,
        summary_at,
    })
}

/// `cut` with a summary of what it dropped, as a system note where the dropped part was.
pub fn with_summary(mut cut: Cut, summary: &str) -> Vec<ChatMessage> {
    cut.messages.insert(
        cut.summary_at,
        ChatMessage {
            role: Role::System,
            content: format!("Summary of the part of the conversation left out to fit the context window: {summary}"),
        },
    );
    cut.messages
}

/// The prompt tokens of `messages`, framing included.
pub fn prompt_tokens(messages: &[ChatMessage], kind: TokenizerKind) -> u64 {
    tokens::count_chat(kind, messages)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KIND: TokenizerKind = TokenizerKind::O200kBase;

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    fn conversation(turns: usize) -> Vec<ChatMessage> {
        let mut m = vec![msg(Role::System, "You are a careful assistant.")];
        for i in 0..turns {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            m.push(msg(role, &format!("turn {i}: {}", "words ".repeat(20))));
        }
        m
    }

    #[test]
    fn a_prompt_that_fits_is_unchanged() {
        let m = conversation(3);
        let cut = truncate(&m, KIND, 10_000).unwrap();
        assert_eq!(cut.messages, m);
        assert!(cut.dropped.is_empty());
    }

    #[test]
    fn the_oldest_turns_go_first_and_the_system_prompt_stays() {
        let m = conversation(9);
        let budget = prompt_tokens(&m, KIND) / 2;
        let cut = truncate(&m, KIND, budget).unwrap();
        assert!(prompt_tokens(&cut.messages, KIND) <= budget);
        assert_eq!(cut.messages[0], m[0]);
        assert_eq!(cut.messages.last(), m.last());
        assert!(cut.dropped.starts_with("user: turn 0"), "{}", cut.dropped);
        let kept = cut.messages.len() - 1;
        // The kept turns are the newest ones, in order.
        assert_eq!(&cut.messages[1..], &m[m.len() - kept..]);
    }

    #[test]
    fn one_long_document_keeps_its_head_and_tail() {
        let doc = format!(
            "BEGINNING {} ENDING",
            "lorem ipsum dolor sit amet ".repeat(2000)
        );
        let m = vec![msg(Role::System, "Summarize."), msg(Role::User, &doc)];
        let cut = truncate(&m, KIND, 1000).unwrap();
        assert!(prompt_tokens(&cut.messages, KIND) <= 1000);
        let with_history = vec![
            msg(Role::System, "Summarize."),
            msg(Role::User, "an earlier question"),
            msg(Role::User, &doc),
        ];
        let dropped = truncate(&with_history, KIND, 1000).unwrap().dropped;
        assert!(
            dropped.starts_with("user: an earlier question\n"),
            "the older turn is in what was dropped"
        );
        let text = &cut.messages[1].content;
        assert!(text.starts_with("BEGINNING"), "{}", &text[..40]);
        assert!(text.ends_with("ENDING"));
        assert!(text.contains("tokens cut to fit the context window"));
        assert!(!cut.dropped.is_empty());
    }

    #[test]
    fn a_window_too_small_for_the_system_prompt_is_an_error() {
        let m = vec![
            msg(Role::System, &"rules ".repeat(500)),
            msg(Role::User, "hi"),
        ];
        assert!(truncate(&m, KIND, 100).is_err());
    }

    #[test]
    fn a_summary_goes_where_the_dropped_turns_were() {
        let m = conversation(9);
        let cut = truncate(&m, KIND, prompt_tokens(&m, KIND) / 2).unwrap();
        let with = with_summary(cut, "they talked");
        assert_eq!(with[0], m[0]);
        assert_eq!(with[1].role, Role::System);
        assert!(with[1].content.ends_with("they talked"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn truncation_fits_and_keeps_what_it_promises(
            system in "[a-z ]{0,200}",
            turns in prop::collection::vec("[a-zA-Z0-9 .,é]{1,400}", 1..12),
            budget in 60u64..600,
        ) {
            let mut m = vec![msg(Role::System, &system)];
            for (i, t) in turns.iter().enumerate() {
                m.push(msg(if i % 2 == 0 { Role::User } else { Role::Assistant }, t));
            }
            match truncate(&m, KIND, budget) {
                Ok(cut) => {
                    prop_assert!(prompt_tokens(&cut.messages, KIND) <= budget);
                    prop_assert_eq!(&cut.messages[0], &m[0]);
                    let last = cut.messages.last().unwrap();
                    let newest = m.last().unwrap();
                    prop_assert_eq!(last.role, newest.role);
                    if last.content != newest.content {
                        // Cut in the middle: what is kept is the newest message's head and tail.
                        let (head, tail) = last.content.split_once("\n[... ").unwrap();
                        let tail = tail.split_once("...]\n").unwrap().1;
                        prop_assert!(newest.content.starts_with(head));
                        prop_assert!(newest.content.ends_with(tail));
                    }
                }
                Err(e) => prop_assert!(e.need > budget),
            }
        }
    }
}
