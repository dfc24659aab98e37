//! `[pipelines.<name>]`: steps that chain through topics. Step *i* consumes
//! `<prefix><pipeline>.<step>` and publishes to the next step's topic or, for the last step,
//! the results topic; each step has its retry-tier topics and picks its models through a route
//! (named, or its own inline one).
//!
//! A step says what its model sees (`system` and `user` prompt templates over the job and the
//! earlier steps' outputs, `max_tokens`), what shape its answer must have (`response_format`, a
//! JSON Schema) and when a finished answer also goes to a person (`review_when`).

use std::collections::HashMap;
use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;

use super::context::{RawStepContext, StepContext};
use super::error::{list, valid_topic_part, Resolver};
use super::retry::RetryTier;
use super::routes::{inline, ContentFilterPolicy, ModelIndex, RouteConfig};
use super::schema::{RawResponseFormat, ResponseSchema};
use super::templates;
use super::vocab::ErrorClass;

/// `[pipelines.<name>]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// `[[pipelines.<name>.steps]]`, in order.
    pub steps: Vec<RawStep>,
}

/// `[[pipelines.<name>.steps]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Step name; the input topic is `<prefix><pipeline>.<name>`.
    pub name: String,
    /// The route deciding the model; either this or `model`.
    pub route: Option<toml::Spanned<String>>,
    /// Model for jobs whose task has no entry in `task_models`; either this or `route`.
    pub model: Option<toml::Spanned<String>>,
    /// Static mapping from the job's `task` to a model.
    #[serde(default)]
    pub task_models: IndexMap<String, toml::Spanned<String>>,
    /// Models to use, in order, when the job's policy forbids the first choice.
    #[serde(default)]
    pub fallbacks: Vec<toml::Spanned<String>>,
    /// Error classes that go to the human-review topic (with `model`; a route says it itself).
    #[serde(default)]
    pub review: Vec<ErrorClass>,
    /// What a content-filter refusal does (with `model`; a route says it itself).
    #[serde(default)]
    pub content_filter: ContentFilterPolicy,
    /// System prompt template, placed before the job's messages (`system_prompt` is its
    /// older name).
    #[serde(alias = "system_prompt")]
    pub system: Option<toml::Spanned<String>>,
    /// User message template; without one the model sees the job's messages (first step) or
    /// the previous step's answer (later steps).
    pub user: Option<toml::Spanned<String>>,
    /// The JSON Schema answers must satisfy.
    pub response_format: Option<toml::Spanned<RawResponseFormat>>,
    /// An expression over the step's output; when true the result also goes to review.
    pub review_when: Option<toml::Spanned<String>>,
    /// Output token cap when the job sets none.
    pub max_tokens: Option<u32>,
    /// Fitting prompts to windows, and conversation memory.
    #[serde(default)]
    pub context: RawStepContext,
}

/// One step of a pipeline: the topic it consumes and how it picks a model.
#[derive(Debug, Clone)]
pub struct StepConfig {
    /// Pipeline name.
    pub pipeline: String,
    /// Step name.
    pub name: String,
    /// Input topic: `<prefix><pipeline>.<step>`.
    pub topic: String,
    /// Index into [`super::Config::routes`].
    pub route: usize,
    /// Its retry topics, one per tier of [`super::Config::retry_tiers`]: `<topic>.retry.<delay>`.
    pub retry_topics: Vec<String>,
    /// Its place in [`super::Config::steps`].
    pub index: usize,
    /// Name of its system prompt template in [`super::Config::templates`], if it has one.
    pub system_template: Option<String>,
    /// Name of its user message template, if it has one.
    pub user_template: Option<String>,
    /// The previous step's name (not for a pipeline's first step).
    pub previous: Option<String>,
    /// The JSON Schema answers must satisfy.
    pub response_schema: Option<ResponseSchema>,
    /// When true over the step's output, the result also goes to the review topic.
    pub review_when: Option<String>,
    /// Fitting prompts to windows, and conversation memory.
    pub context: StepContext,
    /// Output token cap sent to the provider when the job does not set one.
    pub max_tokens: Option<u32>,
    /// Where this step's results go: the next step's topic or the results topic.
    pub output_topic: String,
    /// Whether this is the pipeline's last step.
    pub is_last: bool,
}

impl StepConfig {
    /// `<pipeline>.<step>`: the step's name in headers and logs.
    pub fn label(&self) -> String {
        format!("{}.{}", self.pipeline, self.name)
    }
}

/// What steps are resolved against.
pub struct StepScope<'a> {
    /// `topics.prefix`.
    pub prefix: &'a str,
    /// The (prefixed) results topic.
    pub results: &'a str,
    /// The retry tiers every step gets topics for.
    pub retry_tiers: &'a [RetryTier],
    /// The models inline routes may name.
    pub models: &'a ModelIndex<'a>,
    /// The named routes (an inline route is appended for a step that names its models).
    pub routes: &'a mut Vec<RouteConfig>,
    /// The named routes' names (their indices are the routes' first ones).
    pub route_names: Vec<String>,
    /// Each input topic and the step that took it first.
    pub topics_seen: HashMap<String, String>,
    /// Where relative schema files are read from (the config file's directory).
    pub base_dir: Option<&'a Path>,
    /// Every step's templates, compiled.
    pub templates: minijinja::Environment<'static>,
}

/// Every step of every pipeline, in config order.
pub fn resolve_all(
    pipelines: &IndexMap<String, RawPipeline>,
    scope: &mut StepScope<'_>,
    r: &mut Resolver<'_>,
) -> Vec<StepConfig> {
    let mut steps = Vec::new();
    for (pname, p) in pipelines {
        p.resolve(pname, scope, r, &mut steps);
    }
    if pipelines.is_empty() {
        r.err("pipelines", "at least one pipeline is required");
    }
    steps
}

impl RawPipeline {
    fn resolve(
        &self,
        pname: &str,
        scope: &mut StepScope<'_>,
        r: &mut Resolver<'_>,
        out: &mut Vec<StepConfig>,
    ) {
        let ppath = format!("pipelines.{pname}");
        if self.steps.is_empty() {
            r.err(
                &format!("{ppath}.steps"),
                "a pipeline needs at least one step",
            );
        }
        if !valid_topic_part(pname) {
            r.err(
                &ppath,
                "pipeline names may use only letters, digits, '-' and '_'",
            );
        }
        for (i, s) in self.steps.iter().enumerate() {
            let spath = format!("{ppath}.steps[{i}]");
            let route = s.route_index(pname, &spath, scope, r);
            let prefix = scope.prefix;
            let topic = format!("{prefix}{pname}.{}", s.name);
            if let Some(other) = scope.topics_seen.insert(topic.clone(), spath.clone()) {
                r.err(
                    &spath,
                    format!("topic {topic:?} is already used by {other}"),
                );
            }
            let output_topic = match self.steps.get(i + 1) {
                Some(next) => format!("{prefix}{pname}.{}", next.name),
                None => scope.results.to_string(),
            };
            let (system_template, user_template) = s.templates(pname, &spath, scope, r);
            out.push(StepConfig {
                pipeline: pname.to_string(),
                name: s.name.clone(),
                index: out.len(),
                system_template,
                user_template,
                previous: i.checked_sub(1).map(|p| self.steps[p].name.clone()),
                response_schema: s.schema(&spath, scope.base_dir, r),
                review_when: s.review_when.as_ref().map(|e| e.get_ref().clone()),
                context: s
                    .context
                    .resolve(&format!("{spath}.context"), scope.models, r),
                retry_topics: scope
                    .retry_tiers
                    .iter()
                    .map(|t| format!("{topic}.retry.{}", t.name))
                    .collect(),
                topic,
                route,
                max_tokens: s.max_tokens,
                output_topic,
                is_last: i + 1 == self.steps.len(),
            });
        }
    }
}

impl RawStep {
    /// Compiles the step's templates and checks its `review_when`; returns the names of its
    /// system and user templates.
    fn templates(
        &self,
        pname: &str,
        spath: &str,
        scope: &mut StepScope<'_>,
        r: &mut Resolver<'_>,
    ) -> (Option<String>, Option<String>) {
        let mut add = |key: &str, source: &Option<toml::Spanned<String>>| {
            let source = source.as_ref()?;
            let name = format!("{pname}.{}.{key}", self.name);
            templates::add(
                &mut scope.templates,
                &name,
                source,
                &format!("{spath}.{key}"),
                r,
            );
            Some(name)
        };
        let names = (add("system", &self.system), add("user", &self.user));
        if let Some(expr) = &self.review_when {
            let path = format!("{spath}.review_when");
            templates::check_expression(&scope.templates, expr, &path, r);
        }
        names
    }

    /// The step's compiled response schema, if it has one.
    fn schema(
        &self,
        spath: &str,
        base_dir: Option<&Path>,
        r: &mut Resolver<'_>,
    ) -> Option<ResponseSchema> {
        let raw = self.response_format.as_ref()?;
        match raw.get_ref().resolve(&self.name, base_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                r.err_at(&format!("{spath}.response_format"), raw.span().start, e);
                None
            }
        }
    }

    /// Checks the step's own keys and returns the index of its route: a named one, or an
    /// inline one built (and appended) for it.
    fn route_index(
        &self,
        pname: &str,
        spath: &str,
        scope: &mut StepScope<'_>,
        r: &mut Resolver<'_>,
    ) -> usize {
        if !valid_topic_part(&self.name) {
            r.err(
                &format!("{spath}.name"),
                "step names may use only letters, digits, '-' and '_'",
            );
        }
        self.check_inline_keys(spath, r);
        let route = match (&self.route, &self.model) {
            (Some(name), None) => {
                match scope.route_names.iter().position(|n| n == name.get_ref()) {
                    Some(i) => i,
                    None => {
                        r.err_at(
                            &format!("{spath}.route"),
                            name.span().start,
                            format!(
                                "unknown route {:?} (known: {})",
                                name.get_ref(),
                                list(scope.route_names.iter())
                            ),
                        );
                        0
                    }
                }
            }
            (None, Some(_)) => {
                let name = format!("{pname}.{}", self.name);
                let built = inline::route(&name, spath, self, scope.models, r);
                scope.routes.push(built);
                scope.routes.len() - 1
            }
            (Some(_), Some(_)) => {
                r.err(
                    spath,
                    "set either `route` or `model` (with task_models and fallbacks), not both",
                );
                0
            }
            (None, None) => {
                r.err(
                    spath,
                    "missing `route` (or `model`): which models may serve this step",
                );
                0
            }
        };
        if self.max_tokens == Some(0) {
            r.err(&format!("{spath}.max_tokens"), "must be positive");
        }
        route
    }

    /// The inline-form keys are refused beside a `route`: the route says all of that itself.
    fn check_inline_keys(&self, spath: &str, r: &mut Resolver<'_>) {
        if self.route.is_none() {
            return;
        }
        let key = if !self.fallbacks.is_empty() {
            "fallbacks"
        } else if !self.task_models.is_empty() {
            "task_models"
        } else if !self.review.is_empty() {
            "review"
        } else if self.content_filter != ContentFilterPolicy::default() {
            "content_filter"
        } else {
            return;
        };
        r.err(
            &format!("{spath}.{key}"),
            "only with `model`: a step with a `route` takes its candidates (and their order, which is the fallback chain) from the route",
        );
    }
}
