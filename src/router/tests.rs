//! Routing decisions as a pure function of config and job: tables, properties and splits.

use std::collections::HashMap;

use proptest::prelude::{prop_assert, prop_assert_eq, proptest, ProptestConfig};
use proptest::strategy::Strategy as _;

use std::time::Duration;

use super::*;
use crate::config::{Capability, Config, RouteConfig, Sensitivity};
use crate::context::{ChatRequest, Prompt};
use crate::output::label::parse as parse_label;

/// The classifier's model and request for a job (the context manager assembles it).
fn classifier_request(route: &RouteConfig, job: &Job) -> Option<(usize, ChatRequest)> {
    let c = route.classifier.as_ref()?;
    Some((c.model, ChatRequest::for_classifier(c, job)))
}

const CONFIG: &str = r#"
[models.mini]
model = "gpt-4o-mini"
base_url = "http://127.0.0.1:1/v1"
price_input_per_mtok = 0.15
price_output_per_mtok = 0.60
context_window = 16000
residency = "us"
sensitivities = ["public", "internal"]
expected_latency_ms = 300
capabilities = ["json_schema", "tools"]

[models.premium]
model = "claude-sonnet"
base_url = "http://127.0.0.1:1/v1"
price_input_per_mtok = 3.0
price_output_per_mtok = 15.0
context_window = 200000
residency = "eu"
sensitivities = ["public", "internal", "confidential"]
expected_latency_ms = 900
capabilities = ["json_schema", "tools", "vision"]

[models.onprem]
model = "llama-3.1-70b"
base_url = "http://127.0.0.1:1/v1"
price_input_per_mtok = 0.05
price_output_per_mtok = 0.05
context_window = 32000
residency = "on_prem"
sensitivities = ["public", "internal", "confidential", "restricted"]
expected_latency_ms = 600

[routes.triage]
default_class = "simple"
sensitivities = ["public", "internal", "confidential", "restricted"]
expected_output_tokens = 200

[[routes.triage.rules]]
name = "vip-tenant"
tenant = ["acme", "globex"]
class = "complex"

[[routes.triage.rules]]
name = "enterprise-plan"
metadata = { plan = "enterprise" }
class = "complex"

[[routes.triage.rules]]
name = "gold-customer"
metadata = { "customer.tier" = "gold" }
class = "complex"

[[routes.triage.rules]]
name = "legal-words"
keywords = ["indemnity", "MSA", "GDPR"]
class = "complex"

[[routes.triage.rules]]
name = "long-prompt"
min_tokens = 2000
class = "complex"

[[routes.triage.rules]]
name = "order-number"
regex = 'order #\d+'
class = "simple"

[routes.triage.classes.simple]
models = ["mini", "onprem", "premium"]
strategy = "cheapest"

[routes.triage.classes.complex]
models = ["premium", "onprem", "mini"]
strategy = "priority"

[routes.triage.classifier]
model = "mini"
labels = ["simple", "complex"]

[routes.fast]
models = ["premium", "onprem", "mini"]
strategy = "fastest"

[routes.spread]
models = ["mini", "onprem"]
strategy = "weighted"
weights = { mini = 3, onprem = 1 }

[routes.ab]
models = ["mini", "onprem"]
[[routes.ab.variants]]
name = "control"
weight = 90
[[routes.ab.variants]]
name = "onprem-first"
weight = 10
models = ["onprem", "mini"]

[pipelines.support]
steps = [{ name = "answer", route = "triage", max_tokens = 400 }]
[pipelines.fast]
steps = [{ name = "s", route = "fast" }]
[pipelines.spread]
steps = [{ name = "s", route = "spread" }]
[pipelines.ab]
steps = [{ name = "s", route = "ab" }]
[pipelines.inline]
steps = [{ name = "s", model = "mini", task_models = { hard = "premium" }, fallbacks = ["onprem"] }]
"#;

fn config() -> Config {
    Config::from_toml(CONFIG, None).unwrap()
}

fn job(v: serde_json::Value) -> Job {
    let mut v = v;
    if v.get("id").is_none() {
        v["id"] = "job-1".into();
    }
    if v.get("input").is_none() && v.get("messages").is_none() {
        v["input"] = "Hello, I need help.".into();
    }
    serde_json::from_value(v).unwrap()
}

fn step<'a>(c: &'a Config, pipeline: &str) -> &'a StepConfig {
    c.steps.iter().find(|s| s.pipeline == pipeline).unwrap()
}

fn prompt(c: &Config, s: &StepConfig, j: &Job) -> Prompt {
    Prompt::new(&c.templates, s, j).unwrap()
}

fn names(c: &Config, ids: &[usize]) -> Vec<String> {
    ids.iter().map(|&m| c.models[m].name.clone()).collect()
}

fn decide_for(c: &Config, pipeline: &str, j: &Job) -> Result<Decision, Unsatisfiable> {
    decide_offline(
        c,
        step(c, pipeline),
        j,
        &prompt(c, step(c, pipeline), j),
        &j.id,
        None,
    )
}

/// job, expected class, expected rule, expected candidate order.
#[test]
fn table_of_decisions() {
    let c = config();
    let long = "word ".repeat(2100);
    let cases: Vec<(serde_json::Value, &str, &str, Vec<&str>)> = vec![
        (
            serde_json::json!({}),
            "simple",
            "default (classifier not called offline)",
            vec!["onprem", "mini", "premium"],
        ),
        (
            serde_json::json!({"tenant": "acme"}),
            "complex",
            "vip-tenant",
            vec!["premium", "onprem", "mini"],
        ),
        (
            serde_json::json!({"tenant": "initech"}),
            "simple",
            "default (classifier not called offline)",
            vec!["onprem", "mini", "premium"],
        ),
        (
            serde_json::json!({"metadata": {"plan": "enterprise"}}),
            "complex",
            "enterprise-plan",
            vec!["premium", "onprem", "mini"],
        ),
        (
            serde_json::json!({"metadata": {"customer": {"tier": "gold"}}}),
            "complex",
            "gold-customer",
            vec!["premium", "onprem", "mini"],
        ),
        (
            serde_json::json!({"metadata": {"plan": "free"}}),
            "simple",
            "default (classifier not called offline)",
            vec!["onprem", "mini", "premium"],
        ),
        (
            serde_json::json!({"input": "Which clause of the msa controls the cap?"}),
            "complex",
            "legal-words",
            vec!["premium", "onprem", "mini"],
        ),
        // Whole words only: "MSAs" is not "MSA".
        (
            serde_json::json!({"input": "I like MSAs"}),
            "simple",
            "default (classifier not called offline)",
            vec!["onprem", "mini", "premium"],
        ),
        (
            serde_json::json!({"input": "Where is order #12345?"}),
            "simple",
            "order-number",
            vec!["onprem", "mini", "premium"],
        ),
        (
            serde_json::json!({"input": long}),
            "complex",
            "long-prompt",
            vec!["premium", "onprem", "mini"],
        ),
        // Hard constraints: confidential leaves the cheap US model out; restricted leaves
        // only on-prem; EU residency is met by the EU model and on-prem.
        (
            serde_json::json!({"tenant": "acme", "policy": {"sensitivity": "confidential"}}),
            "complex",
            "vip-tenant",
            vec!["premium", "onprem"],
        ),
        (
            serde_json::json!({"tenant": "acme", "policy": {"sensitivity": "restricted"}}),
            "complex",
            "vip-tenant",
            vec!["onprem"],
        ),
        (
            serde_json::json!({"policy": {"residency": "eu"}}),
            "simple",
            "default (classifier skipped: mini not allowed (residency eu required, model is us))",
            vec!["onprem", "premium"],
        ),
        // A JSON Schema answer needs the capability: on-prem has none.
        (
            serde_json::json!({"response_format": {"type": "json_schema", "json_schema": {}}}),
            "simple",
            "default (classifier not called offline)",
            vec!["mini", "premium"],
        ),
    ];
    for (v, class, rule, want) in cases {
        let j = job(v.clone());
        let d = decide_for(&c, "support", &j).unwrap();
        assert_eq!(d.record.class, class, "{v}");
        assert_eq!(d.record.rule, rule, "{v}");
        assert_eq!(d.record.candidates, want, "{v}");
        assert_eq!(d.record.route, "triage");
        assert_eq!(d.record.estimated_cost_usd.len(), want.len());
    }
}

#[test]
fn estimates_use_exact_tokens_and_prices() {
    let c = config();
    let j = job(serde_json::json!({"input": "Hello, world!"}));
    let d = decide_for(&c, "support", &j).unwrap();
    let mini = c.models.iter().position(|m| m.name == "mini").unwrap();
    let e = d.considered(mini).unwrap();
    // No system prompt: one message of 4 tokens, 4 framing, 3 priming.
    assert_eq!(e.prompt_tokens, 11);
    assert_eq!(e.expected_output_tokens, 200);
    let want = (11.0 * 0.15 + 200.0 * 0.60) / 1e6;
    assert!((e.estimated_cost_usd - want).abs() < 1e-15, "{e:?}");
    assert_eq!(d.record.prompt_tokens, 11);
}

#[test]
fn a_cost_ceiling_drops_expensive_models_and_can_leave_none() {
    let c = config();
    // 200 output tokens: mini ≈ $0.00012, on-prem ≈ $0.00001, premium ≈ $0.003.
    let j = job(serde_json::json!({"tenant": "acme", "policy": {"max_cost_usd": 0.001}}));
    let d = decide_for(&c, "support", &j).unwrap();
    assert_eq!(d.record.candidates, vec!["onprem", "mini"]);
    let premium = d
        .record
        .dropped
        .iter()
        .find(|x| x.model == "premium")
        .unwrap();
    assert!(
        premium.reason.contains("exceeds max_cost_usd 0.001"),
        "{premium:?}"
    );

    let j = job(serde_json::json!({"policy": {"max_cost_usd": 0.000001}}));
    let e = decide_for(&c, "support", &j).unwrap_err();
    assert!(e.decision.candidates.is_empty());
    assert_eq!(e.decision.record.dropped.len(), 3);
    assert!(e.to_string().starts_with("no allowed model: "), "{e}");
}

#[test]
fn the_context_window_must_fit_prompt_and_reserved_output() {
    let c = config();
    // ~20k tokens: too big for mini (16k), fits on-prem (32k) and premium (200k).
    let j = job(serde_json::json!({"input": "word ".repeat(20_000)}));
    let d = decide_for(&c, "support", &j).unwrap();
    assert_eq!(d.record.candidates, vec!["premium", "onprem"]);
    let mini = d.record.dropped.iter().find(|x| x.model == "mini").unwrap();
    assert!(
        mini.reason.contains("exceed its context window of 16000"),
        "{mini:?}"
    );
    // The step reserves max_tokens = 400 of output: 15,700 prompt tokens no longer fit mini.
    let j = job(serde_json::json!({"input": "word ".repeat(15_700)}));
    let d = decide_for(&c, "support", &j).unwrap();
    assert!(!d.record.candidates.contains(&"mini".to_string()));
}

#[test]
fn latency_ceiling_prefers_fast_models_but_never_empties_the_list() {
    let c = config();
    let s = step(&c, "fast");
    let j = job(serde_json::json!({"policy": {"max_latency_ms": 700}}));
    let prompt = prompt(&c, s, &j);
    let run = |observed: &dyn Fn(usize) -> Option<Duration>, j: &Job| {
        decide(
            &c,
            j,
            DecideInput {
                step: s,
                prompt: &prompt,
                key: "k",
                variant: (0, 0.0),
                choice: &ClassChoice::Default("test".into()),
                spent_usd: 0.0,
            },
            None,
            observed,
        )
        .unwrap()
    };
    // Expected latencies: mini 300, on-prem 600, premium 900. Slow models go last, kept as
    // fallbacks.
    let d = run(&|_| None, &j);
    assert_eq!(d.record.candidates, vec!["mini", "onprem", "premium"]);
    assert!(d.record.dropped.is_empty());
    let premium = c.models.iter().position(|m| m.name == "premium").unwrap();
    let demoted = d.considered(premium).unwrap().demoted.clone().unwrap();
    assert!(
        demoted.contains("expected p50 900 ms exceeds max_latency_ms 700"),
        "{demoted}"
    );
    assert!(d.latency_note.is_none());
    // Observed medians replace expectations: now mini is the slow one.
    let mini = c.models.iter().position(|m| m.name == "mini").unwrap();
    let d = run(&|m| (m == mini).then(|| Duration::from_millis(2000)), &j);
    assert_eq!(d.record.candidates, vec!["onprem", "premium", "mini"]);
    assert!(d
        .considered(mini)
        .unwrap()
        .demoted
        .as_ref()
        .unwrap()
        .contains("observed p50 2000 ms"));
    // Nobody meets 100 ms: the strategy's order stands, with a note.
    let j = job(serde_json::json!({"policy": {"max_latency_ms": 100}}));
    let d = run(&|_| None, &j);
    assert_eq!(d.record.candidates, vec!["mini", "onprem", "premium"]);
    assert!(d.latency_note.is_some());
}

#[test]
fn weighted_order_survives_edits_to_other_models() {
    let c = config();
    // A model added before the others shifts every index, not the order of any key.
    let edited = CONFIG.replacen(
        "[models.mini]",
        "[models.aaa]\nbase_url = \"http://127.0.0.1:1/v1\"\n\n[models.mini]",
        1,
    );
    let e = Config::from_toml(&edited, None).unwrap();
    for i in 0..500 {
        let j = job(serde_json::json!({"id": format!("k{i}")}));
        assert_eq!(
            decide_for(&c, "spread", &j).unwrap().record.candidates,
            decide_for(&e, "spread", &j).unwrap().record.candidates
        );
    }
}

#[test]
fn the_classifier_is_bound_by_the_jobs_constraints_offline_too() {
    let c = config();
    let s = step(&c, "support");
    // mini (the classifier) may not receive confidential data: no call, default class, even
    // when an answer is assumed.
    let j = job(serde_json::json!({"policy": {"sensitivity": "confidential"}}));
    let d = decide_offline(&c, s, &j, &prompt(&c, s, &j), "job-1", Some("complex")).unwrap();
    assert_eq!(d.record.class, "simple");
    assert!(
        d.record
            .rule
            .starts_with("default (classifier skipped: mini not allowed"),
        "{}",
        d.record.rule
    );
    let call = d.record.classifier.unwrap();
    assert!(!call.valid && call.error.is_some());
    // A budget too small for even the classification call skips it as well.
    let j = job(serde_json::json!({"policy": {"max_cost_usd": 0.0000001}}));
    let (m, _) = classifier_request(&c.routes[s.route], &j).unwrap();
    assert_eq!(c.models[m].name, "mini");
    let gated = gated_classifier_request(&c, &c.routes[s.route], &j, &prompt(&c, s, &j), 0.0)
        .unwrap()
        .1;
    assert_eq!(gated.unwrap_err(), "max_cost_usd leaves no budget for it");
    // Within budget, the call's output is capped to what the budget leaves.
    let j = job(serde_json::json!({"policy": {"max_cost_usd": 0.00001}}));
    let (r, _) = gated_classifier_request(&c, &c.routes[s.route], &j, &prompt(&c, s, &j), 0.0)
        .unwrap()
        .1
        .unwrap();
    assert!(r.max_tokens.unwrap() <= 8);
}

#[test]
fn strategies_order_the_survivors() {
    let c = config();
    let j = job(serde_json::json!({}));
    // cheapest: on-prem, mini, premium (triage simple); fastest by expectation.
    assert_eq!(
        decide_for(&c, "support", &j).unwrap().record.candidates,
        vec!["onprem", "mini", "premium"]
    );
    assert_eq!(
        decide_for(&c, "fast", &j).unwrap().record.candidates,
        vec!["mini", "onprem", "premium"]
    );
    // weighted 3:1, deterministic per key.
    let mut first = HashMap::new();
    for i in 0..20_000 {
        let j = job(serde_json::json!({"id": format!("k{i}")}));
        let d = decide_for(&c, "spread", &j).unwrap();
        assert_eq!(d, decide_for(&c, "spread", &j).unwrap());
        assert_eq!(d.candidates.len(), 2);
        *first.entry(d.record.candidates[0].clone()).or_insert(0) += 1;
    }
    let share = first["mini"] as f64 / 20_000.0;
    assert!((share - 0.75).abs() < 0.02, "mini first in {share}");
}

#[test]
fn ab_split_is_within_one_point_over_100k_keys_and_sticky() {
    let c = config();
    let route = &c.routes[step(&c, "ab").route];
    let mut counts = [0usize; 2];
    let mut assigned = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let (v, u) = pick_variant(route, &format!("customer-{i}"));
        assert!((0.0..1.0).contains(&u));
        counts[v] += 1;
        assigned.push(v);
    }
    let control = counts[0] as f64 / 1000.0;
    let other = counts[1] as f64 / 1000.0;
    assert!((control - 90.0).abs() < 1.0, "control {control}%");
    assert!((other - 10.0).abs() < 1.0, "onprem-first {other}%");
    // Sticky: a config loaded again (another worker, a restart) gives every key the same variant.
    let again = config();
    let route2 = &again.routes[step(&again, "ab").route];
    for (i, v) in assigned.iter().enumerate() {
        assert_eq!(pick_variant(route2, &format!("customer-{i}")).0, *v);
    }
    // The variant changes the candidates and is recorded.
    let key = (0..)
        .map(|i| format!("customer-{i}"))
        .find(|k| pick_variant(route, k).0 == 1)
        .unwrap();
    let j = job(serde_json::json!({"id": key}));
    let d = decide_for(&c, "ab", &j).unwrap();
    assert_eq!(d.record.variant.as_deref(), Some("onprem-first"));
    assert_eq!(d.record.candidates, vec!["onprem", "mini"]);
}

#[test]
fn classifier_answers_are_validated_against_the_label_set() {
    let c = config();
    let route = &c.routes[step(&c, "support").route];
    assert_eq!(parse_label(route, "complex"), Some(1));
    assert_eq!(parse_label(route, " \"Simple\".\n"), Some(0));
    assert_eq!(parse_label(route, "I think complex"), None);
    assert_eq!(parse_label(route, ""), None);

    let j = job(serde_json::json!({}));
    let s = step(&c, "support");
    let d = decide_offline(&c, s, &j, &prompt(&c, s, &j), "job-1", Some("complex")).unwrap();
    assert_eq!(
        (d.record.class.as_str(), d.record.rule.as_str()),
        ("complex", "classifier")
    );
    assert!(d.record.classifier.as_ref().unwrap().valid);
    let d = decide_offline(
        &c,
        s,
        &j,
        &prompt(&c, s, &j),
        "job-1",
        Some("maybe complex?"),
    )
    .unwrap();
    assert_eq!(d.record.class, "simple");
    assert!(d
        .record
        .rule
        .starts_with("default (classifier answered off-label"));
    assert!(!d.record.classifier.as_ref().unwrap().valid);
}

#[test]
fn the_classifier_request_carries_the_labels_and_the_job() {
    let c = config();
    let route = &c.routes[step(&c, "support").route];
    let (m, r) = classifier_request(
        route,
        &job(serde_json::json!({"input": "reset my password"})),
    )
    .unwrap();
    assert_eq!(c.models[m].name, "mini");
    assert!(r.messages[0].content.contains("simple, complex"));
    assert_eq!(r.messages[1].content, "reset my password");
    assert_eq!(r.max_tokens, Some(8));
}

#[test]
fn inline_step_models_become_a_priority_route() {
    let c = config();
    let j = job(serde_json::json!({"task": "hard"}));
    let d = decide_for(&c, "inline", &j).unwrap();
    assert_eq!(d.record.rule, "task:hard");
    assert_eq!(d.record.candidates, vec!["premium", "mini", "onprem"]);
    let j = job(serde_json::json!({"policy": {"sensitivity": "restricted"}}));
    let d = decide_for(&c, "inline", &j).unwrap();
    assert_eq!(d.record.candidates, vec!["onprem"]);
    assert_eq!(names(&c, &d.candidates), vec!["onprem"]);
}

#[test]
fn output_cap_keeps_a_call_within_the_budget() {
    let c = config();
    let mini = c.model("mini").unwrap();
    assert_eq!(output_cap_within_budget(mini, 1000, None), None);
    // $0.001 - 1000 × 0.15e-6 = $0.00085 → 1416 tokens at $0.60/M.
    assert_eq!(
        output_cap_within_budget(mini, 1000, Some(0.001)),
        Some(1416)
    );
    assert_eq!(
        output_cap_within_budget(mini, 1_000_000, Some(0.001)),
        Some(0)
    );
}

// ---- property: hard constraints are never broken, not even by a fallback ----

const SENS: [Sensitivity; 4] = [
    Sensitivity::Public,
    Sensitivity::Internal,
    Sensitivity::Confidential,
    Sensitivity::Restricted,
];
const RES: [&str; 4] = ["us", "eu", "on_prem", "ap"];

fn arb_config() -> impl proptest::strategy::Strategy<Value = String> {
    let model = (
        proptest::collection::vec(0usize..4, 1..4),
        proptest::option::of(0usize..4),
        1u32..100,
        proptest::bool::ANY,
    );
    (
        proptest::collection::vec(model, 1..6),
        proptest::collection::vec(proptest::collection::vec(0usize..6, 1..6), 1..4),
        0usize..4,
    )
        .prop_map(|(models, classes, strategy)| {
            let mut t = String::new();
            for (i, (sens, res, price, json)) in models.iter().enumerate() {
                let s: Vec<String> = sens.iter().map(|&k| format!("{:?}", SENS[k].as_str())).collect();
                t.push_str(&format!(
                    "[models.m{i}]\nbase_url = \"http://127.0.0.1:1/v1\"\nsensitivities = [{}]\nprice_input_per_mtok = {price}\nprice_output_per_mtok = {price}\ncontext_window = 4000\n{}{}",
                    s.join(", "),
                    res.map(|r| format!("residency = \"{}\"\n", RES[r])).unwrap_or_default(),
                    if *json { "capabilities = [\"json_schema\"]\n" } else { "" },
                ));
            }
            let strategy = ["cheapest", "fastest", "priority", "weighted"][strategy];
            t.push_str(&format!("[routes.r]\nstrategy = \"{strategy}\"\n"));
            for (ci, ms) in classes.iter().enumerate() {
                let mut ids: Vec<usize> = ms.iter().map(|&m| m % models.len()).collect();
                ids.dedup();
                let mut seen = Vec::new();
                ids.retain(|m| if seen.contains(m) { false } else { seen.push(*m); true });
                let list: Vec<String> = ids.iter().map(|m| format!("\"m{m}\"")).collect();
                let weights: Vec<String> = ids.iter().map(|m| format!("m{m} = {}", m + 1)).collect();
                t.push_str(&format!(
                    "[routes.r.classes.c{ci}]\nmodels = [{}]\nweights = {{ {} }}\n",
                    list.join(", "),
                    weights.join(", ")
                ));
                t.push_str(&format!("[[routes.r.rules]]\ntask = \"t{ci}\"\nclass = \"c{ci}\"\n"));
            }
            t.push_str("[pipelines.p]\nsteps = [{ name = \"s\", route = \"r\" }]\n");
            t
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn no_job_is_routed_or_falls_back_to_a_forbidden_model(
        text in arb_config(),
        sens in 0usize..4,
        res in proptest::option::of(0usize..4),
        task in 0usize..4,
        max_cost in proptest::option::of(0.0f64..0.001),
        json in proptest::bool::ANY,
        key in "[a-z0-9]{1,12}",
    ) {
        let c = Config::from_toml(&text, None).unwrap();
        let mut v = serde_json::json!({
            "id": key,
            "task": format!("t{task}"),
            "input": "Please summarize the attached contract.",
            "policy": {"sensitivity": SENS[sens].as_str()},
        });
        if let Some(r) = res {
            v["policy"]["residency"] = RES[r].into();
        }
        if let Some(m) = max_cost {
            v["policy"]["max_cost_usd"] = m.into();
        }
        if json {
            v["response_format"] = serde_json::json!({"type": "json_schema"});
        }
        let j: Job = serde_json::from_value(v).unwrap();
        let d = match decide_offline(&c, &c.steps[0], &j, &prompt(&c, &c.steps[0], &j), &key, None) {
            Ok(d) => d,
            Err(e) => *e.decision,
        };
        // Every candidate, first choice and fallbacks alike, is allowed.
        for &m in &d.candidates {
            let model = &c.models[m];
            prop_assert!(forbidden_reason(model, &j).is_none(), "{} got a forbidden job", model.name);
            if json {
                prop_assert!(model.capabilities.contains(&Capability::JsonSchema));
            }
            if let Some(max) = max_cost {
                prop_assert!(d.considered(m).unwrap().estimated_cost_usd <= max);
            }
        }
        // Every forbidden model of the class was dropped, with a reason.
        for cons in &d.considered {
            if forbidden_reason(&c.models[cons.model], &j).is_some() {
                prop_assert!(cons.dropped.is_some());
                prop_assert!(!d.candidates.contains(&cons.model));
            }
        }
        prop_assert_eq!(d.record.candidates.len(), d.candidates.len());
    }
}
