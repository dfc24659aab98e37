//! The decision trace `baton route --explain` prints: which step and route, the prompt's
//! tokens, the class and the rule that gave it (and the rules that did not), the variant and
//! the key's bucket, every model with why it was kept or dropped and its estimate, and the
//! final order.

use std::fmt::Write;

use super::{rule_matches, rule_tokenizer, ClassChoice, Decision};
use crate::config::{Config, RouteConfig, StepConfig};
use crate::context::Prompt;
use crate::envelope::Job;
use crate::util::usd;

/// The trace of `decision` for `job` on `step`, as lines of text.
pub fn render(
    config: &Config,
    step: &StepConfig,
    job: &Job,
    prompt: &Prompt,
    key: &str,
    decision: &Decision,
) -> String {
    let route = &config.routes[decision.route];
    let mut o = String::new();
    header(&mut o, step, route, job, key);
    classification(&mut o, config, route, prompt, job, decision);
    variant(&mut o, route, decision);
    models(&mut o, config, route, decision);
    let order = if decision.candidates.is_empty() {
        "none: policy_unsatisfiable (the job would be dead-lettered)".to_string()
    } else {
        names(config, &decision.candidates).join(" -> ")
    };
    let _ = writeln!(o, "\norder: {order}");
    o
}

fn names<'a>(config: &'a Config, models: &[usize]) -> Vec<&'a str> {
    models
        .iter()
        .map(|&m| config.models[m].name.as_str())
        .collect()
}

/// The job, its step and route, and its policy.
fn header(o: &mut String, step: &StepConfig, route: &RouteConfig, job: &Job, key: &str) {
    let _ = writeln!(
        o,
        "job {} on {}.{} (topic {}), route {:?}, key {:?}",
        job.id, step.pipeline, step.name, step.topic, route.name, key
    );
    let policy = job.policy.clone().unwrap_or_default();
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".to_string());
    let _ = writeln!(
        o,
        "policy: sensitivity {}, residency {}, max_cost_usd {}, max_latency_ms {}",
        job.sensitivity().as_str(),
        policy.residency.as_deref().unwrap_or("any"),
        or_none(policy.max_cost_usd.map(|v| v.to_string())),
        or_none(policy.max_latency_ms.map(|v| v.to_string())),
    );
}

/// The class: each rule's verdict, the classifier's answer, and what decided.
fn classification(
    o: &mut String,
    config: &Config,
    route: &RouteConfig,
    prompt: &Prompt,
    job: &Job,
    decision: &Decision,
) {
    let _ = writeln!(o, "\nclass: {}", route.classes[decision.class]);
    let rule_tokens = prompt.tokens(rule_tokenizer(config, route));
    for (i, rule) in route.rules.iter().enumerate() {
        let verdict = match &decision.choice {
            ClassChoice::Rule(m) if m.rule == i => format!("MATCHED ({})", m.why),
            ClassChoice::Rule(m) if m.rule < i => "not checked (an earlier rule matched)".into(),
            _ => match rule_matches(rule, job, prompt, rule_tokens) {
                Some(_) => "matches".into(),
                None => "no match".into(),
            },
        };
        let _ = writeln!(
            o,
            "  rule {:<24} -> {:<12} {}",
            rule.name, route.classes[rule.class], verdict
        );
    }
    match (&decision.choice, &decision.record.classifier) {
        (ClassChoice::Rule(_), _) => {}
        (_, Some(call)) => {
            let verdict = if call.valid {
                "a valid label".to_string()
            } else {
                call.error.clone().unwrap_or_else(|| "invalid".into())
            };
            let answer = call.answer.as_deref().unwrap_or("");
            let _ = writeln!(
                o,
                "  classifier {} answered {answer:?}: {verdict}",
                call.model
            );
        }
        (_, None) => {
            if let Some(c) = &route.classifier {
                let labels: Vec<&str> = c
                    .labels
                    .iter()
                    .map(|&l| route.classes[l].as_str())
                    .collect();
                let _ = writeln!(
                    o,
                    "  classifier {} would be asked (labels: {}); not called here: pass --class LABEL to assume its answer",
                    config.models[c.model].name,
                    labels.join(", ")
                );
            }
        }
    }
    let _ = writeln!(o, "  => {}", decision.record.rule);
}

/// The A/B variant and the key's bucket, for a route with variants.
fn variant(o: &mut String, route: &RouteConfig, decision: &Decision) {
    let (v, bucket) = decision.variant;
    if route.variants.len() == 1 && route.variants[0].name.is_none() {
        return;
    }
    let total: f64 = route.variants.iter().map(|v| v.weight).sum();
    let split = route
        .variants
        .iter()
        .map(|v| {
            format!(
                "{} {:.1}%",
                v.name.as_deref().unwrap_or("-"),
                100.0 * v.weight / total
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        o,
        "\nvariant: {} (key bucket {bucket:.4} of [{split}])",
        route.variants[v].name.as_deref().unwrap_or("-"),
    );
}

/// Every model of the class: kept, last or dropped, with its estimate and why.
fn models(o: &mut String, config: &Config, route: &RouteConfig, decision: &Decision) {
    let cc = &route.variants[decision.variant.0].classes[decision.class];
    let _ = writeln!(
        o,
        "\nmodels (class {}, strategy {}):",
        route.classes[decision.class],
        decision.strategy.as_str()
    );
    for c in &decision.considered {
        let m = &config.models[c.model];
        let latency = match c.p50 {
            Some((d, true)) => format!("p50 {} ms observed", d.as_millis()),
            Some((d, false)) => format!("p50 {} ms expected", d.as_millis()),
            None => "p50 unknown".into(),
        };
        let verdict = match (&c.dropped, &c.demoted) {
            (Some(_), _) => "dropped",
            (None, Some(_)) => "last",
            (None, None) => "kept",
        };
        let why = c
            .dropped
            .as_ref()
            .or(c.demoted.as_ref())
            .map_or(String::new(), |r| format!("\n  {:<16} {:<8} {r}", "", ""));
        let _ = writeln!(
            o,
            "  {:<16} {:<8} {} in + {} out tokens ({}) = ${}, {}{}",
            m.name,
            verdict,
            c.prompt_tokens,
            c.expected_output_tokens,
            if m.tokens_exact {
                m.tokenizer.as_str().to_string()
            } else {
                format!("{}, an estimate", m.tokenizer.as_str())
            },
            usd(c.estimated_cost_usd),
            latency,
            why,
        );
    }
    if !cc.requires.is_empty() {
        let caps: Vec<&str> = cc.requires.iter().map(|c| c.as_str()).collect();
        let _ = writeln!(o, "  (the class requires {})", caps.join(", "));
    }
    if let Some(note) = &decision.latency_note {
        let _ = writeln!(o, "  note: {note}");
    }
}
