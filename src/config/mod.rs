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
mod routes;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Something a model can do beyond plain chat; a route or a job may require it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Structured output against a JSON Schema (`response_format.type = "json_schema"`).
    JsonSchema,
    /// Tool (function) calls.
    Tools,
    /// Image inputs.
    Vision,
}

impl Capability {
    /// The snake_case name used in config and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::JsonSchema => "json_schema",
            Capability::Tools => "tools",
            Capability::Vision => "vision",
        }
    }
}

/// What a provider's content-filter refusal does to a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentFilterPolicy {
    /// Dead-letter it (or escalate it, if the route says so) with the provider's reason.
    #[default]
    DeadLetter,
    /// Try the next candidate served by a different provider endpoint (`base_url`).
    OtherProvider,
}

/// How a route orders the candidates that survive the constraints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// The tokenizer used to count a model's prompt tokens exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// GPT-4o, GPT-4.1, o-series and later OpenAI models.
    O200kBase,
    /// GPT-4 and GPT-3.5 models.
    Cl100kBase,
}

impl TokenizerKind {
    /// The tokenizer OpenAI uses for `model`; `o200k_base` (an approximation) for models of
    /// other vendors.
    pub fn for_model(model: &str) -> TokenizerKind {
        let m = model.to_ascii_lowercase();
        if (m.starts_with("gpt-4") && !m.starts_with("gpt-4o") && !m.starts_with("gpt-4."))
            || m.starts_with("gpt-3.5")
            || m.starts_with("text-embedding")
        {
            TokenizerKind::Cl100kBase
        } else {
            TokenizerKind::O200kBase
        }
    }

    /// The snake_case name used in config and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenizerKind::O200kBase => "o200k_base",
            TokenizerKind::Cl100kBase => "cl100k_base",
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
    /// USD per one million cached input tokens (the input price when the provider bills none).
    pub price_cached_input_per_mtok: f64,
    /// Median latency expected before any call has been observed.
    pub expected_latency: Option<Duration>,
    /// What the model can do beyond plain chat.
    pub capabilities: Vec<Capability>,
    /// Tokenizer for its prompt counts.
    pub tokenizer: TokenizerKind,
    /// The provider's quota for it.
    pub rate_limit: crate::fallback::limits::LimitSettings,
}

impl ModelConfig {
    /// Cost in USD of a call with these token counts (no cached input).
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.usage_cost_usd(&crate::envelope::Usage {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens + output_tokens,
            cached_input_tokens: 0,
        })
    }

    /// Cost in USD of a billed call: cached input tokens at the cached price, the rest of the
    /// input and all output at the normal prices.
    pub fn usage_cost_usd(&self, usage: &crate::envelope::Usage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        ((usage.input_tokens - cached) as f64 * self.price_input_per_mtok
            + cached as f64 * self.price_cached_input_per_mtok
            + usage.output_tokens as f64 * self.price_output_per_mtok)
            / 1_000_000.0
    }
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
    pub review: Vec<crate::envelope::ErrorClass>,
    /// What a content-filter refusal does.
    pub content_filter: ContentFilterPolicy,
}

/// A classification rule: every condition present must hold.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// Name shown in decisions.
    pub name: String,
    /// Class index given to a matching job.
    pub class: usize,
    /// The job's task is one of these (empty: any).
    pub task: Vec<String>,
    /// The job's tenant is one of these (empty: any).
    pub tenant: Vec<String>,
    /// Metadata keys and the JSON values they must equal.
    pub metadata: Vec<(String, serde_json::Value)>,
    /// Whole-word, case-insensitive alternation of the keywords.
    pub keywords: Option<regex::Regex>,
    /// A regular expression over the content.
    pub regex: Option<regex::Regex>,
    /// Minimum prompt tokens.
    pub min_tokens: Option<u64>,
    /// Maximum prompt tokens.
    pub max_tokens: Option<u64>,
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

/// One step of a pipeline: the topic it consumes and how it picks a model.
#[derive(Debug, Clone)]
pub struct StepConfig {
    /// Pipeline name.
    pub pipeline: String,
    /// Step name.
    pub name: String,
    /// Input topic: `<prefix><pipeline>.<step>`.
    pub topic: String,
    /// Index into [`Config::routes`].
    pub route: usize,
    /// Its retry topics, one per tier of [`Config::retry_tiers`]: `<topic>.retry.<delay>`.
    pub retry_topics: Vec<String>,
    /// System prompt put before the job's messages, if any.
    pub system_prompt: Option<String>,
    /// Output token cap sent to the provider when the job does not set one.
    pub max_tokens: Option<u32>,
    /// Where this step's results go: the next step's topic or the results topic.
    pub output_topic: String,
    /// Whether this is the pipeline's last step.
    pub is_last: bool,
}

/// One tier of delayed retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryTier {
    /// As written (`30s`); the suffix of the tier's topics.
    pub name: String,
    /// How long a record waits in the tier before it is processed again.
    pub delay: Duration,
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
    /// How long a call may wait for rate-limit capacity before trying the next candidate.
    pub rate_limit_wait: Duration,
    /// The longest one round of a job (all its attempts) may take.
    pub round_deadline: Duration,
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
    /// Circuit breaker settings, the same for every model.
    pub circuit_breaker: crate::fallback::BreakerSettings,
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
            if m.price_input_per_mtok < 0.0
                || m.price_output_per_mtok < 0.0
                || m.price_cached_input_per_mtok.is_some_and(|p| p < 0.0)
            {
                errs.push(err(&path, None, "prices must not be negative"));
            }
            if m.context_window == 0 {
                errs.push(err(
                    &format!("{path}.context_window"),
                    None,
                    "must be positive",
                ));
            }
            for (key, v) in [
                ("requests_per_minute", m.rate_limit.requests_per_minute),
                ("tokens_per_minute", m.rate_limit.tokens_per_minute),
                ("concurrency", m.rate_limit.concurrency),
            ] {
                if v == Some(0) {
                    errs.push(err(
                        &format!("{path}.rate_limit.{key}"),
                        None,
                        "must be positive (leave it out for no limit)",
                    ));
                }
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
                price_cached_input_per_mtok: m
                    .price_cached_input_per_mtok
                    .unwrap_or(m.price_input_per_mtok),
                expected_latency: m.expected_latency_ms.map(Duration::from_millis),
                capabilities: m.capabilities.clone(),
                tokenizer: m.tokenizer.unwrap_or_else(|| {
                    TokenizerKind::for_model(m.model.as_deref().unwrap_or(name))
                }),
                rate_limit: crate::fallback::limits::LimitSettings {
                    requests_per_minute: m.rate_limit.requests_per_minute,
                    tokens_per_minute: m.rate_limit.tokens_per_minute,
                    concurrency: m.rate_limit.concurrency,
                },
            });
        }
        if raw.models.is_empty() {
            errs.push(err("models", None, "at least one model is required"));
        }

        let mut retry_tiers: Vec<RetryTier> = Vec::new();
        for (i, t) in raw.retry.tiers.iter().enumerate() {
            let path = format!("retry.tiers[{i}]");
            match humantime::parse_duration(t) {
                Ok(d) if d.is_zero() => errs.push(err(&path, None, "must be positive")),
                Ok(_) if !valid_topic_part(t) => errs.push(err(
                    &path,
                    None,
                    &format!(
                        "{t:?} names a topic: write it without spaces, e.g. \"90s\" or \"1h\""
                    ),
                )),
                Ok(_) if retry_tiers.iter().any(|r| r.name == *t) => {
                    errs.push(err(&path, None, &format!("duplicate tier {t:?}")))
                }
                Ok(delay) => retry_tiers.push(RetryTier {
                    name: t.clone(),
                    delay,
                }),
                Err(e) => errs.push(err(
                    &path,
                    None,
                    &format!("not a duration ({e}); e.g. \"30s\", \"5m\", \"1h\""),
                )),
            }
        }

        let mut routes = routes::named_routes(&raw, text, &model_index, &models, &mut errs);
        let route_index: HashMap<String, usize> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();

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
                if s.route.is_some()
                    && (!s.fallbacks.is_empty()
                        || !s.task_models.is_empty()
                        || !s.review.is_empty()
                        || s.content_filter != ContentFilterPolicy::default())
                {
                    let key = if !s.fallbacks.is_empty() {
                        "fallbacks"
                    } else if !s.task_models.is_empty() {
                        "task_models"
                    } else if !s.review.is_empty() {
                        "review"
                    } else {
                        "content_filter"
                    };
                    errs.push(err(
                        &format!("{spath}.{key}"),
                        None,
                        "only with `model`: a step with a `route` takes its candidates (and their order, which is the fallback chain) from the route",
                    ));
                }
                let route = match (&s.route, &s.model) {
                    (Some(r), None) => match route_index.get(r.get_ref()) {
                        Some(&i) => i,
                        None => {
                            errs.push(err(
                                &format!("{spath}.route"),
                                line(r.span()),
                                &format!(
                                    "unknown route {:?} (known: {})",
                                    r.get_ref(),
                                    list(raw.routes.keys())
                                ),
                            ));
                            0
                        }
                    },
                    (None, Some(_)) => {
                        routes.push(routes::inline_route(
                            &format!("{pname}.{}", s.name),
                            &spath,
                            s,
                            text,
                            &raw,
                            &model_index,
                            &mut errs,
                        ));
                        routes.len() - 1
                    }
                    (Some(_), Some(_)) => {
                        errs.push(err(
                            &spath,
                            None,
                            "set either `route` or `model` (with task_models and fallbacks), not both",
                        ));
                        0
                    }
                    (None, None) => {
                        errs.push(err(
                            &spath,
                            None,
                            "missing `route` (or `model`): which models may serve this step",
                        ));
                        0
                    }
                };
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
                    retry_topics: retry_tiers
                        .iter()
                        .map(|t| format!("{topic}.retry.{}", t.name))
                        .collect(),
                    topic,
                    route,
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
        if w.round_deadline_ms == 0 {
            errs.push(err("worker.round_deadline_ms", None, "must be positive"));
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

        let cb = &raw.circuit_breaker;
        if cb.consecutive_failures == 0 {
            errs.push(err(
                "circuit_breaker.consecutive_failures",
                None,
                "must be at least 1",
            ));
        }
        if !(cb.failure_rate > 0.0 && cb.failure_rate <= 1.0) {
            errs.push(err(
                "circuit_breaker.failure_rate",
                None,
                &format!("must be within (0, 1], got {}", cb.failure_rate),
            ));
        }
        for (key, v) in [
            ("window_ms", cb.window_ms),
            ("cooldown_ms", cb.cooldown_ms),
            ("out_of_rotation_ms", cb.out_of_rotation_ms),
        ] {
            if v == 0 {
                errs.push(err(
                    &format!("circuit_breaker.{key}"),
                    None,
                    "must be positive",
                ));
            }
        }

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
                rate_limit_wait: Duration::from_millis(w.rate_limit_wait_ms),
                round_deadline: Duration::from_millis(w.round_deadline_ms),
            },
            models,
            retry_tiers,
            circuit_breaker: crate::fallback::BreakerSettings {
                consecutive_failures: cb.consecutive_failures,
                failure_rate: cb.failure_rate,
                min_calls: cb.min_calls,
                window: Duration::from_millis(cb.window_ms),
                cooldown: Duration::from_millis(cb.cooldown_ms),
            },
            out_of_rotation: Duration::from_millis(cb.out_of_rotation_ms),
            routes,
            steps,
            pipelines: raw.pipelines.keys().cloned().collect(),
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

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names
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
