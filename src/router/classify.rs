//! Stages 1 and 2 of a decision: the job's A/B variant (sticky per key) and its class (the
//! first rule that holds; else the route's classifier, whose call the pipeline makes and whose
//! answer is read here; else the default class).

use super::decide::{forbidden_reason, output_cap_within_budget};
use crate::config::{ClassifierConfig, Config, RouteConfig, RuleConfig, TokenizerKind};
use crate::context::{tokens, ChatRequest, Prompt};
use crate::envelope::{ClassifierCall, Job};
use crate::util::{excerpt, round_usd};

/// The longest classifier answer kept in a decision.
const MAX_ANSWER_CHARS: usize = 64;

/// A rule that matched, and the condition that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMatch {
    /// Index into the route's rules.
    pub rule: usize,
    /// What matched, in words (`keyword "indemnity"`, `task complex`...).
    pub why: String,
}

/// How the class was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassChoice {
    /// A rule matched.
    Rule(RuleMatch),
    /// The classifier answered a valid label.
    Classifier(usize),
    /// Nothing chose; the route's default class, with why (`no rule matched`...).
    Default(String),
}

/// Whether `rule` holds for the job; `Some(why)` when it does.
pub fn rule_matches(rule: &RuleConfig, job: &Job, prompt: &Prompt, tokens: u64) -> Option<String> {
    let mut why = Vec::new();
    if !rule.task.is_empty() {
        let t = job.task.as_deref()?;
        if !rule.task.iter().any(|x| x == t) {
            return None;
        }
        why.push(format!("task {t}"));
    }
    if !rule.tenant.is_empty() {
        let t = job.tenant.as_deref()?;
        if !rule.tenant.iter().any(|x| x == t) {
            return None;
        }
        why.push(format!("tenant {t}"));
    }
    for (key, want) in &rule.metadata {
        let got = metadata_value(job.metadata.as_ref()?, key)?;
        if got != want {
            return None;
        }
        why.push(format!("metadata.{key} = {want}"));
    }
    if let Some(min) = rule.min_tokens {
        if tokens < min {
            return None;
        }
        why.push(format!("{tokens} tokens >= {min}"));
    }
    if let Some(max) = rule.max_tokens {
        if tokens > max {
            return None;
        }
        why.push(format!("{tokens} tokens <= {max}"));
    }
    if let Some(re) = &rule.keywords {
        let m = re.find(&prompt.content)?;
        why.push(format!("keyword {:?}", m.as_str()));
    }
    if let Some(re) = &rule.regex {
        let m = re.find(&prompt.content)?;
        why.push(format!("regex matched {:?}", excerpt(m.as_str(), 40)));
    }
    if why.is_empty() {
        why.push("no conditions".into());
    }
    Some(why.join(", "))
}

/// The metadata value at `key`: a top-level key, or a dotted path into nested objects
/// (`customer.plan`).
fn metadata_value<'a>(meta: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    meta.get(key).or_else(|| {
        key.split('.')
            .try_fold(meta, |v, part| v.as_object().and_then(|o| o.get(part)))
    })
}

/// The first rule of `route` that holds, if any.
pub fn classify_by_rules(
    config: &Config,
    route: &RouteConfig,
    job: &Job,
    prompt: &Prompt,
) -> Option<RuleMatch> {
    if route.rules.is_empty() {
        return None;
    }
    let tokens = prompt.tokens(rule_tokenizer(config, route));
    route.rules.iter().enumerate().find_map(|(i, r)| {
        rule_matches(r, job, prompt, tokens).map(|why| RuleMatch { rule: i, why })
    })
}

/// The tokenizer of token-count rules: the one of the default class's first model.
pub fn rule_tokenizer(config: &Config, route: &RouteConfig) -> TokenizerKind {
    route.variants[0].classes[route.default_class]
        .models
        .first()
        .map_or(TokenizerKind::O200kBase, |&m| config.models[m].tokenizer)
}

/// A uniform number in [0, 1) from a 64-bit hash.
pub(super) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The variant of `route` for a job key, and the key's bucket in [0, 1).
pub fn pick_variant(route: &RouteConfig, key: &str) -> (usize, f64) {
    let u = unit(xxhash_rust::xxh3::xxh3_64_with_seed(
        key.as_bytes(),
        route.hash_seed,
    ));
    let total: f64 = route.variants.iter().map(|v| v.weight).sum();
    let mut acc = 0.0;
    for (i, v) in route.variants.iter().enumerate() {
        acc += v.weight / total;
        if u < acc {
            return (i, u);
        }
    }
    (route.variants.len() - 1, u)
}

/// The classifier call a job may make: the request with its prompt tokens, or why the job's
/// constraints rule it out.
pub type Gate = Result<(ChatRequest, u64), String>;

/// The classifier call a job may be given: `None` when the route has no classifier, else the
/// classifier's model and either the request (its output capped to what the budget leaves)
/// with its prompt tokens, or why the job's constraints rule the call out (the classifier sees
/// the job's data, so sensitivity, residency, its context window and the cost ceiling bind it
/// like any model).
pub fn gated_classifier_request(
    config: &Config,
    route: &RouteConfig,
    job: &Job,
    prompt: &Prompt,
    spent_usd: f64,
) -> Option<(usize, Gate)> {
    let c = route.classifier.as_ref()?;
    Some((c.model, gate(config, c, job, prompt, spent_usd)))
}

fn gate(config: &Config, c: &ClassifierConfig, job: &Job, prompt: &Prompt, spent_usd: f64) -> Gate {
    let mut request = ChatRequest::for_classifier(c, job);
    let model = &config.models[c.model];
    if let Some(reason) = forbidden_reason(model, job) {
        return Err(format!("{} not allowed ({reason})", model.name));
    }
    // The classifier's instructions, then the job's messages (counted once for both calls).
    let tokens = tokens::count_chat(model.tokenizer, &request.messages[..1])
        + prompt.own_tokens(model.tokenizer);
    let out = u64::from(request.max_tokens.unwrap_or(0));
    if tokens + out > u64::from(model.context_window) {
        return Err(format!(
            "{tokens} prompt tokens exceed {}'s context window",
            model.name
        ));
    }
    let budget = job
        .policy
        .as_ref()
        .and_then(|p| p.max_cost_usd)
        .map(|b| b - spent_usd);
    match output_cap_within_budget(model, tokens, budget) {
        Some(cap) if cap < 1 => Err("max_cost_usd leaves no budget for it".into()),
        Some(cap) => {
            request.max_tokens = Some(out.min(cap) as u32);
            Ok((request, tokens))
        }
        None => Ok((request, tokens)),
    }
}

/// How the class was chosen when the classifier was not asked: `why` it was skipped.
pub fn classifier_skipped(model: &str, why: String) -> (ClassChoice, ClassifierCall) {
    (
        ClassChoice::Default(format!("classifier skipped: {why}")),
        ClassifierCall {
            model: model.to_string(),
            error: Some(why),
            ..ClassifierCall::default()
        },
    )
}

/// How the class was chosen from the classifier's `answer` (which cost `cost_usd`): its label,
/// or the default class when the answer is off-label.
pub fn classifier_answered(
    route: &RouteConfig,
    model: &str,
    answer: &str,
    cost_usd: f64,
) -> (ClassChoice, ClassifierCall) {
    let label = crate::output::label::parse(route, answer);
    let call = ClassifierCall {
        model: model.to_string(),
        answer: Some(excerpt(answer.trim(), MAX_ANSWER_CHARS)),
        valid: label.is_some(),
        error: label.is_none().then(|| "off-label answer".to_string()),
        cost_usd: round_usd(cost_usd),
    };
    match label {
        Some(l) => (ClassChoice::Classifier(l), call),
        None => (
            ClassChoice::Default("classifier answered off-label".into()),
            call,
        ),
    }
}

/// How the class was chosen when the classifier call failed with `class`.
pub fn classifier_failed(model: &str, class: &str, error: &str) -> (ClassChoice, ClassifierCall) {
    let call = ClassifierCall {
        model: model.to_string(),
        error: Some(format!("{class} ({error})")),
        ..ClassifierCall::default()
    };
    (
        ClassChoice::Default(format!("classifier failed: {class}")),
        call,
    )
}
