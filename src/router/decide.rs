//! Stages 3 and 4 of a decision: the hard constraints every candidate of the class must meet,
//! then the strategy's order (and the latency preference, which only moves slow models last).

use std::time::Duration;

use super::classify::{unit, ClassChoice};
use crate::config::{
    Capability, ClassConfig, Config, ModelConfig, Overflow, RouteConfig, Strategy,
};
use crate::context::Prompt;
use crate::envelope::{ClassifierCall, DroppedModel, Job, Policy, RouteDecision};
use crate::util::{round_usd, usd};

/// Output tokens expected of a call when neither the route nor the request says.
pub const DEFAULT_EXPECTED_OUTPUT_TOKENS: u32 = 256;

/// Why `model` may not receive `job` by its sensitivity or residency, if it may not.
pub fn forbidden_reason(model: &ModelConfig, job: &Job) -> Option<String> {
    let sensitivity = job.sensitivity();
    if !model.sensitivities.contains(&sensitivity) {
        return Some(format!("sensitivity {} not allowed", sensitivity.as_str()));
    }
    if let Some(required) = job.policy.as_ref().and_then(|p| p.residency.as_deref()) {
        let ok = match model.residency.as_deref() {
            Some(r) => r == required || r == "on_prem",
            None => false,
        };
        if !ok {
            return Some(format!(
                "residency {} required, model is {}",
                required,
                model.residency.as_deref().unwrap_or("untagged")
            ));
        }
    }
    None
}

/// The capabilities a job needs by itself (a JSON Schema response format needs `json_schema`).
pub fn job_capabilities(job: &Job) -> Vec<Capability> {
    let mut caps = Vec::new();
    let kind = job
        .response_format
        .as_ref()
        .and_then(|f| f.get("type"))
        .and_then(|t| t.as_str());
    if kind == Some("json_schema") {
        caps.push(Capability::JsonSchema);
    }
    caps
}

/// The most output tokens a call on `model` may produce within the job's remaining budget, or
/// `None` when the job has no cost ceiling. Zero means the prompt alone exceeds the budget.
pub fn output_cap_within_budget(
    model: &ModelConfig,
    prompt_tokens: u64,
    remaining_usd: Option<f64>,
) -> Option<u64> {
    let remaining = remaining_usd?;
    let left = remaining - model.cost_usd(prompt_tokens, 0);
    if left <= 0.0 {
        return Some(0);
    }
    if model.price_output_per_mtok <= 0.0 {
        return None;
    }
    Some((left * 1_000_000.0 / model.price_output_per_mtok).floor() as u64)
}

/// What a model looked like to the router.
#[derive(Debug, Clone, PartialEq)]
pub struct Considered {
    /// Model index.
    pub model: usize,
    /// Prompt tokens with the model's tokenizer.
    pub prompt_tokens: u64,
    /// Output tokens the estimate assumes.
    pub expected_output_tokens: u64,
    /// Estimated cost of one call, in USD.
    pub estimated_cost_usd: f64,
    /// Median latency used, and whether it was observed (or configured).
    pub p50: Option<(Duration, bool)>,
    /// `None` when kept; the reason when dropped.
    pub dropped: Option<String>,
    /// Why a kept model was moved to the end of the list (it exceeds `max_latency_ms`).
    pub demoted: Option<String>,
}

/// A routing decision and its trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Route index in [`Config::routes`].
    pub route: usize,
    /// Variant index, and the key's bucket.
    pub variant: (usize, f64),
    /// Class index.
    pub class: usize,
    /// How the class was chosen.
    pub choice: ClassChoice,
    /// The class's strategy.
    pub strategy: Strategy,
    /// Every model of the class, in config order, with its verdict.
    pub considered: Vec<Considered>,
    /// Kept models (indices), in the order to try them.
    pub candidates: Vec<usize>,
    /// A note on the latency ceiling, when it could not be met by anyone.
    pub latency_note: Option<String>,
    /// Cost already spent before the decision (the classifier call), in USD.
    pub spent_usd: f64,
    /// What the result envelope reports.
    pub record: RouteDecision,
}

impl Decision {
    /// The estimate for candidate `model`.
    pub fn considered(&self, model: usize) -> Option<&Considered> {
        self.considered.iter().find(|c| c.model == model)
    }
}

/// No model may serve the job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no allowed model: {}", .decision.record.dropped.iter().map(|d| format!("{} ({})", d.model, d.reason)).collect::<Vec<_>>().join("; "))]
pub struct Unsatisfiable {
    /// The decision, with every dropped model.
    pub decision: Box<Decision>,
}

/// The inputs of [`decide`] besides config and job.
#[derive(Debug, Clone, Copy)]
pub struct DecideInput<'a> {
    /// The step.
    pub step: &'a crate::config::StepConfig,
    /// The job's prompt.
    pub prompt: &'a Prompt,
    /// The routing key (record key, else job id).
    pub key: &'a str,
    /// The variant and bucket from [`super::pick_variant`].
    pub variant: (usize, f64),
    /// How the class was chosen.
    pub choice: &'a ClassChoice,
    /// USD spent before the decision (classification).
    pub spent_usd: f64,
}

/// Stages 3 and 4: constraints and strategy for the chosen class. `observed` gives a model's
/// observed median latency, if it has one.
pub fn decide(
    config: &Config,
    job: &Job,
    input: DecideInput<'_>,
    classifier: Option<ClassifierCall>,
    observed: &dyn Fn(usize) -> Option<Duration>,
) -> Result<Decision, Unsatisfiable> {
    let route = &config.routes[input.step.route];
    let class = match input.choice {
        ClassChoice::Rule(m) => route.rules[m.rule].class,
        ClassChoice::Classifier(c) => *c,
        ClassChoice::Default(_) => route.default_class,
    };
    let cc = &route.variants[input.variant.0].classes[class];
    let policy = job.policy.clone().unwrap_or_default();
    let limits = Limits::of(cc, job, &input, &policy);
    let mut considered: Vec<Considered> = cc
        .models
        .iter()
        .map(|&m| limits.consider(config, m, job, input.prompt, observed))
        .collect();
    let latency_note = policy
        .max_latency_ms
        .and_then(|max| demote_slow(&mut considered, max));
    let candidates = order(config, route, class, cc, &considered, input.key);
    let record = record(
        config,
        route,
        class,
        &input,
        classifier,
        &considered,
        &candidates,
    );
    let decision = Decision {
        route: input.step.route,
        variant: input.variant,
        class,
        choice: input.choice.clone(),
        strategy: cc.strategy,
        considered,
        candidates,
        latency_note,
        spent_usd: input.spent_usd,
        record,
    };
    if decision.candidates.is_empty() {
        return Err(Unsatisfiable {
            decision: Box::new(decision),
        });
    }
    Ok(decision)
}

/// What every candidate of a class is held to.
struct Limits {
    /// Capabilities the class and the job require.
    required: Vec<Capability>,
    /// Output tokens the cost estimate assumes.
    expected_out: u64,
    /// Output tokens the context window must leave room for.
    reserved_out: u64,
    /// Whether a model whose window the prompt does not fit is dropped (the step's overflow
    /// strategy is `larger_model`); otherwise the prompt is fitted to it, or rejected.
    window_filter: bool,
    /// USD left under the job's ceiling, if it has one.
    budget: Option<f64>,
    /// The ceiling itself, and what was spent before (for the reasons given).
    max_cost: Option<f64>,
    spent: f64,
}

impl Limits {
    fn of(cc: &ClassConfig, job: &Job, input: &DecideInput<'_>, policy: &Policy) -> Limits {
        let mut required = cc.requires.clone();
        required.extend(
            job_capabilities(job)
                .into_iter()
                .filter(|c| !cc.requires.contains(c)),
        );
        let max_out = input.prompt.request.max_tokens;
        let expected_out = u64::from(
            cc.expected_output_tokens
                .unwrap_or(max_out.unwrap_or(DEFAULT_EXPECTED_OUTPUT_TOKENS))
                .min(max_out.unwrap_or(u32::MAX)),
        );
        Limits {
            required,
            expected_out,
            reserved_out: max_out.map_or(expected_out, u64::from),
            window_filter: input.step.context.overflow == Overflow::LargerModel,
            budget: policy.max_cost_usd.map(|m| m - input.spent_usd),
            max_cost: policy.max_cost_usd,
            spent: input.spent_usd,
        }
    }

    /// Model `m` checked against the job's hard constraints, with its estimates.
    fn consider(
        &self,
        config: &Config,
        m: usize,
        job: &Job,
        prompt: &Prompt,
        observed: &dyn Fn(usize) -> Option<Duration>,
    ) -> Considered {
        let model = &config.models[m];
        let prompt_tokens = prompt.tokens(model.tokenizer);
        let estimated_cost_usd = model.cost_usd(prompt_tokens, self.expected_out);
        Considered {
            model: m,
            prompt_tokens,
            expected_output_tokens: self.expected_out,
            estimated_cost_usd,
            p50: observed(m)
                .map(|d| (d, true))
                .or(model.expected_latency.map(|d| (d, false))),
            dropped: self.drop_reason(model, job, prompt_tokens, estimated_cost_usd),
            demoted: None,
        }
    }

    /// Why `model` may not serve the job, if it may not: policy, capabilities, window, cost.
    fn drop_reason(
        &self,
        model: &ModelConfig,
        job: &Job,
        prompt_tokens: u64,
        cost: f64,
    ) -> Option<String> {
        if let Some(r) = forbidden_reason(model, job) {
            return Some(r);
        }
        let missing: Vec<&str> = self
            .required
            .iter()
            .filter(|c| !model.capabilities.contains(c))
            .map(|c| c.as_str())
            .collect();
        if !missing.is_empty() {
            return Some(format!("lacks capability {}", missing.join(", ")));
        }
        if self.window_filter && prompt_tokens + self.reserved_out > u64::from(model.context_window)
        {
            return Some(format!(
                "{prompt_tokens} prompt + {} output tokens exceed its context window of {}",
                self.reserved_out, model.context_window
            ));
        }
        match (self.budget, self.max_cost) {
            (Some(b), Some(max)) if cost > b => Some(format!(
                "estimated ${} exceeds max_cost_usd {}{}",
                usd(cost),
                max,
                if self.spent > 0.0 {
                    format!(" (${} already spent)", usd(self.spent))
                } else {
                    String::new()
                }
            )),
            _ => None,
        }
    }
}

/// The latency ceiling is a preference: kept models slower than `max` ms are marked to go
/// last, still there as fallbacks. A note when no kept model meets it.
fn demote_slow(considered: &mut [Considered], max: u64) -> Option<String> {
    let limit = Duration::from_millis(max);
    for c in considered.iter_mut().filter(|c| c.dropped.is_none()) {
        if let Some((d, observed)) = c.p50.filter(|(d, _)| *d > limit) {
            c.demoted = Some(format!(
                "{} p50 {} ms exceeds max_latency_ms {max}",
                if observed { "observed" } else { "expected" },
                d.as_millis()
            ));
        }
    }
    let mut kept = considered.iter().filter(|c| c.dropped.is_none()).peekable();
    let all_slow = kept.peek().is_some() && kept.all(|c| c.demoted.is_some());
    all_slow.then(|| format!("no allowed model meets max_latency_ms {max}"))
}

/// The kept models in the strategy's order, the demoted ones last.
fn order(
    config: &Config,
    route: &RouteConfig,
    class: usize,
    cc: &ClassConfig,
    considered: &[Considered],
    key: &str,
) -> Vec<usize> {
    let mut candidates: Vec<&Considered> =
        considered.iter().filter(|c| c.dropped.is_none()).collect();
    match cc.strategy {
        Strategy::Priority => {}
        Strategy::Cheapest => {
            candidates.sort_by(|a, b| a.estimated_cost_usd.total_cmp(&b.estimated_cost_usd))
        }
        Strategy::Fastest => candidates.sort_by_key(|c| c.p50.map_or(Duration::MAX, |(d, _)| d)),
        Strategy::Weighted => {
            // Efraimidis–Spirakis: a weighted draw without replacement, u^(1/w) descending,
            // with u from the job key, so the order is deterministic per key.
            let seed =
                route.hash_seed ^ xxhash_rust::xxh3::xxh3_64(route.classes[class].as_bytes());
            let score = |c: &Considered| {
                let w = cc
                    .models
                    .iter()
                    .position(|&m| m == c.model)
                    .map_or(1.0, |i| cc.weights[i]);
                // The model's name, not its index: editing other models keeps every key's order.
                let mut bytes = key.as_bytes().to_vec();
                bytes.push(0);
                bytes.extend_from_slice(config.models[c.model].name.as_bytes());
                let u =
                    unit(xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, seed)).max(f64::MIN_POSITIVE);
                u.powf(1.0 / w)
            };
            candidates.sort_by(|a, b| score(b).total_cmp(&score(a)));
        }
    }
    // Stable: within each group the strategy's order stands.
    candidates.sort_by_key(|c| c.demoted.is_some());
    candidates.iter().map(|c| c.model).collect()
}

/// What the result envelope reports about the decision.
fn record(
    config: &Config,
    route: &RouteConfig,
    class: usize,
    input: &DecideInput<'_>,
    classifier: Option<ClassifierCall>,
    considered: &[Considered],
    candidates: &[usize],
) -> RouteDecision {
    let find = |m: usize| considered.iter().find(|c| c.model == m);
    let cc = &route.variants[input.variant.0].classes[class];
    let first = candidates
        .first()
        .or(cc.models.first())
        .and_then(|&m| find(m));
    RouteDecision {
        route: route.name.clone(),
        class: route.classes[class].clone(),
        rule: match input.choice {
            ClassChoice::Rule(m) => route.rules[m.rule].name.clone(),
            ClassChoice::Classifier(_) => "classifier".to_string(),
            ClassChoice::Default(why) => format!("default ({why})"),
        },
        variant: route.variants[input.variant.0].name.clone(),
        classifier,
        prompt_tokens: first.map_or(0, |c| c.prompt_tokens),
        prompt_tokens_estimated: first.is_some_and(|c| !config.models[c.model].tokens_exact),
        candidates: candidates
            .iter()
            .map(|&m| config.models[m].name.clone())
            .collect(),
        estimated_cost_usd: candidates
            .iter()
            .filter_map(|&m| find(m))
            .map(|c| round_usd(c.estimated_cost_usd))
            .collect(),
        dropped: considered
            .iter()
            .filter_map(|c| {
                c.dropped.as_ref().map(|r| DroppedModel {
                    model: config.models[c.model].name.clone(),
                    reason: r.clone(),
                })
            })
            .collect(),
    }
}
