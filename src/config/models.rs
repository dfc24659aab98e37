//! `[models.<name>]`: one model baton may call, with what the router, the providers and the
//! rate limiter need to know about it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::Resolver;
use super::vocab::{Sensitivity, Usage};

/// Which wire protocol a model's provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// The tokenizer used to count a model's prompt tokens exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

    /// Whether `model` is an OpenAI model, whose tokenizer [`TokenizerKind::for_model`]
    /// knows: its counts are exact; any other model's are an estimate.
    pub fn is_exact_for(model: &str) -> bool {
        let m = model.to_ascii_lowercase();
        ["gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding"]
            .iter()
            .any(|p| m.starts_with(p))
    }

    /// The snake_case name used in config and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenizerKind::O200kBase => "o200k_base",
            TokenizerKind::Cl100kBase => "cl100k_base",
        }
    }
}

/// `[models.<name>]` as written.
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

/// A model's quota at its provider: what `fallback::limits` keeps it under.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitSettings {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens (input plus output) per minute.
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
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
    /// Whether its prompt counts are exact (an OpenAI model, or a tokenizer the config names);
    /// otherwise they are an estimate, and say so.
    pub tokens_exact: bool,
    /// The provider's quota for it.
    pub rate_limit: LimitSettings,
}

impl ModelConfig {
    /// Cost in USD of a call with these token counts (no cached input).
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        self.usage_cost_usd(&Usage {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens + output_tokens,
            ..Usage::default()
        })
    }

    /// Cost in USD of a billed call: cached input tokens at the cached price, the rest of the
    /// input and all output at the normal prices.
    pub fn usage_cost_usd(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        ((usage.input_tokens - cached) as f64 * self.price_input_per_mtok
            + cached as f64 * self.price_cached_input_per_mtok
            + usage.output_tokens as f64 * self.price_output_per_mtok)
            / 1_000_000.0
    }
}

impl RawModel {
    /// Checks the model named `name` and builds its runtime form.
    pub fn resolve(&self, name: &str, r: &mut Resolver<'_>) -> ModelConfig {
        let path = format!("models.{name}");
        self.check(&path, r);
        ModelConfig {
            name: name.to_string(),
            provider: self.provider,
            provider_model: self.model.clone().unwrap_or_else(|| name.to_string()),
            base_url: self.base_url.trim_end_matches('/').to_string(),
            api_key_env: self.api_key_env.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            price_input_per_mtok: self.price_input_per_mtok,
            price_output_per_mtok: self.price_output_per_mtok,
            context_window: self.context_window,
            residency: self.residency.clone(),
            sensitivities: self.sensitivities.clone(),
            price_cached_input_per_mtok: self
                .price_cached_input_per_mtok
                .unwrap_or(self.price_input_per_mtok),
            expected_latency: self.expected_latency_ms.map(Duration::from_millis),
            capabilities: self.capabilities.clone(),
            tokenizer: self
                .tokenizer
                .unwrap_or_else(|| TokenizerKind::for_model(self.model.as_deref().unwrap_or(name))),
            tokens_exact: self.tokenizer.is_some()
                || TokenizerKind::is_exact_for(self.model.as_deref().unwrap_or(name)),
            rate_limit: LimitSettings {
                requests_per_minute: self.rate_limit.requests_per_minute,
                tokens_per_minute: self.rate_limit.tokens_per_minute,
                concurrency: self.rate_limit.concurrency,
            },
        }
    }

    fn check(&self, path: &str, r: &mut Resolver<'_>) {
        if self.base_url.trim().is_empty() {
            r.err(&format!("{path}.base_url"), "must not be empty");
        } else if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            r.err(
                &format!("{path}.base_url"),
                format!(
                    "must start with http:// or https://, got {:?}",
                    self.base_url
                ),
            );
        }
        for (key, price) in [
            ("price_input_per_mtok", Some(self.price_input_per_mtok)),
            ("price_output_per_mtok", Some(self.price_output_per_mtok)),
            (
                "price_cached_input_per_mtok",
                self.price_cached_input_per_mtok,
            ),
        ] {
            // NaN and infinity are TOML floats too, and would poison every cost sum.
            if let Some(p) = price.filter(|p| !(p.is_finite() && *p >= 0.0)) {
                r.err(
                    &format!("{path}.{key}"),
                    format!("must be a price in USD, zero or more, got {p}"),
                );
            }
        }
        if self.context_window == 0 {
            r.err(&format!("{path}.context_window"), "must be positive");
        }
        let limits = &self.rate_limit;
        for (key, v) in [
            ("requests_per_minute", limits.requests_per_minute),
            ("tokens_per_minute", limits.tokens_per_minute),
            ("concurrency", limits.concurrency),
        ] {
            if v == Some(0) {
                r.err(
                    &format!("{path}.rate_limit.{key}"),
                    "must be positive (leave it out for no limit)",
                );
            }
        }
        if self.timeout_ms == 0 {
            r.err(&format!("{path}.timeout_ms"), "must be positive");
        }
        if self.api_key_env.as_deref() == Some("") {
            r.err(&format!("{path}.api_key_env"), "must not be empty");
        }
    }
}
