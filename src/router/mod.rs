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
//! and the result envelope summarizes ([`crate::envelope::RouteDecision`]).

mod classify;
mod decide;
pub mod explain;
pub mod latency;

pub use classify::{
    classifier_answered, classifier_failed, classifier_skipped, classify_by_rules,
    gated_classifier_request, pick_variant, rule_matches, rule_tokenizer, ClassChoice, RuleMatch,
};
pub use decide::{
    decide, forbidden_reason, job_capabilities, output_cap_within_budget, Considered, DecideInput,
    Decision, Unsatisfiable, DEFAULT_EXPECTED_OUTPUT_TOKENS,
};

use crate::config::{Config, StepConfig};
use crate::context::Prompt;
use crate::envelope::Job;

/// A decision made without calling anything: the classifier's answer is `assumed_label` when
/// given (and the default class otherwise), and latency is each model's configured expectation.
/// What `baton route --explain` shows, and what unit tests exercise.
pub fn decide_offline(
    config: &Config,
    step: &StepConfig,
    job: &Job,
    prompt: &Prompt,
    key: &str,
    assumed_label: Option<&str>,
) -> Result<Decision, Unsatisfiable> {
    let route = &config.routes[step.route];
    let variant = pick_variant(route, key);
    let (choice, classifier) = match classify_by_rules(config, route, job, prompt) {
        Some(m) => (ClassChoice::Rule(m), None),
        None => match gated_classifier_request(config, route, job, prompt, 0.0) {
            None => (ClassChoice::Default("no rule matched".into()), None),
            Some((m, gated)) => {
                let model = &config.models[m].name;
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
            prompt,
            key,
            variant,
            choice: &choice,
            spent_usd: 0.0,
        },
        classifier,
        &|_| None,
    )
}

#[cfg(test)]
mod tests;
