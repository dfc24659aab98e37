//! Phase one of configuration: the TOML file as written, with defaults and no unknown keys.
//!
//! Nothing here checks cross-references; [`super::Config::from_raw`] does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;

use super::{Capability, ProviderKind, Sensitivity, Strategy, TokenizerKind};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[kafka]`
    #[serde(default)]
    pub kafka: RawKafka,
    /// `[topics]`
    #[serde(default)]
    pub topics: RawTopics,
    /// `[worker]`
    #[serde(default)]
    pub worker: RawWorker,
    /// `[models.<name>]`, in file order.
    #[serde(default)]
    pub models: IndexMap<String, RawModel>,
    /// `[circuit_breaker]`
    #[serde(default)]
    pub circuit_breaker: RawBreaker,
    /// `[retry]`
    #[serde(default)]
    pub retry: RawRetry,
    /// `[routes.<name>]`, in file order.
    #[serde(default)]
    pub routes: IndexMap<String, RawRoute>,
    /// `[pipelines.<name>]`, in file order.
    #[serde(default)]
    pub pipelines: IndexMap<String, RawPipeline>,
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// `bootstrap.servers`; `--bootstrap` overrides it.
    pub bootstrap_servers: Option<String>,
    /// Consumer group of the workers.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Extra librdkafka consumer properties.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// Extra librdkafka producer properties.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

impl Default for RawKafka {
    fn default() -> Self {
        RawKafka {
            bootstrap_servers: None,
            group_id: default_group(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

fn default_group() -> String {
    "baton-workers".into()
}

/// `[topics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopics {
    /// Prefix for every topic baton reads or writes.
    #[serde(default)]
    pub prefix: String,
    /// Results topic (before the prefix).
    #[serde(default = "d_results")]
    pub results: String,
    /// Per-call audit topic.
    #[serde(default = "d_calls")]
    pub calls: String,
    /// Human review topic.
    #[serde(default = "d_review")]
    pub review: String,
    /// Conversation memory topic (compacted).
    #[serde(default = "d_memory")]
    pub memory: String,
    /// A topic declarations file (see `topics/baton.toml`); the built-in one when absent.
    pub declarations: Option<PathBuf>,
}

impl Default for RawTopics {
    fn default() -> Self {
        RawTopics {
            prefix: String::new(),
            results: d_results(),
            calls: d_calls(),
            review: d_review(),
            memory: d_memory(),
            declarations: None,
        }
    }
}

fn d_results() -> String {
    "baton.results".into()
}
fn d_calls() -> String {
    "baton.calls".into()
}
fn d_review() -> String {
    "baton.review".into()
}
fn d_memory() -> String {
    "baton.memory".into()
}

/// `[worker]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    /// Jobs in flight at once, across all partitions.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: usize,
    /// Largest accepted record value in bytes.
    #[serde(default = "d_payload")]
    pub max_payload_bytes: usize,
    /// Drain deadline on SIGINT/SIGTERM.
    #[serde(default = "d_shutdown")]
    pub shutdown_timeout_ms: u64,
    /// Drain deadline for revoked partitions.
    #[serde(default = "d_rebalance")]
    pub rebalance_timeout_ms: u64,
    /// In-process attempts per provider call for retryable errors.
    #[serde(default = "d_attempts")]
    pub provider_attempts: u32,
    /// `/metrics` and `/healthz` address, or "off".
    #[serde(default = "d_metrics")]
    pub metrics_listen: Option<String>,
    /// How long a call may wait for a model's rate-limit capacity before the next candidate.
    #[serde(default = "d_rl_wait")]
    pub rate_limit_wait_ms: u64,
    /// The longest one round of a job (every attempt on every candidate) may take before it
    /// goes to a retry tier.
    #[serde(default = "d_round_deadline")]
    pub round_deadline_ms: u64,
}

fn d_round_deadline() -> u64 {
    180_000
}

fn d_rl_wait() -> u64 {
    2_000
}

impl Default for RawWorker {
    fn default() -> Self {
        RawWorker {
            max_in_flight: d_in_flight(),
            max_payload_bytes: d_payload(),
            shutdown_timeout_ms: d_shutdown(),
            rebalance_timeout_ms: d_rebalance(),
            provider_attempts: d_attempts(),
            metrics_listen: d_metrics(),
            rate_limit_wait_ms: d_rl_wait(),
            round_deadline_ms: d_round_deadline(),
        }
    }
}

fn d_in_flight() -> usize {
    1024
}
fn d_payload() -> usize {
    1024 * 1024
}
fn d_shutdown() -> u64 {
    30_000
}
fn d_rebalance() -> u64 {
    15_000
}
fn d_attempts() -> u32 {
    3
}
fn d_metrics() -> Option<String> {
    Some("127.0.0.1:9464".into())
}

/// `[models.<name>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Wire protocol; `openai` (any OpenAI-compatible endpoint).
    #[serde(default = "d_provider")]
    pub provider: ProviderKind,
    /// Provider-side model id; the config name when absent.
    pub model: Option<String>,
    /// Base URL including `/v1`.
    pub base_url: String,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// HTTP timeout of one call.
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// USD per 1M input tokens.
    #[serde(default)]
    pub price_input_per_mtok: f64,
    /// USD per 1M output tokens.
    #[serde(default)]
    pub price_output_per_mtok: f64,
    /// Context window in tokens.
    #[serde(default = "d_window")]
    pub context_window: u32,
    /// Residency tag.
    pub residency: Option<String>,
    /// Sensitivities this model may receive.
    #[serde(default = "d_sens")]
    pub sensitivities: Vec<Sensitivity>,
    /// USD per 1M cached input tokens, where the provider bills them apart.
    pub price_cached_input_per_mtok: Option<f64>,
    /// Expected median latency of a call, used until calls have been observed.
    pub expected_latency_ms: Option<u64>,
    /// What the model can do beyond plain chat.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Tokenizer for exact prompt counts; chosen from the model id when absent.
    pub tokenizer: Option<TokenizerKind>,
    /// The provider's quota for this model.
    #[serde(default)]
    pub rate_limit: RawRateLimit,
}

/// `rate_limit = { requests_per_minute = 500, tokens_per_minute = 200000, concurrency = 50 }`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Input plus output tokens per minute.
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

fn d_provider() -> ProviderKind {
    ProviderKind::Openai
}
fn d_timeout() -> u64 {
    60_000
}
fn d_window() -> u32 {
    128_000
}
fn d_sens() -> Vec<Sensitivity> {
    vec![Sensitivity::Public, Sensitivity::Internal]
}

/// `[pipelines.<name>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// `[[pipelines.<name>.steps]]`, in order.
    pub steps: Vec<RawStep>,
}

/// `[[pipelines.<name>.steps]]`
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
    pub review: Vec<crate::envelope::ErrorClass>,
    /// What a content-filter refusal does (with `model`; a route says it itself).
    #[serde(default)]
    pub content_filter: super::ContentFilterPolicy,
    /// System prompt placed before the job's messages.
    pub system_prompt: Option<String>,
    /// Output token cap when the job sets none.
    pub max_tokens: Option<u32>,
}

/// A model name, or a list of strings, as written: `task = "x"` or `task = ["x", "y"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values; any matches.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[routes.<name>]`: how a step picks its model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Candidate models of classes that do not name their own.
    #[serde(default)]
    pub models: Vec<toml::Spanned<String>>,
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
    pub review: Vec<crate::envelope::ErrorClass>,
    /// What a content-filter refusal does: `dead_letter` (default) or `other_provider`.
    #[serde(default)]
    pub content_filter: super::ContentFilterPolicy,
}

/// `[routes.<name>.classes.<class>]`; every field inherits from the route when absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    /// Candidate models.
    pub models: Option<Vec<toml::Spanned<String>>>,
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

/// `[[routes.<name>.rules]]`: conditions (all must hold) and the class they give.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Name shown in decisions; `rules[i]` when absent.
    pub name: Option<String>,
    /// The class a matching job gets.
    pub class: toml::Spanned<String>,
    /// The job's `task` is one of these.
    pub task: Option<OneOrMany>,
    /// The job's `tenant` is one of these.
    pub tenant: Option<OneOrMany>,
    /// Each key of the job's `metadata` (or dotted path into it, `customer.plan`) equals the
    /// given value.
    #[serde(default)]
    pub metadata: IndexMap<String, toml::Value>,
    /// The content contains one of these words (case-insensitive, whole words).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The content matches this regular expression.
    pub regex: Option<String>,
    /// The prompt has at least this many tokens.
    pub min_tokens: Option<u64>,
    /// The prompt has at most this many tokens.
    pub max_tokens: Option<u64>,
}

/// `[routes.<name>.classifier]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassifier {
    /// The model asked.
    pub model: toml::Spanned<String>,
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
    pub models: Option<Vec<toml::Spanned<String>>>,
    /// Strategy for every class of this variant.
    pub strategy: Option<Strategy>,
    /// Per-class overrides.
    #[serde(default)]
    pub classes: IndexMap<String, RawClass>,
}

/// `[circuit_breaker]`: one circuit per model, these settings for all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Failures in a row that open a model's circuit.
    #[serde(default = "d_consecutive")]
    pub consecutive_failures: u32,
    /// Failure share within `window_ms` that opens it, once `min_calls` were made.
    #[serde(default = "d_rate")]
    pub failure_rate: f64,
    /// Calls within the window before `failure_rate` applies.
    #[serde(default = "d_min_calls")]
    pub min_calls: u32,
    /// The failure-rate window.
    #[serde(default = "d_window_ms")]
    pub window_ms: u64,
    /// How long an open circuit skips its model before one probe call.
    #[serde(default = "d_cooldown_ms")]
    pub cooldown_ms: u64,
    /// How long bad credentials (401/403) or an unknown model id (404) take a model out.
    #[serde(default = "d_out_ms")]
    pub out_of_rotation_ms: u64,
}

impl Default for RawBreaker {
    fn default() -> Self {
        RawBreaker {
            consecutive_failures: d_consecutive(),
            failure_rate: d_rate(),
            min_calls: d_min_calls(),
            window_ms: d_window_ms(),
            cooldown_ms: d_cooldown_ms(),
            out_of_rotation_ms: d_out_ms(),
        }
    }
}

fn d_consecutive() -> u32 {
    5
}
fn d_rate() -> f64 {
    0.5
}
fn d_min_calls() -> u32 {
    20
}
fn d_window_ms() -> u64 {
    60_000
}
fn d_cooldown_ms() -> u64 {
    30_000
}
fn d_out_ms() -> u64 {
    300_000
}

/// `[retry]`: delayed retry topics for failures that outlast in-process attempts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Delays of the retry tiers, in order (`"30s"`, `"5m"`...); each is a topic
    /// `<input>.retry.<delay>`. Empty: retryable failures are dead-lettered at once.
    #[serde(default = "d_tiers")]
    pub tiers: Vec<String>,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry { tiers: d_tiers() }
    }
}

fn d_tiers() -> Vec<String> {
    vec!["30s".into(), "5m".into(), "30m".into()]
}
