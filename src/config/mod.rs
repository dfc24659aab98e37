//! Configuration: one TOML file, read in two phases.
//!
//! Phase one deserializes [`raw`] structs that reject unknown keys and fill defaults. Phase two
//! ([`Config::from_raw`]) checks every cross-reference (a step naming an unknown model, a
//! duplicate topic, a zero `max_in_flight`...) and builds the runtime [`Config`]. Every error
//! names the key path and, where the TOML parser or a span knows it, the line:
//! `pipelines.support.steps[0].model (line 31): unknown model "gpt5"`.
//!
//! Secrets never live in the file: a model names the environment variable that holds its API
//! key (`api_key_env`), and the key itself is read by the provider at start-up.

pub mod raw;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;

pub use raw::RawConfig;

use crate::kafka::topics::TopicDeclarations;

/// A configuration error: the key path it concerns, the line when known, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct ConfigError {
    /// Dotted key path, e.g. `pipelines.support.steps[0].model`.
    pub path: String,
    /// 1-based line in the TOML source, when known.
    pub line: Option<usize>,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

/// All errors found in one file; validation reports every problem at once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration{}:\n  {}", source_name.as_ref().map(|s| format!(" in {s}")).unwrap_or_default(), errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
pub struct ConfigErrors {
    /// Where the configuration came from (a path), when known.
    pub source_name: Option<String>,
    /// Every problem found.
    pub errors: Vec<ConfigError>,
}

/// Data sensitivity, ordered from least to most sensitive.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// May go anywhere.
    Public,
    /// Company-internal; the default for a job that does not say.
    Internal,
    /// Customer or business confidential data.
    Confidential,
    /// Must stay on models explicitly allowed for it (typically on-premise).
    Restricted,
}

impl Sensitivity {
    /// The lowercase name used in config, envelopes and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "public",
            Sensitivity::Internal => "internal",
            Sensitivity::Confidential => "confidential",
            Sensitivity::Restricted => "restricted",
        }
    }
}

/// Which wire protocol a model's provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible `/v1/chat/completions` endpoint (OpenAI, vLLM, Ollama, mock-llm...).
    Openai,
}

impl ProviderKind {
    /// The provider label used in metrics and results.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
        }
    }
}

/// One model baton may call.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The name used in config, routes, results and metrics.
    pub name: String,
    /// Wire protocol.
    pub provider: ProviderKind,
    /// The provider's own model id sent on the wire.
    pub provider_model: String,
    /// Base URL up to and including `/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the API key, if the endpoint needs one.
    pub api_key_env: Option<String>,
    /// Timeout of one HTTP call.
    pub timeout: Duration,
    /// USD per one million input tokens.
    pub price_input_per_mtok: f64,
    /// USD per one million output tokens.
    pub price_output_per_mtok: f64,
    /// Context window in tokens.
    pub context_window: u32,
    /// Residency tag (`us`, `eu`, `on_prem`...), if any.
    pub residency: Option<String>,
    /// Sensitivities this model may receive.
    pub sensitivities: Vec<Sensitivity>,
}

impl ModelConfig {
    /// Cost in USD of a call with these token counts.
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.price_input_per_mtok
            + output_tokens as f64 * self.price_output_per_mtok)
            / 1_000_000.0
    }
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
    /// Index into [`Config::models`] for jobs whose task has no mapping.
    pub default_model: usize,
    /// Static mapping from the job's `task` to a model index.
    pub task_models: HashMap<String, usize>,
    /// Further models, in order, for a job the first choice's policy forbids.
    pub fallback_models: Vec<usize>,
    /// System prompt put before the job's messages, if any.
    pub system_prompt: Option<String>,
    /// Output token cap sent to the provider when the job does not set one.
    pub max_tokens: Option<u32>,
    /// Where this step's results go: the next step's topic or the results topic.
    pub output_topic: String,
    /// Whether this is the pipeline's last step.
    pub is_last: bool,
}

/// Kafka client settings.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group id of the workers.
    pub group_id: String,
    /// Extra librdkafka properties for the consumer.
    pub consumer: BTreeMap<String, String>,
    /// Extra librdkafka properties for the producer.
    pub producer: BTreeMap<String, String>,
}

/// Names of the shared topics.
#[derive(Debug, Clone)]
pub struct TopicNames {
    /// Prefix applied to every topic name.
    pub prefix: String,
    /// Final results.
    pub results: String,
    /// One audit record per provider call.
    pub calls: String,
    /// Human review.
    pub review: String,
    /// Conversation memory (compacted).
    pub memory: String,
}

impl TopicNames {
    /// The dead-letter topic of an input topic.
    pub fn dlq_of(input_topic: &str) -> String {
        format!("{input_topic}.dlq")
    }
}

/// Worker tuning.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs in flight at once across all partitions.
    pub max_in_flight: usize,
    /// Largest accepted record value, in bytes; larger ones are dead-lettered.
    pub max_payload_bytes: usize,
    /// How long a shutdown waits for in-flight work.
    pub shutdown_timeout: Duration,
    /// How long a revoke waits for in-flight work of the revoked partitions.
    pub rebalance_timeout: Duration,
    /// Attempts per provider call for retryable errors (in-process).
    pub provider_attempts: u32,
    /// Address of `/metrics` and `/healthz`; `None` disables the listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

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
    /// Every pipeline step, in config order.
    pub steps: Vec<StepConfig>,
    /// Pipeline names in config order.
    pub pipelines: Vec<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            source_name: Some(path.display().to_string()),
            errors: vec![ConfigError {
                path: String::new(),
                line: None,
                message: format!("cannot read file: {e}"),
            }],
        })?;
        let base_dir = path.parent().map(Path::to_path_buf);
        Config::from_toml(&text, base_dir.as_deref()).map_err(|mut e| {
            e.source_name = Some(path.display().to_string());
            e
        })
    }

    /// Parses and validates TOML text; relative paths inside resolve against `base_dir`.
    pub fn from_toml(text: &str, base_dir: Option<&Path>) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigErrors {
            source_name: None,
            errors: vec![toml_error(text, &e)],
        })?;
        Config::from_raw(raw, text, base_dir)
    }

    /// Phase two: cross-checks the raw config and builds the runtime one.
    pub fn from_raw(
        raw: RawConfig,
        text: &str,
        base_dir: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        let mut errs = Vec::new();
        let line = |span: std::ops::Range<usize>| Some(line_of(text, span.start));

        let mut models = Vec::new();
        let mut model_index = HashMap::new();
        for (name, m) in &raw.models {
            let path = format!("models.{name}");
            if m.base_url.trim().is_empty() {
                errs.push(err(&format!("{path}.base_url"), None, "must not be empty"));
            } else if !(m.base_url.starts_with("http://") || m.base_url.starts_with("https://")) {
                errs.push(err(
                    &format!("{path}.base_url"),
                    None,
                    &format!("must start with http:// or https://, got {:?}", m.base_url),
                ));
            }
            if m.price_input_per_mtok < 0.0 || m.price_output_per_mtok < 0.0 {
                errs.push(err(&path, None, "prices must not be negative"));
            }
            if m.context_window == 0 {
                errs.push(err(
                    &format!("{path}.context_window"),
                    None,
                    "must be positive",
                ));
            }
            if m.timeout_ms == 0 {
                errs.push(err(&format!("{path}.timeout_ms"), None, "must be positive"));
            }
            if let Some(env) = &m.api_key_env {
                if env.is_empty() {
                    errs.push(err(
                        &format!("{path}.api_key_env"),
                        None,
                        "must not be empty",
                    ));
                }
            }
            model_index.insert(name.clone(), models.len());
            models.push(ModelConfig {
                name: name.clone(),
                provider: m.provider,
                provider_model: m.model.clone().unwrap_or_else(|| name.clone()),
                base_url: m.base_url.trim_end_matches('/').to_string(),
                api_key_env: m.api_key_env.clone(),
                timeout: Duration::from_millis(m.timeout_ms),
                price_input_per_mtok: m.price_input_per_mtok,
                price_output_per_mtok: m.price_output_per_mtok,
                context_window: m.context_window,
                residency: m.residency.clone(),
                sensitivities: m.sensitivities.clone(),
            });
        }
        if raw.models.is_empty() {
            errs.push(err("models", None, "at least one model is required"));
        }

        let prefix = raw.topics.prefix.clone();
        let results = format!("{prefix}{}", raw.topics.results);
        let mut steps = Vec::new();
        let mut topics_seen: HashMap<String, String> = HashMap::new();
        for (pname, p) in &raw.pipelines {
            let ppath = format!("pipelines.{pname}");
            if p.steps.is_empty() {
                errs.push(err(
                    &format!("{ppath}.steps"),
                    None,
                    "a pipeline needs at least one step",
                ));
            }
            if !valid_topic_part(pname) {
                errs.push(err(
                    &ppath,
                    None,
                    "pipeline names may use only letters, digits, '-' and '_'",
                ));
            }
            for (i, s) in p.steps.iter().enumerate() {
                let spath = format!("{ppath}.steps[{i}]");
                if !valid_topic_part(&s.name) {
                    errs.push(err(
                        &format!("{spath}.name"),
                        None,
                        "step names may use only letters, digits, '-' and '_'",
                    ));
                }
                let resolve =
                    |field: &str, r: &toml::Spanned<String>, errs: &mut Vec<ConfigError>| {
                        match model_index.get(r.get_ref()) {
                            Some(&i) => Some(i),
                            None => {
                                errs.push(err(
                                    &format!("{spath}.{field}"),
                                    line(r.span()),
                                    &format!(
                                        "unknown model {:?} (known: {})",
                                        r.get_ref(),
                                        known(&raw.models)
                                    ),
                                ));
                                None
                            }
                        }
                    };
                let default_model = resolve("model", &s.model, &mut errs);
                let mut task_models = HashMap::new();
                for (task, m) in &s.task_models {
                    if let Some(i) = resolve(&format!("task_models.{task}"), m, &mut errs) {
                        task_models.insert(task.clone(), i);
                    }
                }
                let mut fallback_models = Vec::new();
                for (j, m) in s.fallbacks.iter().enumerate() {
                    if let Some(i) = resolve(&format!("fallbacks[{j}]"), m, &mut errs) {
                        fallback_models.push(i);
                    }
                }
                if s.max_tokens == Some(0) {
                    errs.push(err(
                        &format!("{spath}.max_tokens"),
                        None,
                        "must be positive",
                    ));
                }
                let topic = format!("{prefix}{pname}.{}", s.name);
                if let Some(other) = topics_seen.insert(topic.clone(), spath.clone()) {
                    errs.push(err(
                        &spath,
                        None,
                        &format!("topic {topic:?} is already used by {other}"),
                    ));
                }
                let is_last = i + 1 == p.steps.len();
                let output_topic = match p.steps.get(i + 1) {
                    Some(next) => format!("{prefix}{pname}.{}", next.name),
                    None => results.clone(),
                };
                steps.push(StepConfig {
                    pipeline: pname.clone(),
                    name: s.name.clone(),
                    topic,
                    default_model: default_model.unwrap_or(0),
                    task_models,
                    fallback_models,
                    system_prompt: s.system_prompt.clone(),
                    max_tokens: s.max_tokens,
                    output_topic,
                    is_last,
                });
            }
        }
        if raw.pipelines.is_empty() {
            errs.push(err("pipelines", None, "at least one pipeline is required"));
        }

        // These keys carry baton's delivery guarantees; a user override would silently break
        // at-least-once (offsets stored before the work is done) or the consumer group.
        let managed = [
            (
                "consumer",
                &raw.kafka.consumer,
                MANAGED_CONSUMER_KEYS,
                "offsets are stored only behind finished work",
            ),
            (
                "producer",
                &raw.kafka.producer,
                MANAGED_PRODUCER_KEYS,
                "outputs must be acknowledged by all replicas",
            ),
        ];
        for (section, props, keys, why) in managed {
            for key in props.keys().filter(|k| keys.contains(&k.as_str())) {
                errs.push(err(
                    &format!("kafka.{section}.{key}"),
                    None,
                    &format!("managed by baton ({why}); remove it"),
                ));
            }
        }

        let w = &raw.worker;
        if w.max_in_flight == 0 {
            errs.push(err("worker.max_in_flight", None, "must be positive"));
        }
        if w.max_payload_bytes == 0 {
            errs.push(err("worker.max_payload_bytes", None, "must be positive"));
        }
        if w.provider_attempts == 0 {
            errs.push(err("worker.provider_attempts", None, "must be at least 1"));
        }
        let metrics_listen = match w.metrics_listen.as_deref() {
            None | Some("off") | Some("") => None,
            Some(s) => match s.parse() {
                Ok(a) => Some(a),
                Err(_) => {
                    errs.push(err(
                        "worker.metrics_listen",
                        None,
                        &format!(
                            "not a socket address: {s:?} (e.g. \"127.0.0.1:9464\", or \"off\")"
                        ),
                    ));
                    None
                }
            },
        };

        let declarations = match &raw.topics.declarations {
            None => TopicDeclarations::builtin(),
            Some(p) => {
                let path: PathBuf = match base_dir {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p.clone(),
                };
                match TopicDeclarations::load(&path) {
                    Ok(d) => d,
                    Err(e) => {
                        errs.push(err("topics.declarations", None, &e.to_string()));
                        TopicDeclarations::builtin()
                    }
                }
            }
        };

        if !errs.is_empty() {
            return Err(ConfigErrors {
                source_name: None,
                errors: errs,
            });
        }
        Ok(Config {
            kafka: KafkaSettings {
                bootstrap_servers: raw.kafka.bootstrap_servers.clone().unwrap_or_default(),
                group_id: raw.kafka.group_id.clone(),
                consumer: raw.kafka.consumer.clone(),
                producer: raw.kafka.producer.clone(),
            },
            topics: TopicNames {
                results,
                calls: format!("{prefix}{}", raw.topics.calls),
                review: format!("{prefix}{}", raw.topics.review),
                memory: format!("{prefix}{}", raw.topics.memory),
                prefix,
            },
            declarations,
            worker: WorkerSettings {
                max_in_flight: w.max_in_flight,
                max_payload_bytes: w.max_payload_bytes,
                shutdown_timeout: Duration::from_millis(w.shutdown_timeout_ms),
                rebalance_timeout: Duration::from_millis(w.rebalance_timeout_ms),
                provider_attempts: w.provider_attempts,
                metrics_listen,
            },
            models,
            steps,
            pipelines: raw.pipelines.keys().cloned().collect(),
        })
    }

    /// The step consuming `topic`, if any.
    pub fn step_for_topic(&self, topic: &str) -> Option<&StepConfig> {
        self.steps.iter().find(|s| s.topic == topic)
    }

    /// Every input topic the workers subscribe to.
    pub fn input_topics(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.topic.clone()).collect()
    }

    /// A model by name.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Checks what `baton run` needs beyond the file itself: a bootstrap address.
    pub fn require_bootstrap(&self) -> Result<(), ConfigError> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(err(
                "kafka.bootstrap_servers",
                None,
                "missing: set it in the config or pass --bootstrap",
            ));
        }
        Ok(())
    }
}

/// Consumer properties baton sets itself and a config may not override.
const MANAGED_CONSUMER_KEYS: &[&str] = &[
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "bootstrap.servers",
];

/// Producer properties baton sets itself and a config may not override.
const MANAGED_PRODUCER_KEYS: &[&str] = &["acks", "enable.idempotence", "bootstrap.servers"];

fn known(models: &IndexMap<String, raw::RawModel>) -> String {
    models
        .keys()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn valid_topic_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn err(path: &str, line: Option<usize>, message: &str) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        line,
        message: message.to_string(),
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Turns a TOML parse error (syntax, unknown key, wrong type) into a [`ConfigError`].
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => ConfigError {
            path: key_path_at(text, span.start),
            line: Some(line_of(text, span.start)),
            message,
        },
        None => ConfigError {
            path: String::new(),
            line: None,
            message,
        },
    }
}

/// The dotted key path of the `key = value` line holding `offset`: the nearest table header
/// above it, plus the key. The toml parser reports spans, not paths, so this recovers the path
/// a user searches for.
fn key_path_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let key = match line.split_once('=') {
        Some((k, _)) if !line.starts_with('[') => k.trim().trim_matches('"').to_string(),
        _ => String::new(),
    };
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let header = if line.starts_with('[') {
        Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        )
    } else {
        header
    };
    match (header, key.is_empty()) {
        (Some(h), false) => format!("{h}.{key}"),
        (Some(h), true) => h,
        (None, _) => key,
    }
}

#[cfg(test)]
mod tests;
