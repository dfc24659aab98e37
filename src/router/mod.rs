//! Router: which models may serve a job, in which order.
//!
//! This is the static router of the foundation: the step's `task_models` entry for the job's
//! `task` (or the step's default model) comes first, then the step's `fallbacks`. Hard
//! constraints are applied before anything else and never relaxed: a model the job's
//! sensitivity or residency forbids is dropped from the list with the reason, so no later stage
//! (not even a fallback) can reach it. An empty list is `policy_unsatisfiable`.
//!
//! Pure: a function of config and job, unit-tested here.

use crate::config::{Config, ModelConfig, StepConfig};
use crate::envelope::{DroppedModel, Job, RouteDecision};

/// The job's allowed candidates (indices into [`Config::models`]) and the decision record.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Allowed models, in the order to try them.
    pub candidates: Vec<usize>,
    /// What the result envelope reports.
    pub decision: RouteDecision,
}

/// No model may serve the job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no allowed model: {}", .decision.dropped.iter().map(|d| format!("{} ({})", d.model, d.reason)).collect::<Vec<_>>().join("; "))]
pub struct Unsatisfiable {
    /// The decision, with every dropped model.
    pub decision: RouteDecision,
}

/// Why `model` may not receive `job`, if it may not.
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

/// Routes `job` on `step`.
pub fn route(config: &Config, step: &StepConfig, job: &Job) -> Result<Route, Unsatisfiable> {
    let (rule, first) = match job
        .task
        .as_deref()
        .and_then(|t| step.task_models.get(t).map(|m| (t, *m)))
    {
        Some((task, m)) => (format!("task:{task}"), m),
        None => ("default".to_string(), step.default_model),
    };
    let mut order = vec![first];
    for &m in std::iter::once(&step.default_model).chain(&step.fallback_models) {
        if !order.contains(&m) {
            order.push(m);
        }
    }
    let mut candidates = Vec::new();
    let mut dropped = Vec::new();
    for m in order {
        let model = &config.models[m];
        match forbidden_reason(model, job) {
            None => candidates.push(m),
            Some(reason) => dropped.push(DroppedModel {
                model: model.name.clone(),
                reason,
            }),
        }
    }
    let decision = RouteDecision {
        rule,
        candidates: candidates
            .iter()
            .map(|&m| config.models[m].name.clone())
            .collect(),
        dropped,
    };
    if candidates.is_empty() {
        return Err(Unsatisfiable { decision });
    }
    Ok(Route {
        candidates,
        decision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sensitivity;
    use crate::envelope::Policy;

    fn config() -> Config {
        Config::from_toml(crate::demo::SAMPLE_CONFIG, None).unwrap()
    }

    fn job(task: Option<&str>, sensitivity: Option<Sensitivity>, residency: Option<&str>) -> Job {
        Job {
            id: "j".into(),
            pipeline: None,
            task: task.map(Into::into),
            tenant: None,
            messages: None,
            input: Some("hi".into()),
            params: None,
            policy: Some(Policy {
                sensitivity,
                residency: residency.map(Into::into),
                ..Policy::default()
            }),
            response_format: None,
            conversation_id: None,
            metadata: None,
        }
    }

    /// task, sensitivity, residency, expected rule, expected candidates.
    type Case<'a> = (
        Option<&'a str>,
        Option<Sensitivity>,
        Option<&'a str>,
        &'a str,
        Vec<&'a str>,
    );

    #[test]
    fn table_of_decisions() {
        let c = config();
        let step = &c.steps[0];
        let cases: Vec<Case> = vec![
            (
                None,
                None,
                None,
                "default",
                vec!["cheap-fast", "premium", "on-prem"],
            ),
            (
                Some("simple"),
                None,
                None,
                "task:simple",
                vec!["cheap-fast", "premium", "on-prem"],
            ),
            (
                Some("complex"),
                None,
                None,
                "task:complex",
                vec!["premium", "cheap-fast", "on-prem"],
            ),
            (
                Some("unknown"),
                None,
                None,
                "default",
                vec!["cheap-fast", "premium", "on-prem"],
            ),
            (
                Some("complex"),
                Some(Sensitivity::Confidential),
                None,
                "task:complex",
                vec!["premium", "on-prem"],
            ),
            (
                None,
                Some(Sensitivity::Restricted),
                None,
                "default",
                vec!["on-prem"],
            ),
            (
                Some("complex"),
                Some(Sensitivity::Restricted),
                None,
                "task:complex",
                vec!["on-prem"],
            ),
            (
                None,
                None,
                Some("eu"),
                "default",
                vec!["premium", "on-prem"],
            ),
        ];
        for (task, sens, res, rule, want) in cases {
            let r = route(&c, step, &job(task, sens, res)).unwrap();
            assert_eq!(r.decision.rule, rule, "{task:?} {sens:?} {res:?}");
            assert_eq!(r.decision.candidates, want, "{task:?} {sens:?} {res:?}");
        }
    }

    #[test]
    fn restricted_never_reaches_a_cloud_model() {
        let c = config();
        let r = route(
            &c,
            &c.steps[0],
            &job(Some("complex"), Some(Sensitivity::Restricted), None),
        )
        .unwrap();
        for m in &r.candidates {
            assert!(c.models[*m]
                .sensitivities
                .contains(&Sensitivity::Restricted));
        }
        assert!(r.decision.dropped.iter().any(|d| d.model == "premium"));
    }

    #[test]
    fn nothing_allowed_is_unsatisfiable() {
        let c = Config::from_toml(
            r#"
            [models.cloud]
            base_url = "http://127.0.0.1:1/v1"
            residency = "us"
            [pipelines.p]
            steps = [{ name = "s", model = "cloud" }]
            "#,
            None,
        )
        .unwrap();
        let e = route(
            &c,
            &c.steps[0],
            &job(None, Some(Sensitivity::Restricted), None),
        )
        .unwrap_err();
        assert!(e.decision.candidates.is_empty());
        assert!(
            e.to_string()
                .contains("cloud (sensitivity restricted not allowed)"),
            "{e}"
        );
        let e = route(&c, &c.steps[0], &job(None, None, Some("eu"))).unwrap_err();
        assert!(
            e.to_string().contains("residency eu required, model is us"),
            "{e}"
        );
    }
}
