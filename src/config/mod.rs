//! Configuration, the ground floor: one TOML file read in two phases, and the vocabulary every
//! other room speaks ([`vocab`]: roles, sensitivity, error classes, usage). This module imports
//! no other room of baton.
//!
//! Phase one deserializes raw structs that reject unknown keys and fill defaults. Phase two
//! ([`Config::from_raw`]) has each section resolve itself, in its own file: it checks the
//! section's ranges and cross-references (a step naming an unknown model, a duplicate topic, a
//! zero `max_in_flight`...) and builds the runtime form. Every error names the key path and,
//! when the key is written in the file, its line, range errors included:
//! `pipelines.support.steps[0].model (line 31): unknown model "gpt5"`.
//!
//! Secrets never live in the file: a model names the environment variable that holds its API
//! key (`api_key_env`), and the key itself is read by the provider at start-up.

pub mod circuit_breaker;
pub mod context;
pub mod error;
pub mod kafka;
pub mod models;
pub mod pipelines;
pub mod raw;
pub mod retry;
pub mod routes;
pub mod schema;
pub mod source;
pub mod templates;
pub mod topics;
pub mod vocab;
pub mod worker;

use std::path::Path;
use std::time::Duration;

pub use circuit_breaker::BreakerSettings;
pub use context::{Overflow, StepContext};
pub use error::{ConfigError, ConfigErrors};
pub use kafka::KafkaSettings;
pub use models::{Capability, LimitSettings, ModelConfig, ProviderKind, TokenizerKind};
pub use pipelines::StepConfig;
pub use raw::RawConfig;
pub use retry::RetryTier;
pub use routes::{
    ClassConfig, ClassifierConfig, ContentFilterPolicy, RouteConfig, RuleConfig, Strategy,
    VariantConfig,
};
pub use schema::ResponseSchema;
pub use topics::{TopicDeclarations, TopicNames, TopicSpec};
pub use vocab::{ErrorClass, Role, Sensitivity, Usage};
pub use worker::WorkerSettings;

use error::Resolver;

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kafka client settings.
    pub kafka: KafkaSettings,
    /// Shared topic names.
    pub topics: TopicNames,
    /// Partitions, replication and configs per kind of topic.
    pub declarations: TopicDeclarations,
    /// Worker tuning.
    pub worker: WorkerSettings,
    /// Models in config order.
    pub models: Vec<ModelConfig>,
    /// Circuit breaker settings, the same for every model.
    pub circuit_breaker: BreakerSettings,
    /// Delays of the retry tiers, in order.
    pub retry_tiers: Vec<RetryTier>,
    /// How long bad credentials or an unknown model id take a model out of rotation.
    pub out_of_rotation: Duration,
    /// Routes: the named ones in config order, then one per step that names its models inline.
    pub routes: Vec<RouteConfig>,
    /// Every pipeline step, in config order.
    pub steps: Vec<StepConfig>,
    /// Pipeline names in config order.
    pub pipelines: Vec<String>,
    /// Every step's prompt templates, compiled (see [`StepConfig::system_template`]).
    pub templates: std::sync::Arc<minijinja::Environment<'static>>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let named = |mut e: ConfigErrors| {
            e.source_name = Some(path.display().to_string());
            e
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            named(ConfigErrors {
                source_name: None,
                errors: vec![ConfigError::new(
                    "",
                    format!("cannot read config file {}: {e}", path.display()),
                )],
            })
        })?;
        Config::from_toml(&text, path.parent()).map_err(named)
    }

    /// Parses and validates TOML text; relative paths inside resolve against `base_dir`.
    pub fn from_toml(text: &str, base_dir: Option<&Path>) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigErrors {
            source_name: None,
            errors: vec![error::toml_error(text, &e)],
        })?;
        Config::from_raw(raw, text, base_dir)
    }

    /// Phase two: every section resolves itself; all their errors are reported together.
    pub fn from_raw(
        raw: RawConfig,
        text: &str,
        base_dir: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        let mut r = Resolver::new(text);
        let models: Vec<ModelConfig> = raw
            .models
            .iter()
            .map(|(name, m)| m.resolve(name, &mut r))
            .collect();
        if raw.models.is_empty() {
            r.err("models", "at least one model is required");
        }
        let retry_tiers = raw.retry.resolve(&mut r);
        let index = routes::ModelIndex::new(&models);
        let mut routes = routes::resolve_all(&raw.routes, &index, &mut r);
        let topics = raw.topics.resolve();
        let mut scope = pipelines::StepScope {
            prefix: &raw.topics.prefix,
            results: &topics.results,
            retry_tiers: &retry_tiers,
            models: &index,
            route_names: raw.routes.keys().cloned().collect(),
            routes: &mut routes,
            topics_seen: Default::default(),
            base_dir,
            templates: templates::environment(),
        };
        let steps = pipelines::resolve_all(&raw.pipelines, &mut scope, &mut r);
        let templates = std::sync::Arc::new(std::mem::take(&mut scope.templates));
        let kafka = raw.kafka.resolve(&mut r);
        let worker = raw.worker.resolve(&mut r);
        let (circuit_breaker, out_of_rotation) = raw.circuit_breaker.resolve(&mut r);
        let declarations = raw.topics.declarations(base_dir, &mut r);
        r.finish()?;
        Ok(Config {
            kafka,
            topics,
            declarations,
            worker,
            models,
            circuit_breaker,
            retry_tiers,
            out_of_rotation,
            routes,
            steps,
            pipelines: raw.pipelines.keys().cloned().collect(),
            templates,
        })
    }

    /// The step consuming `topic` (its input topic or one of its retry topics), if any, and the
    /// retry tier the topic is (`None` for the input topic).
    pub fn step_for_topic(&self, topic: &str) -> Option<(&StepConfig, Option<usize>)> {
        self.steps.iter().find_map(|s| {
            if s.topic == topic {
                Some((s, None))
            } else {
                s.retry_topics
                    .iter()
                    .position(|t| t == topic)
                    .map(|i| (s, Some(i)))
            }
        })
    }

    /// Every topic the workers subscribe to: each step's input and its retry tiers.
    pub fn input_topics(&self) -> Vec<String> {
        self.steps
            .iter()
            .flat_map(|s| std::iter::once(s.topic.clone()).chain(s.retry_topics.iter().cloned()))
            .collect()
    }

    /// A model by name.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Checks what `baton run` needs beyond the file itself: a bootstrap address.
    pub fn require_bootstrap(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::new(
                "kafka.bootstrap_servers",
                "missing: set it in the config or pass --bootstrap",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
