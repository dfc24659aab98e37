//! The router against a real broker: the support-triage pattern (rules, then a cheap classifier
//! model, then simple tickets to a cheap answerer and complex ones to premium, with a sticky
//! A/B variant), checked job by job against what the config says, and cost checked against
//! mock-llm's own record of the usage it reported.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use baton::router::pick_variant;
use common::*;
use serde_json::Value;

const MOCK: &str = r#"
seed = 11
[default]
latency = { fixed_ms = 20 }
[models.nano]
answer = { classify = { rules = [{ contains = ["SSO", "reconcile"], answer = "complex" }], otherwise = "simple" } }
[models.mini]
output_tokens = [20, 60]
[models.sonnet]
output_tokens = [60, 120]
"#;

fn config() -> String {
    config_head("max_in_flight = 256")
        + r#"
[models.triage]
model = "nano"
base_url = "{MOCK}"
price_input_per_mtok = 0.10
price_output_per_mtok = 0.40
sensitivities = ["public", "internal"]

[models.cheap]
model = "mini"
base_url = "{MOCK}"
price_input_per_mtok = 0.15
price_output_per_mtok = 0.60
sensitivities = ["public", "internal"]

[models.premium]
model = "sonnet"
base_url = "{MOCK}"
price_input_per_mtok = 3.0
price_output_per_mtok = 15.0
sensitivities = ["public", "internal", "confidential"]

[routes.triage]
default_class = "simple"
[[routes.triage.rules]]
name = "legal-terms"
keywords = ["indemnity", "MSA"]
class = "complex"
[routes.triage.classes.simple]
models = ["cheap", "premium"]
[routes.triage.classes.complex]
models = ["premium"]
[routes.triage.classifier]
model = "triage"
labels = ["simple", "complex"]
[[routes.triage.variants]]
name = "control"
weight = 80
[[routes.triage.variants]]
name = "premium-for-all"
weight = 20
classes.simple.models = ["premium", "cheap"]

[[pipelines.support.steps]]
name = "answer"
route = "triage"
system_prompt = "Answer the ticket."
"#
}

const TICKETS: &[(&str, &str, &str)] = &[
    // text, expected class, what decides it
    ("How do I reset my password?", "simple", "classifier"),
    (
        "Where is my parcel? It was due Monday.",
        "simple",
        "classifier",
    ),
    (
        "Our SSO login fails for new users.",
        "complex",
        "classifier",
    ),
    (
        "Please reconcile invoices 12 and 13.",
        "complex",
        "classifier",
    ),
    ("Does the MSA cap our liability?", "complex", "legal-terms"),
    (
        "Is the indemnity in clause 9 uncapped?",
        "complex",
        "legal-terms",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn support_triage_splits_by_the_rules_and_bills_mock_usage_times_prices() {
    let mock = mock(MOCK).await;
    let world = World::new("triage", &mock.base_url(), &config()).await;
    let route = &world.config.routes[world.config.steps[0].route];

    let n = 240;
    let mut expected: HashMap<String, (&str, &str, &str)> = HashMap::new();
    let mut records = Vec::new();
    for i in 0..n {
        let (text, class, decided_by) = TICKETS[i % TICKETS.len()];
        let id = format!("t{i:04}");
        let variant = route.variants[pick_variant(route, &id).0]
            .name
            .as_deref()
            .unwrap();
        let model = match (class, variant) {
            ("complex", _) => "premium",
            ("simple", "control") => "cheap",
            _ => "premium",
        };
        expected.insert(id.clone(), (class, decided_by, model));
        records.push((Some(id.clone().into_bytes()), job(&id, text)));
    }
    produce(&world.input(), records).await;
    let _worker = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(
        reader.read_until(Duration::from_secs(90), |r| distinct(&result_ids(r)) >= n),
        "only {} results",
        reader.records.len()
    );

    let cfg = &world.config;
    let price = |name: &str| cfg.model(name).unwrap();
    let mut by_model: HashMap<String, usize> = HashMap::new();
    let mut by_variant: HashMap<String, usize> = HashMap::new();
    let mut total_cost = 0.0;
    let mut seen = std::collections::HashSet::new();
    for m in &reader.records {
        let v = value(m);
        let id = v["id"].as_str().unwrap().to_string();
        if !seen.insert(id.clone()) {
            continue;
        }
        let (class, decided_by, model) = expected[&id];
        let route = &v["route"];
        assert_eq!(route["class"], class, "{id}: {v}");
        assert_eq!(route["rule"], decided_by, "{id}: {v}");
        assert_eq!(v["model"], model, "{id}: {v}");
        assert_eq!(route["candidates"][0], model, "{id}: {v}");
        // The variant is in the result and in the headers, and is the key's.
        let variant = v["variant"].as_str().unwrap();
        assert_eq!(header(m, "baton-variant").as_deref(), Some(variant));
        assert_eq!(route["variant"], variant);
        *by_variant.entry(variant.to_string()).or_default() += 1;
        *by_model.entry(model.to_string()).or_default() += 1;

        // Cost = the answering call's usage × its prices + the classification call's cost.
        let usage = &v["usage"];
        let answer_cost = price(model).cost_usd(
            usage["input_tokens"].as_u64().unwrap(),
            usage["output_tokens"].as_u64().unwrap(),
        );
        let classifier_cost = route["classifier"]["cost_usd"].as_f64().unwrap_or(0.0);
        if decided_by == "classifier" {
            assert_eq!(route["classifier"]["valid"], true, "{v}");
            assert!(classifier_cost > 0.0);
        } else {
            assert_eq!(route["classifier"], Value::Null, "rules decided: no call");
        }
        let cost = v["cost_usd"].as_f64().unwrap();
        assert!(
            (cost - (answer_cost + classifier_cost)).abs() < 1e-8,
            "{id}: cost {cost} != {answer_cost} + {classifier_cost}"
        );
        assert_eq!(v["attempts"], 1);
        total_cost += cost;
    }
    assert_eq!(seen.len(), n);
    assert!(
        by_variant["control"] > 150 && by_variant["premium-for-all"] > 25,
        "{by_variant:?}"
    );

    // mock-llm's own log: every request it answered, with the usage it reported.
    let log = mock.request_log();
    let mut mock_cost = 0.0;
    let mut calls: HashMap<String, usize> = HashMap::new();
    for r in &log {
        assert_eq!(r.status, 200, "{r:?}");
        let name = match r.model.as_str() {
            "nano" => "triage",
            "mini" => "cheap",
            "sonnet" => "premium",
            other => panic!("unexpected model {other}"),
        };
        *calls.entry(name.to_string()).or_default() += 1;
        mock_cost += price(name).cost_usd(r.prompt_tokens.into(), r.completion_tokens.into());
    }
    // One classification per ticket the rules left open, one answer per ticket.
    assert_eq!(calls["triage"], n / 3 * 2, "{calls:?}");
    assert_eq!(
        calls.get("cheap").copied().unwrap_or(0),
        by_model.get("cheap").copied().unwrap_or(0)
    );
    assert_eq!(calls["premium"], by_model["premium"]);
    assert!(
        (mock_cost - total_cost).abs() < 1e-6 * mock_cost.max(1e-9) + 1e-9,
        "results bill {total_cost}, mock-llm reported usage worth {mock_cost}"
    );
}

const BUDGET_MOCK: &str = r#"
seed = 3
[default]
latency = { fixed_ms = 10 }
output_tokens = [100, 100]
"#;

fn budget_config() -> String {
    config_head("")
        + r#"
[models.m]
base_url = "{MOCK}"
price_input_per_mtok = 0.0
price_output_per_mtok = 1000.0

[[pipelines.p.steps]]
name = "draft"
model = "m"
max_tokens = 100

[[pipelines.p.steps]]
name = "polish"
model = "m"
max_tokens = 100
"#
}

/// A job's cost ceiling covers its whole pipeline: what the first step billed travels with the
/// job, and the second step refuses to exceed the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_cost_ceiling_holds_across_the_steps_of_a_pipeline() {
    let mock = mock(BUDGET_MOCK).await;
    let world = World::new("budget", &mock.base_url(), &budget_config()).await;
    let draft = world.config.steps[0].topic.clone();
    let polish = world.config.steps[1].topic.clone();
    // Each call bills 100 output tokens at $1,000 per million: $0.10.
    let job = |id: &str, max_cost: Option<f64>| {
        let mut v = serde_json::json!({ "id": id, "input": "write a reply" });
        if let Some(c) = max_cost {
            v["policy"] = serde_json::json!({ "max_cost_usd": c });
        }
        (
            Some(id.as_bytes().to_vec()),
            serde_json::to_vec(&v).unwrap(),
        )
    };
    produce(
        &draft,
        vec![
            job("free", None),
            job("roomy", Some(0.25)),
            job("tight", Some(0.15)),
        ],
    )
    .await;
    let _worker = world.worker();
    let mut out = Reader::new(&[world.results(), format!("{polish}.dlq"), polish.clone()]);
    assert!(out.read_until(Duration::from_secs(60), |r| {
        r.iter().filter(|m| m.topic() != polish).count() >= 3
    }));
    let by_topic = |t: &str| -> Vec<&rdkafka::message::OwnedMessage> {
        out.records.iter().filter(|m| m.topic() == t).collect()
    };
    use rdkafka::Message;
    // The forwarded jobs carry what the first step billed.
    for m in by_topic(&polish) {
        let spent: f64 = header(m, "baton-job-cost-usd").unwrap().parse().unwrap();
        assert!((spent - 0.1).abs() < 1e-9, "{spent}");
    }
    let mut results = result_ids(
        &by_topic(&world.results())
            .into_iter()
            .cloned()
            .collect::<Vec<_>>(),
    );
    results.sort();
    assert_eq!(results, vec!["free", "roomy"]);
    let dead = by_topic(&format!("{polish}.dlq"));
    assert_eq!(dead.len(), 1);
    assert_eq!(header(dead[0], "baton-job-id").as_deref(), Some("tight"));
    assert_eq!(
        header(dead[0], "baton-error-class").as_deref(),
        Some("policy_unsatisfiable")
    );
    let why = header(dead[0], "baton-error").unwrap();
    assert!(why.contains("already spent"), "{why}");
}
