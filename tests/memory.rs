//! Conversation memory against a real broker: a conversation's earlier turns reach the model
//! on every later turn, exactly once each, across a worker killed mid-conversation and a
//! second worker taking over its partitions.

mod common;

use std::time::Duration;

use common::*;

fn turn(n: usize) -> (Option<Vec<u8>>, Vec<u8>) {
    let job = serde_json::json!({
        "id": format!("conv-1-turn-{n}"),
        "conversation_id": "conv-1",
        "input": format!("message number {n} of the conversation"),
    });
    (Some(b"conv-1".to_vec()), serde_json::to_vec(&job).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_turn_sees_the_earlier_ones_once_even_after_a_crash_and_a_new_worker() {
    let mock = mock("request_log_messages = true\n[default]\nlatency = { fixed_ms = 5 }\n").await;
    let w = World::new("memory", &mock.base_url(), &one_model_config(64, "")).await;
    let mut results = Reader::new(&[w.results()]);
    let mut a = w.worker();
    for n in 1..=3 {
        produce(&w.input(), vec![turn(n)]).await;
        assert!(
            results.read_until(Duration::from_secs(30), |r| result_ids(r)
                .contains(&format!("conv-1-turn-{n}"))),
            "turn {n} answered"
        );
    }
    // Killed right after turn 3: its offset may not be committed, so turn 3 may run again.
    a.kill9();
    let _b = w.worker();
    for n in 4..=5 {
        produce(&w.input(), vec![turn(n)]).await;
        assert!(
            results.read_until(Duration::from_secs(60), |r| result_ids(r)
                .contains(&format!("conv-1-turn-{n}"))),
            "turn {n} answered"
        );
    }
    let log = mock.state().request_log();
    let fifth = log
        .iter()
        .rev()
        .find(|r| {
            r.messages
                .last()
                .is_some_and(|m| m.content == "message number 5 of the conversation")
        })
        .expect("turn 5's request");
    let texts: Vec<&str> = fifth.messages.iter().map(|m| m.content.as_str()).collect();
    for n in 1..=4 {
        let said = format!("message number {n} of the conversation");
        let answer = format!("You said: {said}");
        assert_eq!(
            texts.iter().filter(|t| **t == said).count(),
            1,
            "turn {n} once: {texts:#?}"
        );
        assert_eq!(
            texts.iter().filter(|t| **t == answer).count(),
            1,
            "{texts:#?}"
        );
    }
    // Oldest first, each turn's message then its answer, then the new message.
    assert_eq!(texts.len(), 9, "{texts:#?}");
    assert_eq!(texts[0], "message number 1 of the conversation");
    assert_eq!(texts[7], "You said: message number 4 of the conversation");
}
