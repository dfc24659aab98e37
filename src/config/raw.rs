//! Phase one of configuration: the TOML file as written, with defaults and no unknown keys.
//! Each section's raw form lives beside its resolved form, in the section's own file.

use indexmap::IndexMap;
use serde::Deserialize;

use super::circuit_breaker::RawBreaker;
use super::kafka::RawKafka;
use super::models::RawModel;
use super::pipelines::RawPipeline;
use super::retry::RawRetry;
use super::routes::RawRoute;
use super::topics::RawTopics;
use super::worker::RawWorker;

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
