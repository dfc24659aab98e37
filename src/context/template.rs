//! Rendering a step's prompt templates (compiled at config load, see `config::templates`) over
//! what a job carries: `id`, `input`, `messages`, `metadata`, `tenant`, `task`, and `steps`,
//! every earlier step's output by name (`steps.extract.text`, `steps.extract.json.parties`,
//! with `model`, `cost_usd`, `latency_ms`, `usage`). A field the job lacks is undefined, and
//! referencing it is a [`TemplateError`], never an empty string. `review_when` expressions are
//! evaluated over the same scope with the step's own output added.

use minijinja::Environment;
use serde_json::{Map, Value};

use crate::config::{Config, StepConfig};
use crate::envelope::{Job, Output, TrailEntry};

/// A template that cannot be rendered for this job: a missing value, a bad filter, a type
/// error. The job fails with `template_error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

impl TemplateError {
    /// `e` in words: what failed, where, and the line of `source` it failed on.
    fn of(what: &str, e: &minijinja::Error, source: &str) -> TemplateError {
        let detail = e
            .detail()
            .map_or_else(|| e.kind().to_string(), str::to_string);
        let at = match e.line() {
            Some(l) => {
                let text = source.lines().nth(l.saturating_sub(1)).unwrap_or("").trim();
                format!(" (line {l}: `{}`)", crate::util::excerpt(text, 120))
            }
            None => String::new(),
        };
        TemplateError(format!("{what}{at}: {detail}"))
    }
}

/// What templates see for `job`: its fields that are present, and its trail by step name.
pub fn scope(job: &Job) -> Map<String, Value> {
    let mut s = Map::new();
    s.insert("id".into(), Value::String(job.id.clone()));
    let text = |v: &Option<String>| v.clone().map(Value::String);
    let fields = [
        ("input", text(&job.input)),
        ("tenant", text(&job.tenant)),
        ("task", text(&job.task)),
        ("conversation_id", text(&job.conversation_id)),
        ("metadata", job.metadata.clone()),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            s.insert(k.into(), v);
        }
    }
    let messages = serde_json::to_value(job.chat_messages()).unwrap_or_default();
    s.insert("messages".into(), messages);
    let steps = job
        .trail
        .iter()
        .map(|t| (t.step.clone(), step_view(t)))
        .collect();
    s.insert("steps".into(), Value::Object(steps));
    s
}

/// One finished step as templates see it: its output's fields, then what it ran on and cost.
fn step_view(t: &TrailEntry) -> Value {
    let mut v = output_view(&t.output);
    v.insert("model".into(), Value::String(t.model.clone()));
    v.insert("cost_usd".into(), t.cost_usd.into());
    v.insert("latency_ms".into(), t.latency_ms.into());
    v.insert(
        "usage".into(),
        serde_json::to_value(t.usage).unwrap_or_default(),
    );
    Value::Object(v)
}

fn output_view(o: &Output) -> Map<String, Value> {
    let mut v = Map::new();
    v.insert("text".into(), Value::String(o.text.clone()));
    if let Some(j) = &o.json {
        v.insert("json".into(), j.clone());
    }
    v
}

/// Renders template `name` over `scope`.
pub fn render(
    env: &Environment<'static>,
    name: &str,
    scope: &Map<String, Value>,
) -> Result<String, TemplateError> {
    let t = env
        .get_template(name)
        .map_err(|e| TemplateError::of(name, &e, ""))?;
    t.render(minijinja::Value::from(minijinja::value::Serde(scope)))
        .map_err(|e| TemplateError::of(&format!("template {name}"), &e, t.source()))
}

/// Whether `expr` (a step's `review_when`) holds once step `step` has answered `output`;
/// `Ok(Some(reason))` when it does.
pub fn review_reason(
    env: &Environment<'static>,
    expr: &str,
    job: &Job,
    step: &str,
    output: &Output,
) -> Result<Option<String>, TemplateError> {
    let mut s = scope(job);
    if let Some(Value::Object(steps)) = s.get_mut("steps") {
        steps.insert(step.to_string(), Value::Object(output_view(output)));
    }
    s.insert("output".into(), Value::Object(output_view(output)));
    let compiled = env
        .compile_expression(expr)
        .map_err(|e| TemplateError::of("review_when", &e, expr))?;
    let v = compiled
        .eval(minijinja::Value::from(minijinja::value::Serde(&s)))
        .map_err(|e| TemplateError::of("review_when", &e, expr))?;
    Ok(v.is_true().then(|| format!("review_when: {expr}")))
}

/// Renders every step's templates (and evaluates its `review_when`) against `sample`, each
/// earlier step's output being a sample instance of its JSON Schema: what `baton check` runs to
/// catch a typo (`steps.extract.json.partys`) before a job fails on it. Returns each problem
/// as `(step, what)`.
pub fn check(config: &Config, sample: &Job) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for step in &config.steps {
        let mut job = sample.clone();
        job.trail = config
            .steps
            .iter()
            .filter(|s| s.pipeline == step.pipeline && s.index < step.index)
            .map(sample_entry)
            .collect();
        let scope = scope(&job);
        for name in [&step.system_template, &step.user_template]
            .into_iter()
            .flatten()
        {
            if let Err(e) = render(&config.templates, name, &scope) {
                problems.push((step.label(), e.0));
            }
        }
        if let Some(expr) = &step.review_when {
            let own = sample_entry(step).output;
            if let Err(e) = review_reason(&config.templates, expr, &job, &step.name, &own) {
                problems.push((step.label(), e.0));
            }
        }
    }
    problems
}

/// A finished step as a sample: its output an instance of its schema (text only without one).
fn sample_entry(step: &StepConfig) -> TrailEntry {
    let json = step
        .response_schema
        .as_ref()
        .map(|s| crate::config::schema::sample(&s.schema, 0));
    TrailEntry {
        step: step.name.clone(),
        model: "sample".into(),
        provider: "sample".into(),
        variant: None,
        usage: Default::default(),
        cost_usd: 0.0,
        latency_ms: 0,
        attempts: 1,
        output: Output {
            text: json
                .as_ref()
                .map_or("sample answer".into(), Value::to_string),
            json,
            finish_reason: Some("stop".into()),
            tool_calls: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CONFIG: &str = r#"
[models.m]
base_url = "http://127.0.0.1:1/v1"

[[pipelines.c.steps]]
name = "extract"
model = "m"
user = "Extract from: {{ input }}"

[[pipelines.c.steps]]
name = "classify"
model = "m"
system = "You classify contracts{% if tenant is defined %} for {{ tenant }}{% endif %}."
user = "Parties: {{ steps.extract.json.parties | join(', ') }}"
review_when = 'steps.classify.json.risk == "high"'
"#;

    fn trail(json: Value) -> TrailEntry {
        TrailEntry {
            step: "extract".into(),
            model: "m".into(),
            provider: "openai".into(),
            variant: None,
            usage: Default::default(),
            cost_usd: 0.01,
            latency_ms: 5,
            attempts: 1,
            output: Output {
                text: json.to_string(),
                json: Some(json),
                finish_reason: None,
                tool_calls: vec![],
            },
        }
    }

    #[test]
    fn templates_read_the_job_and_earlier_steps() {
        let c = Config::from_toml(CONFIG, None).unwrap();
        let mut job: Job = serde_json::from_str(r#"{"id":"1","input":"ACME v Bolt"}"#).unwrap();
        let s = scope(&job);
        assert_eq!(
            render(&c.templates, "c.extract.user", &s).unwrap(),
            "Extract from: ACME v Bolt"
        );
        job.trail
            .push(trail(serde_json::json!({"parties": ["ACME", "Bolt"]})));
        let s = scope(&job);
        assert_eq!(
            render(&c.templates, "c.classify.user", &s).unwrap(),
            "Parties: ACME, Bolt"
        );
        assert_eq!(
            render(&c.templates, "c.classify.system", &s).unwrap(),
            "You classify contracts."
        );
    }

    #[test]
    fn a_missing_value_is_an_error_not_an_empty_string() {
        let c = Config::from_toml(CONFIG, None).unwrap();
        let mut job: Job = serde_json::from_str(r#"{"id":"1","input":"x"}"#).unwrap();
        let e = render(&c.templates, "c.classify.user", &scope(&job)).unwrap_err();
        assert!(e.0.contains("undefined"), "{e}");
        job.trail.push(trail(serde_json::json!({"partys": []})));
        let e = render(&c.templates, "c.classify.user", &scope(&job)).unwrap_err();
        assert!(e.0.contains("c.classify.user"), "{e}");
    }

    #[test]
    fn check_renders_every_step_against_samples_of_the_earlier_schemas() {
        let text = include_str!("../../examples/contracts.toml");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let c = Config::from_toml(text, Some(&dir)).unwrap();
        let sample: Job = serde_json::from_str(r#"{"id":"s","input":"A contract."}"#).unwrap();
        assert_eq!(check(&c, &sample), vec![]);
        let typo = text.replace("steps.extract.json.parties", "steps.extract.json.partys");
        let c = Config::from_toml(&typo, Some(&dir)).unwrap();
        let problems = check(&c, &sample);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "contracts.classify");
        assert!(problems[0].1.contains("undefined"), "{problems:?}");
    }

    #[test]
    fn review_when_reads_the_step_output() {
        let c = Config::from_toml(CONFIG, None).unwrap();
        let job: Job = serde_json::from_str(r#"{"id":"1","input":"x"}"#).unwrap();
        let expr = c.steps[1].review_when.as_deref().unwrap();
        let out = |risk: &str| Output {
            text: String::new(),
            json: Some(serde_json::json!({ "risk": risk })),
            finish_reason: None,
            tool_calls: vec![],
        };
        let high = review_reason(&c.templates, expr, &job, "classify", &out("high")).unwrap();
        assert_eq!(
            high.as_deref(),
            Some(r#"review_when: steps.classify.json.risk == "high""#)
        );
        let low = review_reason(&c.templates, expr, &job, "classify", &out("low")).unwrap();
        assert_eq!(low, None);
    }
}
