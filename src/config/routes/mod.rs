//! `[routes.<name>]`: how a step classifies a job and orders the models that may serve it.
//!
//! Phase two resolves model names, merges classes with their route and variants
//! (`classes.rs`), compiles rules ([`rules`]), and proves what `baton check` promises (every
//! declared sensitivity has an allowed model in every class of every variant, weights are
//! positive, names are unique).
//!
//! A step that names its models inline (`model`, `task_models`, `fallbacks`) gets a route of
//! its own ([`inline`]).

mod classes;
pub mod inline;
pub mod rules;

use std::collections::HashMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::error::{list, Resolver};
use super::models::{Capability, ModelConfig};
use super::vocab::{ErrorClass, Sensitivity};
pub use rules::{RawRule, RuleConfig};

type Spanned = toml::Spanned<String>;

/// How a route orders the candidates that survive the constraints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Lowest estimated cost first.
    Cheapest,
    /// Lowest observed (or expected) median latency first.
    Fastest,
    /// Config order.
    #[default]
    Priority,
    /// A weighted draw without replacement, deterministic per job key.
    Weighted,
}

impl Strategy {
    /// The snake_case name used in config and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Cheapest => "cheapest",
            Strategy::Fastest => "fastest",
            Strategy::Priority => "priority",
            Strategy::Weighted => "weighted",
        }
    }
}

/// What a provider's content-filter refusal does to a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentFilterPolicy {
    /// Dead-letter it (or escalate it, if the route says so) with the provider's reason.
    #[default]
    DeadLetter,
    /// Try the next candidate served by a different provider endpoint (`base_url`).
    OtherProvider,
}

/// `[routes.<name>]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Candidate models of classes that do not name their own.
    #[serde(default)]
    pub models: Vec<Spanned>,
    /// How candidates are ordered, for classes that do not say.
    #[serde(default)]
    pub strategy: Strategy,
    /// Weights per model for the `weighted` strategy.
    #[serde(default)]
    pub weights: IndexMap<String, f64>,
    /// The class of a job no rule matches (and the classifier's fallback); the first class
    /// when absent.
    pub default_class: Option<String>,
    /// Sensitivities this route must be able to serve; `baton check` proves every class has
    /// an allowed model for each.
    #[serde(default)]
    pub sensitivities: Vec<Sensitivity>,
    /// Output tokens a call is expected to produce, for cost estimates.
    pub expected_output_tokens: Option<u32>,
    /// Classification rules, first match wins.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// `[routes.<name>.classes.<class>]`, in file order.
    #[serde(default)]
    pub classes: IndexMap<String, RawClass>,
    /// A cheap model asked for the class when no rule matched.
    pub classifier: Option<RawClassifier>,
    /// `[[routes.<name>.variants]]`: an A/B split, sticky per job key.
    #[serde(default)]
    pub variants: Vec<RawVariant>,
    /// Error classes that go to the human-review topic instead of the dead-letter topic.
    #[serde(default)]
    pub review: Vec<ErrorClass>,
    /// What a content-filter refusal does: `dead_letter` (default) or `other_provider`.
    #[serde(default)]
    pub content_filter: ContentFilterPolicy,
}

/// `[routes.<name>.classes.<class>]`; every field inherits from the route when absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    /// Candidate models.
    pub models: Option<Vec<Spanned>>,
    /// How candidates are ordered.
    pub strategy: Option<Strategy>,
    /// Weights per model for the `weighted` strategy.
    pub weights: Option<IndexMap<String, f64>>,
    /// Capabilities every candidate must have.
    #[serde(default)]
    pub requires: Vec<Capability>,
    /// Output tokens a call is expected to produce, for cost estimates.
    pub expected_output_tokens: Option<u32>,
}

/// `[routes.<name>.classifier]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassifier {
    /// The model asked.
    pub model: Spanned,
    /// The label set; each must be a class of the route. All classes when absent.
    pub labels: Option<Vec<String>>,
    /// Instructions; a default naming the labels when absent.
    pub prompt: Option<String>,
    /// Output token cap of the classification call.
    #[serde(default = "d_classifier_tokens")]
    pub max_tokens: u32,
}

fn d_classifier_tokens() -> u32 {
    8
}

/// `[[routes.<name>.variants]]`: one arm of an A/B split.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVariant {
    /// Name recorded in results, headers and metrics.
    pub name: String,
    /// Relative share of keys.
    pub weight: f64,
    /// Candidate models for every class of this variant.
    pub models: Option<Vec<Spanned>>,
    /// Strategy for every class of this variant.
    pub strategy: Option<Strategy>,
    /// Per-class overrides.
    #[serde(default)]
    pub classes: IndexMap<String, RawClass>,
}

/// A route: how a step classifies a job and orders the models that may serve it.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Route name (`<pipeline>.<step>` for a step that names its models inline).
    pub name: String,
    /// Class names; indices are used everywhere else.
    pub classes: Vec<String>,
    /// Class of a job no rule matched and the classifier did not (validly) answer for.
    pub default_class: usize,
    /// Classification rules, first match wins.
    pub rules: Vec<RuleConfig>,
    /// The model asked for the class when no rule matched.
    pub classifier: Option<ClassifierConfig>,
    /// At least one; a route without variants has one unnamed variant of weight 1.
    pub variants: Vec<VariantConfig>,
    /// Sensitivities every class must be able to serve.
    pub sensitivities: Vec<Sensitivity>,
    /// Seed of the variant hash, derived from the route name.
    pub hash_seed: u64,
    /// Error classes escalated to the human-review topic instead of the dead-letter topic.
    pub review: Vec<ErrorClass>,
    /// What a content-filter refusal does.
    pub content_filter: ContentFilterPolicy,
}

/// The classifier of a route.
#[derive(Debug, Clone)]
pub struct ClassifierConfig {
    /// Model index.
    pub model: usize,
    /// Class indices it may answer.
    pub labels: Vec<usize>,
    /// System prompt of the classification call.
    pub prompt: String,
    /// Output token cap of the call.
    pub max_tokens: u32,
}

/// One arm of an A/B split (or the only one).
#[derive(Debug, Clone)]
pub struct VariantConfig {
    /// Name recorded in results; `None` for a route without variants.
    pub name: Option<String>,
    /// Relative share of keys.
    pub weight: f64,
    /// Per class (same indices as [`RouteConfig::classes`]): its candidates and strategy.
    pub classes: Vec<ClassConfig>,
}

/// The candidates of one class in one variant.
#[derive(Debug, Clone)]
pub struct ClassConfig {
    /// Model indices, in config order.
    pub models: Vec<usize>,
    /// How the survivors are ordered.
    pub strategy: Strategy,
    /// Weights, parallel to `models` (all 1 unless the strategy is weighted).
    pub weights: Vec<f64>,
    /// Capabilities every candidate must have.
    pub requires: Vec<Capability>,
    /// Output tokens a call is expected to produce, when configured.
    pub expected_output_tokens: Option<u32>,
}

/// The models a route may name, by name.
pub struct ModelIndex<'a> {
    index: HashMap<&'a str, usize>,
    /// Every model, in config order.
    pub models: &'a [ModelConfig],
}

impl<'a> ModelIndex<'a> {
    /// An index of `models`.
    pub fn new(models: &'a [ModelConfig]) -> Self {
        ModelIndex {
            index: models
                .iter()
                .enumerate()
                .map(|(i, m)| (m.name.as_str(), i))
                .collect(),
            models,
        }
    }

    /// Resolves a model reference, reporting an unknown one at `path` with its line.
    pub fn resolve(&self, path: &str, name: &Spanned, r: &mut Resolver<'_>) -> Option<usize> {
        let found = self.index.get(name.get_ref().as_str()).copied();
        if found.is_none() {
            r.err_at(
                path,
                name.span().start,
                format!(
                    "unknown model {:?} (known: {})",
                    name.get_ref(),
                    list(self.models.iter().map(|m| &m.name))
                ),
            );
        }
        found
    }

    /// Resolves a candidate list: every name known, none twice.
    pub fn resolve_list(&self, path: &str, refs: &[Spanned], r: &mut Resolver<'_>) -> Vec<usize> {
        let mut out = Vec::new();
        for (j, name) in refs.iter().enumerate() {
            let at = format!("{path}[{j}]");
            match self.resolve(&at, name, r) {
                Some(i) if out.contains(&i) => r.err_at(
                    &at,
                    name.span().start,
                    format!("duplicate model {:?} in the list", name.get_ref()),
                ),
                Some(i) => out.push(i),
                None => {}
            }
        }
        out
    }
}

/// A route's class names and its default class.
struct ClassNames<'a> {
    path: &'a str,
    names: Vec<String>,
    default: usize,
}

impl<'a> ClassNames<'a> {
    /// The classes of `route` (at `path`): as declared, or one named after the default class.
    fn of(route: &RawRoute, path: &'a str, r: &mut Resolver<'_>) -> Self {
        let names: Vec<String> = if route.classes.is_empty() {
            vec![route
                .default_class
                .clone()
                .unwrap_or_else(|| "default".into())]
        } else {
            route.classes.keys().cloned().collect()
        };
        let mut classes = ClassNames {
            path,
            names,
            default: 0,
        };
        if let Some(d) = &route.default_class {
            classes.default = classes
                .find(&format!("{path}.default_class"), d, r)
                .unwrap_or(0);
        }
        classes
    }

    /// The index of class `c`, reporting an unknown one at `at`.
    fn find(&self, at: &str, c: &str, r: &mut Resolver<'_>) -> Option<usize> {
        let found = self.names.iter().position(|n| n == c);
        if found.is_none() {
            r.err(at, self.unknown(c));
        }
        found
    }

    fn unknown(&self, c: &str) -> String {
        format!("unknown class {c:?} (classes: {})", list(self.names.iter()))
    }
}

/// Every `[routes.<name>]`, in file order.
pub fn resolve_all(
    routes: &IndexMap<String, RawRoute>,
    models: &ModelIndex<'_>,
    r: &mut Resolver<'_>,
) -> Vec<RouteConfig> {
    routes
        .iter()
        .map(|(name, route)| route.resolve(name, models, r))
        .collect()
}

impl RawRoute {
    /// Resolves the route called `name`.
    pub fn resolve(
        &self,
        name: &str,
        models: &ModelIndex<'_>,
        r: &mut Resolver<'_>,
    ) -> RouteConfig {
        let path = format!("routes.{name}");
        let classes = ClassNames::of(self, &path, r);
        let variants = classes::variants(self, &classes, models, r);
        let rules = rules::resolve(&self.rules, &classes, r);
        let classifier = self.classifier(&classes, models, r);
        RouteConfig {
            name: name.to_string(),
            classes: classes.names,
            default_class: classes.default,
            rules,
            classifier,
            variants,
            sensitivities: self.sensitivities.clone(),
            hash_seed: xxhash_rust::xxh3::xxh3_64(name.as_bytes()),
            review: self.review.clone(),
            content_filter: self.content_filter,
        }
    }

    fn classifier(
        &self,
        classes: &ClassNames<'_>,
        models: &ModelIndex<'_>,
        r: &mut Resolver<'_>,
    ) -> Option<ClassifierConfig> {
        let c = self.classifier.as_ref()?;
        let cpath = format!("{}.classifier", classes.path);
        let model = models.resolve(&format!("{cpath}.model"), &c.model, r);
        let names = c.labels.clone().unwrap_or_else(|| classes.names.clone());
        let mut labels = Vec::new();
        for (j, l) in names.iter().enumerate() {
            let at = format!("{cpath}.labels[{j}]");
            if let Some(i) = classes.find(&at, l, r) {
                if labels.contains(&i) {
                    r.err(&at, format!("duplicate label {l:?}"));
                }
                labels.push(i);
            }
        }
        if names.is_empty() {
            r.err(&format!("{cpath}.labels"), "must not be empty");
        }
        if c.max_tokens == 0 {
            r.err(&format!("{cpath}.max_tokens"), "must be positive");
        }
        let prompt = c.prompt.clone().unwrap_or_else(|| {
            format!(
                "Classify the user's request into exactly one of these labels: {}. \
                 Answer with the label only.",
                names.join(", ")
            )
        });
        Some(ClassifierConfig {
            model: model?,
            labels,
            prompt,
            max_tokens: c.max_tokens,
        })
    }
}
