//! The shipped contracts pipeline (`examples/contracts.toml`: extract → classify → summarize,
//! each answer checked against its JSON Schema) end to end against a real broker and
//! mock-llm: the handoff through step topics, the trail and total cost on the result, the one
//! repair attempt, the review copy of high-risk contracts, and the dead letter of an answer no
//! model gets right.

mod common;

use std::path::Path;
use std::time::Duration;

use baton::mock_llm::MockLlm;
use common::*;
use serde_json::Value;

/// `examples/contracts.toml` pointed at this test's broker, topics and mock: the file as it
/// ships, with only where-things-are rewritten.
fn contracts_config() -> String {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let text = std::fs::read_to_string(examples.join("contracts.toml")).unwrap();
    let mut t: toml::Table = toml::from_str(&text).unwrap();
    let kafka = t["kafka"].as_table_mut().unwrap();
    kafka.insert("bootstrap_servers".into(), "{BOOTSTRAP}".into());
    kafka.insert("group_id".into(), "{GROUP}".into());
    let mut topics = toml::Table::new();
    topics.insert("prefix".into(), "{PREFIX}".into());
    t.insert("topics".into(), topics.into());
    let worker = t["worker"].as_table_mut().unwrap();
    worker.insert("metrics_listen".into(), "off".into());
    for (_, m) in t["models"].as_table_mut().unwrap() {
        let m = m.as_table_mut().unwrap();
        m.insert("base_url".into(), "{MOCK}".into());
        m.remove("api_key_env");
    }
    let steps = t["pipelines"]["contracts"]["steps"]
        .as_array()
        .unwrap()
        .clone();
    let steps: Vec<toml::Value> = steps
        .into_iter()
        .map(|mut s| {
            let rf = s["response_format"].as_table_mut().unwrap();
            let file = rf["schema_file"].as_str().unwrap();
            let abs = examples.join(file).display().to_string();
            rf.insert("schema_file".into(), abs.into());
            s
        })
        .collect();
    t["pipelines"]["contracts"]
        .as_table_mut()
        .unwrap()
        .insert("steps".into(), steps.into());
    toml::to_string(&t).unwrap()
}

/// The first `n` sample contracts, as (key, value) records.
fn contracts(n: usize) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/contracts.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .take(n)
        .map(|l| {
            let id = serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            (Some(id.into_bytes()), l.as_bytes().to_vec())
        })
        .collect()
}

fn mock_config(fast: &str, premium: &str) -> String {
    format!(
        r#"
seed = 3
request_log_messages = true
[default]
latency = {{ fixed_ms = 5 }}
[models."gpt-4.1-mini"]
latency = {{ fixed_ms = 5 }}
answer = {{ json = "{fast}" }}
[models."claude-sonnet-4"]
latency = {{ fixed_ms = 5 }}
answer = {{ json = "{premium}" }}
"#
    )
}

/// What mock-llm billed, at the config's prices (per million tokens).
fn billed_usd(mock: &MockLlm) -> f64 {
    let price = |model: &str| match model {
        "gpt-4.1-mini" => (0.40, 1.60),
        "claude-sonnet-4" => (3.00, 15.00),
        other => panic!("unexpected model {other}"),
    };
    mock.state()
        .request_log()
        .iter()
        .map(|r| {
            let (pin, pout) = price(&r.model);
            (f64::from(r.prompt_tokens) * pin + f64::from(r.completion_tokens) * pout) / 1e6
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn contracts_flow_through_three_steps_with_their_trail_repairs_and_reviews() {
    let mock = mock(&mock_config("invalid_then_valid", "valid")).await;
    let w = World::new("contracts", &mock.base_url(), &contracts_config()).await;
    let _worker = w.worker();
    let n = 6;
    produce(&w.input(), contracts(n)).await;
    let mut results = Reader::new(&[w.results()]);
    assert!(
        results.read_until(Duration::from_secs(90), |r| r.len() >= n),
        "{} of {n} results",
        results.records.len()
    );
    let mut total = 0.0;
    let mut high_risk = 0;
    for m in &results.records {
        let r = value(m);
        let steps: Vec<&str> = r["trail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["extract", "classify", "summarize"], "{r}");
        let models: Vec<&str> = r["trail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["model"].as_str().unwrap())
            .collect();
        assert_eq!(models, ["fast", "fast", "premium"]);
        // The fast model's first answers are off their schema: each was repaired (two calls).
        assert_eq!(r["trail"][0]["attempts"], 2);
        assert_eq!(r["trail"][1]["attempts"], 2);
        assert!(r["trail"][0]["output"]["json"]["parties"].is_array());
        assert!(r["output"]["json"]["summary"].is_string(), "{r}");
        let step_costs: f64 = r["trail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["cost_usd"].as_f64().unwrap())
            .sum();
        let job_total = r["total_cost_usd"].as_f64().unwrap();
        assert!(
            (step_costs - job_total).abs() < 1e-8,
            "{step_costs} vs {job_total}"
        );
        total += job_total;
        if r["trail"][1]["output"]["json"]["risk"] == "high" {
            high_risk += 1;
        }
    }
    // The results' total cost is what the provider billed, call for call.
    let billed = billed_usd(&mock);
    assert!(
        (total - billed).abs() < 1e-7,
        "results {total} vs billed {billed}"
    );
    // Every repair carried the rejected answer and the validation errors back to the model.
    let log = mock.state().request_log();
    let fast: Vec<_> = log.iter().filter(|r| r.model == "gpt-4.1-mini").collect();
    assert_eq!(fast.len(), n * 4, "two steps, two calls each");
    let repairs: Vec<_> = fast
        .iter()
        .filter(|r| r.messages.iter().any(|m| m.role == "assistant"))
        .collect();
    assert_eq!(repairs.len(), n * 2);
    for r in repairs {
        let last = &r.messages.last().unwrap().content;
        assert!(
            last.contains("does not match the required JSON Schema"),
            "{last}"
        );
    }
    // Step two saw what step one extracted.
    let classify_prompt = fast
        .iter()
        .map(|r| &r.messages)
        .find(|m| m.iter().any(|x| x.content.starts_with("Parties: ")))
        .expect("a classify request");
    assert!(!classify_prompt[1].content.contains("{{"));
    // High-risk contracts were also copied to review, with the reason (the mock's answers
    // vary by contract; these six include high-risk ones).
    assert!(
        high_risk > 0 && high_risk < n,
        "{high_risk} of {n} high-risk"
    );
    let mut review = Reader::new(std::slice::from_ref(&w.config.topics.review));
    review.read_until(Duration::from_secs(10), |r| r.len() >= high_risk);
    review.drain_for(Duration::from_secs(1));
    assert_eq!(review.records.len(), high_risk);
    for m in &review.records {
        assert_eq!(
            header(m, "baton-review-reason").as_deref(),
            Some(r#"review_when: steps.classify.json.risk == "high""#)
        );
        assert_eq!(value(m)["step"], "classify");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_no_model_gets_right_is_a_dead_letter_not_a_result() {
    let mock = mock(&mock_config("invalid", "invalid")).await;
    let w = World::new("contracts-bad", &mock.base_url(), &contracts_config()).await;
    let _worker = w.worker();
    produce(&w.input(), contracts(2)).await;
    let mut dlq = Reader::new(&[w.dlq()]);
    assert!(dlq.read_until(Duration::from_secs(60), |r| r.len() >= 2));
    for m in &dlq.records {
        assert_eq!(
            header(m, "baton-error-class").as_deref(),
            Some("invalid_output")
        );
        assert_eq!(
            header(m, "baton-attempt").as_deref(),
            Some("4"),
            "two models, each repaired once"
        );
        assert_eq!(header(m, "baton-last-model").as_deref(), Some("premium"));
    }
    let mut results = Reader::new(&[w.results(), format!("{}contracts.classify", w.prefix)]);
    results.drain_for(Duration::from_secs(2));
    assert!(results.records.is_empty(), "nothing invalid flowed on");
}

/// `baton status` (the binary) with `args`, parsed from its `--json` output.
fn status_json(w: &World, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("status")
        .arg("--config")
        .arg(&w.config_path)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "baton status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_stuck_at_step_two_shows_in_status_and_moves_to_done_after_recovery() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    mock.set_model(
        "b",
        baton::mock_llm::ModelBehavior::from_json_slice(
            // Slow as well as down: a job still running after a second is said to be running.
            br#"{"latency":{"fixed_ms":1500},"errors":[{"status":503,"rate":1.0}]}"#,
            "b",
        )
        .unwrap(),
    )
    .unwrap();
    let config = format!(
        r#"{}
[retry]
tiers = ["2s", "3s", "4s", "5s", "6s", "7s", "8s"]

[models.a]
base_url = "{{MOCK}}"
[models.b]
base_url = "{{MOCK}}"

[[pipelines.contracts.steps]]
name = "extract"
model = "a"
[[pipelines.contracts.steps]]
name = "classify"
model = "b"
"#,
        config_head("provider_attempts = 1\nround_deadline_ms = 2000")
    );
    let w = World::new("status", &mock.base_url(), &config).await;
    let _worker = w.worker();
    produce(
        &w.input(),
        vec![(Some(b"stuck-1".to_vec()), job("stuck-1", "hello"))],
    )
    .await;

    // Its model down, the job goes round step two's retry tiers: stuck there.
    let start = std::time::Instant::now();
    let stuck = loop {
        let s = status_json(&w, &["--pipeline", "contracts", "--stuck-for", "5s"]);
        let found = s["stuck"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["latest"]["job_id"] == "stuck-1")
            .cloned();
        if let Some(j) = found {
            break j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "never stuck: {s}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(stuck["latest"]["step"], "classify");
    assert_eq!(
        stuck["latest"]["steps_done"],
        serde_json::json!(["extract"])
    );
    let last = stuck["latest"]["state"].as_str().unwrap();
    assert!(["running", "retrying"].contains(&last), "{stuck}");
    let history = status_json(&w, &["stuck-1"]);
    let classes: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["error_class"].as_str())
        .collect();
    assert!(classes.contains(&"provider_error"), "{history}");

    // The model recovers: the next round answers, and the job is done.
    mock.set_model("b", baton::mock_llm::ModelBehavior::default())
        .unwrap();
    let mut results = Reader::new(&[w.results()]);
    assert!(results.read_until(Duration::from_secs(40), |r| !r.is_empty()));
    let start = std::time::Instant::now();
    loop {
        let history = status_json(&w, &["stuck-1"]);
        let latest = history.as_array().unwrap().last().unwrap().clone();
        if latest["state"] == "done" {
            assert_eq!(latest["step"], "classify");
            let states: Vec<&str> = history
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["state"].as_str().unwrap())
                .collect();
            for s in ["running", "queued", "retrying", "done"] {
                assert!(states.contains(&s), "{states:?}");
            }
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{latest}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let s = status_json(&w, &["--pipeline", "contracts", "--stuck-for", "5s"]);
    assert_eq!(s["stuck"], serde_json::json!([]));
    assert_eq!(
        s["counts"],
        serde_json::json!([{"step": "classify", "state": "done", "jobs": 1}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fallback_with_a_smaller_window_gets_a_fitted_prompt_never_a_400() {
    // mock-llm answers 400 context_length_exceeded above 900 estimated tokens for `tiny`.
    let mock = mock(
        r#"
request_log_messages = true
[default]
latency = { fixed_ms = 5 }
[models.big]
errors = [{ status = 503, rate = 1.0 }]
[models.tiny]
context_window = 900
[models.sum]
answer = { canned = "EARLIER: the customer asked about invoices 1 to 14." }
"#,
    )
    .await;
    let config = format!(
        r#"{}
[models.big]
base_url = "{{MOCK}}"
context_window = 100000
[models.tiny]
base_url = "{{MOCK}}"
context_window = 700
[models.sum]
base_url = "{{MOCK}}"
context_window = 100000

[[pipelines.t.steps]]
name = "answer"
model = "big"
fallbacks = ["tiny"]
max_tokens = 100
context = {{ overflow = "truncate" }}

[[pipelines.s.steps]]
name = "answer"
model = "big"
fallbacks = ["tiny"]
max_tokens = 100
context = {{ overflow = "summarize", summarize_model = "sum" }}
"#,
        config_head("provider_attempts = 1")
    );
    let w = World::new("fit", &mock.base_url(), &config).await;
    let _worker = w.worker();
    let messages: Vec<Value> = (0..30)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            serde_json::json!({"role": role, "content": format!("turn {i}: about invoice {i}, {}", "and some more detail ".repeat(10))})
        })
        .collect();
    for p in ["t", "s"] {
        let job = serde_json::json!({"id": format!("{p}-1"), "messages": messages});
        let topic = format!("{}{p}.answer", w.prefix);
        produce(&topic, vec![(None, serde_json::to_vec(&job).unwrap())]).await;
    }
    let mut results = Reader::new(&[w.results()]);
    assert!(results.read_until(Duration::from_secs(30), |r| r.len() >= 2));
    for m in &results.records {
        assert_eq!(value(m)["model"], "tiny", "{}", value(m));
    }
    let log = mock.state().request_log();
    assert!(
        log.iter()
            .all(|r| r.outcome != baton::mock_llm::Outcome::ContextLengthExceeded),
        "a prompt too long for tiny reached it"
    );
    let tiny: Vec<_> = log.iter().filter(|r| r.model == "tiny").collect();
    assert_eq!(tiny.len(), 2);
    for r in &tiny {
        assert!(r.messages.len() < 30, "older turns dropped");
        assert_eq!(r.messages.last().unwrap().content, messages[29]["content"]);
    }
    let summarized = tiny
        .iter()
        .filter(|r| {
            r.messages
                .iter()
                .any(|m| m.content.contains("EARLIER: the customer"))
        })
        .count();
    assert_eq!(
        summarized, 1,
        "the summarize pipeline's prompt carries the summary"
    );
    assert_eq!(log.iter().filter(|r| r.model == "sum").count(), 1);
}
