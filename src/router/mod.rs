//! Router: which class a job is, and which models may serve it, in which order.
//!
//! A decision runs in four stages, each a pure function of config and job (plus the observed
//! latency medians, passed in):
//! 1. **Variant**: a route with A/B variants picks one by a hash of the job key (xxh3, seeded
//!    by the route name), so a key keeps its variant across restarts and workers.
//! 2. **Class**: the first rule whose conditions all hold (task, tenant, metadata, keywords,
//!    regex, prompt token thresholds); else the route's classifier, asked by the pipeline and
//!    validated here against its label set; else the default class.
//! 3. **Constraints**: every candidate of the class is checked for sensitivity, residency,
//!    required capabilities, a context window that fits the prompt plus reserved output, and
//!    the job's cost ceiling (exact prompt tokens plus expected output tokens, times prices).
//!    These are hard: a model failing one is dropped, and the list handed on (fallbacks
//!    included) holds only allowed models. No allowed model is `policy_unsatisfiable`.
//! 4. **Strategy** orders the survivors: cheapest, fastest, priority, or weighted. Then
//!    `max_latency_ms`, a preference rather than a constraint: models whose median (observed
//!    over a sliding window, or configured before any call) exceeds it move to the end of the
//!    list, so they still serve as fallbacks.
//!
//! Every stage leaves a trace ([`Decision::considered`]) that `baton route --explain` prints
//! and the result envelope summarizes ([`RouteDecision`]).

pub mod explain;
pub mod latency;
pub mod tokens;

use std::sync::OnceLock;
use std::time::Duration;

use crate::config::{
    Capability, ClassConfig, Config, ModelConfig, RouteConfig, RuleConfig, StepConfig, Strategy,
    TokenizerKind,
};
use crate::envelope::{ChatMessage, ClassifierCall, DroppedModel, Job, RouteDecision};
use crate::providers::ChatRequest;

/// Output tokens expected of a call when neither the route nor the request says.
pub const DEFAULT_EXPECTED_OUTPUT_TOKENS: u32 = 256;

/// The longest classifier answer kept in a decision.
const MAX_ANSWER_CHARS: usize = 64;

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

/// The job's prompt as the provider will see it, with token counts computed once per tokenizer.
#[derive(Debug)]
pub struct Prompt {
    /// The step's request: the step's system prompt, then the job's messages, and the job's
    /// (or step's) parameters.
    pub request: ChatRequest,
    /// The job's own text (its messages, without the step's system prompt), for rules.
    pub content: String,
    /// How many of the request's messages come before the job's own (the step's system
    /// prompt).
    lead: usize,
    /// Per tokenizer: tokens of the job's own messages, framing included (the part of the count
    /// the answer and the classification calls share, so a long prompt is tokenized once).
    own_o200k: OnceLock<u64>,
    own_cl100k: OnceLock<u64>,
    /// Per tokenizer: the whole prompt.
    all_o200k: OnceLock<u64>,
    all_cl100k: OnceLock<u64>,
}

impl Prompt {
    /// The prompt of `job` on `step`.
    pub fn new(step: &StepConfig, job: &Job) -> Prompt {
        let request = crate::pipeline::build_request(step, job);
        let lead = usize::from(step.system_prompt.is_some());
        let own = &request.messages[lead..];
        let content = match own {
            [one] => one.content.clone(),
            many => many
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        Prompt {
            request,
            content,
            lead,
            own_o200k: OnceLock::new(),
            own_cl100k: OnceLock::new(),
            all_o200k: OnceLock::new(),
            all_cl100k: OnceLock::new(),
        }
    }

    /// Tokens of the job's own messages with `kind`'s tokenizer, framing included, without the
    /// reply priming (counted on first use).
    pub fn own_tokens(&self, kind: TokenizerKind) -> u64 {
        let cell = match kind {
            TokenizerKind::O200kBase => &self.own_o200k,
            TokenizerKind::Cl100kBase => &self.own_cl100k,
        };
        *cell.get_or_init(|| {
            tokens::count_chat(kind, &self.request.messages[self.lead..]) - tokens::REPLY_PRIMING
        })
    }

    /// Prompt tokens of the step's call with `kind`'s tokenizer (counted on first use).
    pub fn tokens(&self, kind: TokenizerKind) -> u64 {
        let cell = match kind {
            TokenizerKind::O200kBase => &self.all_o200k,
            TokenizerKind::Cl100kBase => &self.all_cl100k,
        };
        *cell.get_or_init(|| {
            let lead = tokens::count_chat(kind, &self.request.messages[..self.lead])
                - tokens::REPLY_PRIMING;
            lead + self.own_tokens(kind) + tokens::REPLY_PRIMING
        })
    }
}

/// A rule that matched, and the condition that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMatch {
    /// Index into the route's rules.
    pub rule: usize,
    /// What matched, in words (`keyword "indemnity"`, `task complex`...).
    pub why: String,
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
        why.push(format!("regex matched {:?}", cut(m.as_str(), 40)));
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
fn unit(h: u64) -> f64 {
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

/// The classifier call for a job: the route's instructions, then the job's own messages.
pub fn classifier_request(route: &RouteConfig, job: &Job) -> Option<(usize, ChatRequest)> {
    let c = route.classifier.as_ref()?;
    let mut messages = vec![ChatMessage {
        role: "system".into(),
        content: c.prompt.clone(),
    }];
    messages.extend(job.chat_messages());
    Some((
        c.model,
        ChatRequest {
            messages,
            max_tokens: Some(c.max_tokens),
            temperature: Some(0.0),
            top_p: None,
            seed: None,
            stop: None,
            response_format: None,
        },
    ))
}

/// The classifier call a job may be given: `None` when the route has no classifier,
/// `Some(Err(why))` when the job's constraints rule it out (the classifier sees the job's data,
/// so sensitivity, residency, its context window and the cost ceiling bind it like any model),
/// else the model, the request (its output capped to what the budget leaves) and its prompt
/// tokens.
pub fn gated_classifier_request(
    config: &Config,
    route: &RouteConfig,
    job: &Job,
    prompt: &Prompt,
    spent_usd: f64,
) -> Option<Result<(usize, ChatRequest, u64), String>> {
    let (m, mut request) = classifier_request(route, job)?;
    let model = &config.models[m];
    if let Some(reason) = forbidden_reason(model, job) {
        return Some(Err(format!("{} not allowed ({reason})", model.name)));
    }
    // The classifier's instructions, then the job's messages (counted once for both calls).
    let tokens = tokens::count_chat(model.tokenizer, &request.messages[..1])
        + prompt.own_tokens(model.tokenizer);
    let out = u64::from(request.max_tokens.unwrap_or(0));
    if tokens + out > u64::from(model.context_window) {
        return Some(Err(format!(
            "{tokens} prompt tokens exceed {}'s context window",
            model.name
        )));
    }
    let budget = job
        .policy
        .as_ref()
        .and_then(|p| p.max_cost_usd)
        .map(|b| b - spent_usd);
    match output_cap_within_budget(model, tokens, budget) {
        Some(cap) if cap < 1 => Some(Err("max_cost_usd leaves no budget for it".into())),
        Some(cap) => {
            request.max_tokens = Some(out.min(cap) as u32);
            Some(Ok((m, request, tokens)))
        }
        None => Some(Ok((m, request, tokens))),
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
    let label = parse_label(route, answer);
    let call = ClassifierCall {
        model: model.to_string(),
        answer: Some(answer_excerpt(answer)),
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

/// The class a classifier answer names, if it is one of the labels (case, surrounding
/// whitespace, quotes and a final full stop are forgiven; anything else is off-label).
pub fn parse_label(route: &RouteConfig, answer: &str) -> Option<usize> {
    let quote = |c: char| c == '"' || c == '\'' || c == '`';
    let a = answer
        .trim()
        .trim_end_matches('.')
        .trim_matches(quote)
        .trim_end_matches('.')
        .trim();
    let c = route.classifier.as_ref()?;
    c.labels
        .iter()
        .copied()
        .find(|&l| route.classes[l].eq_ignore_ascii_case(a))
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
    pub step: &'a StepConfig,
    /// The job's prompt.
    pub prompt: &'a Prompt,
    /// The routing key (record key, else job id).
    pub key: &'a str,
    /// The variant and bucket from [`pick_variant`].
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
    let route_idx = input.step.route;
    let route = &config.routes[route_idx];
    let class = match input.choice {
        ClassChoice::Rule(m) => route.rules[m.rule].class,
        ClassChoice::Classifier(c) => *c,
        ClassChoice::Default(_) => route.default_class,
    };
    let variant = &route.variants[input.variant.0];
    let cc: &ClassConfig = &variant.classes[class];
    let policy = job.policy.clone().unwrap_or_default();
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
    let reserved_out = max_out.map_or(expected_out, u64::from);
    let budget = policy.max_cost_usd.map(|m| m - input.spent_usd);

    let mut considered = Vec::with_capacity(cc.models.len());
    for &m in &cc.models {
        let model = &config.models[m];
        let prompt_tokens = input.prompt.tokens(model.tokenizer);
        let estimated_cost_usd = model.cost_usd(prompt_tokens, expected_out);
        let p50 = observed(m)
            .map(|d| (d, true))
            .or(model.expected_latency.map(|d| (d, false)));
        let missing: Vec<&str> = required
            .iter()
            .filter(|c| !model.capabilities.contains(c))
            .map(|c| c.as_str())
            .collect();
        let dropped = if let Some(r) = forbidden_reason(model, job) {
            Some(r)
        } else if !missing.is_empty() {
            Some(format!("lacks capability {}", missing.join(", ")))
        } else if prompt_tokens + reserved_out > u64::from(model.context_window) {
            Some(format!(
                "{prompt_tokens} prompt + {reserved_out} output tokens exceed its context window of {}",
                model.context_window
            ))
        } else {
            match (budget, policy.max_cost_usd) {
                (Some(b), Some(max)) if estimated_cost_usd > b => Some(format!(
                    "estimated ${} exceeds max_cost_usd {}{}",
                    usd(estimated_cost_usd),
                    max,
                    if input.spent_usd > 0.0 {
                        format!(" (${} already spent)", usd(input.spent_usd))
                    } else {
                        String::new()
                    }
                )),
                _ => None,
            }
        };
        considered.push(Considered {
            model: m,
            prompt_tokens,
            expected_output_tokens: expected_out,
            estimated_cost_usd,
            p50,
            dropped,
            demoted: None,
        });
    }

    // The latency ceiling is a preference: slow models go last, still there as fallbacks.
    let mut latency_note = None;
    if let Some(max) = policy.max_latency_ms {
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
        let kept = considered.iter().filter(|c| c.dropped.is_none());
        if kept.clone().count() > 0 && kept.clone().all(|c| c.demoted.is_some()) {
            latency_note = Some(format!("no allowed model meets max_latency_ms {max}"));
        }
    }

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
                let mut bytes = input.key.as_bytes().to_vec();
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
    let candidates: Vec<usize> = candidates.iter().map(|c| c.model).collect();

    let rule = match input.choice {
        ClassChoice::Rule(m) => route.rules[m.rule].name.clone(),
        ClassChoice::Classifier(_) => "classifier".to_string(),
        ClassChoice::Default(why) => format!("default ({why})"),
    };
    let first = candidates
        .first()
        .or(cc.models.first())
        .and_then(|m| considered.iter().find(|c| c.model == *m));
    let record = RouteDecision {
        route: route.name.clone(),
        class: route.classes[class].clone(),
        rule,
        variant: variant.name.clone(),
        classifier,
        prompt_tokens: first.map_or(0, |c| c.prompt_tokens),
        candidates: candidates
            .iter()
            .map(|&m| config.models[m].name.clone())
            .collect(),
        estimated_cost_usd: candidates
            .iter()
            .filter_map(|&m| considered.iter().find(|c| c.model == m))
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
    };
    let decision = Decision {
        route: route_idx,
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

/// A decision made without calling anything: the classifier's answer is `assumed_label` when
/// given (and the default class otherwise), and latency is each model's configured expectation.
/// What `baton route --explain` shows, and what unit tests exercise.
pub fn decide_offline(
    config: &Config,
    step: &StepConfig,
    job: &Job,
    key: &str,
    assumed_label: Option<&str>,
) -> Result<Decision, Unsatisfiable> {
    let route = &config.routes[step.route];
    let prompt = Prompt::new(step, job);
    let variant = pick_variant(route, key);
    let (choice, classifier) = match classify_by_rules(config, route, job, &prompt) {
        Some(m) => (ClassChoice::Rule(m), None),
        None => match (
            gated_classifier_request(config, route, job, &prompt, 0.0),
            route.classifier.as_ref(),
        ) {
            (None, _) | (_, None) => (ClassChoice::Default("no rule matched".into()), None),
            (Some(gated), Some(c)) => {
                let model = &config.models[c.model].name;
                match (gated, assumed_label) {
                    (Err(why), _) => {
                        let (choice, call) = classifier_skipped(model, why);
                        (choice, Some(call))
                    }
                    (Ok(_), Some(answer)) => {
                        let (choice, call) = classifier_answered(route, model, answer, 0.0);
                        (choice, Some(call))
                    }
                    (Ok(_), None) => (
                        ClassChoice::Default("classifier not called offline".into()),
                        None,
                    ),
                }
            }
        },
    };
    decide(
        config,
        job,
        DecideInput {
            step,
            prompt: &prompt,
            key,
            variant,
            choice: &choice,
            spent_usd: 0.0,
        },
        classifier,
        &|_| None,
    )
}

/// `s` cut to `n` characters.
pub fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A classifier answer as kept in the decision.
pub fn answer_excerpt(answer: &str) -> String {
    cut(answer.trim(), MAX_ANSWER_CHARS)
}

/// A USD amount rounded to a billionth, as reported.
pub fn round_usd(v: f64) -> f64 {
    (v * 1e9).round() / 1e9
}

/// A USD amount for humans: enough digits to tell estimates apart.
pub fn usd(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 0.01 {
        format!("{v:.4}")
    } else {
        format!("{v:.6}")
    }
}

#[cfg(test)]
mod tests;
