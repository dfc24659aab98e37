//! Topic declarations (`topics/baton.toml`) and the plan of every topic a config implies.
//!
//! The declarations say how each kind of topic is made (partitions, replication, configs); the
//! config says what the topics are called. [`plan`] joins the two; `baton topics apply` turns the
//! plan into admin calls.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::{Config, TopicNames};

/// How one kind of topic is made.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Broker-side topic configs (`retention.ms`, `cleanup.policy`...).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// One spec per kind of topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDeclarations {
    /// Pipeline step input topics.
    pub input: TopicSpec,
    /// Delayed retry tiers of an input topic (`<input>.retry.<delay>`); as `input` when absent.
    #[serde(default)]
    pub retry: Option<TopicSpec>,
    /// Dead-letter topics.
    pub dlq: TopicSpec,
    /// The results topic.
    pub results: TopicSpec,
    /// The per-call audit topic.
    pub calls: TopicSpec,
    /// The human review topic.
    pub review: TopicSpec,
    /// The conversation memory topic.
    pub memory: TopicSpec,
}

/// Why a declarations file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeclarationsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid declarations file.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The declarations shipped in the repository, used when the config names none.
pub const BUILTIN: &str = include_str!("../../topics/baton.toml");

impl TopicDeclarations {
    /// The built-in declarations (`topics/baton.toml`).
    pub fn builtin() -> TopicDeclarations {
        Self::parse(BUILTIN, "topics/baton.toml").expect("built-in topics/baton.toml is valid")
    }

    /// Reads a declarations file.
    pub fn load(path: &Path) -> Result<TopicDeclarations, DeclarationsError> {
        let text = std::fs::read_to_string(path).map_err(|source| DeclarationsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, name: &str) -> Result<TopicDeclarations, DeclarationsError> {
        let d: TopicDeclarations =
            toml::from_str(text).map_err(|e| DeclarationsError::Invalid {
                path: name.to_string(),
                message: e.message().to_string(),
            })?;
        for (kind, spec) in d.kinds() {
            if spec.partitions < 1 || spec.replication_factor < 1 {
                return Err(DeclarationsError::Invalid {
                    path: name.to_string(),
                    message: format!(
                        "{kind}: partitions and replication_factor must be at least 1"
                    ),
                });
            }
        }
        Ok(d)
    }

    /// The spec of retry topics.
    pub fn retry_spec(&self) -> &TopicSpec {
        self.retry.as_ref().unwrap_or(&self.input)
    }

    fn kinds(&self) -> [(&'static str, &TopicSpec); 7] {
        [
            ("input", &self.input),
            ("retry", self.retry_spec()),
            ("dlq", &self.dlq),
            ("results", &self.results),
            ("calls", &self.calls),
            ("review", &self.review),
            ("memory", &self.memory),
        ]
    }
}

/// One topic to create or check.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTopic {
    /// Full topic name.
    pub name: String,
    /// Kind, as in the declarations file.
    pub kind: &'static str,
    /// How it should be made.
    pub spec: TopicSpec,
}

/// Every topic the config implies, each once, in a stable order.
pub fn plan(config: &Config) -> Vec<PlannedTopic> {
    let d = &config.declarations;
    let mut out: Vec<PlannedTopic> = Vec::new();
    let mut push = |name: String, kind: &'static str, spec: &TopicSpec| {
        if !out.iter().any(|t| t.name == name) {
            out.push(PlannedTopic {
                name,
                kind,
                spec: spec.clone(),
            });
        }
    };
    for step in &config.steps {
        push(step.topic.clone(), "input", &d.input);
        for t in &step.retry_topics {
            push(t.clone(), "retry", d.retry_spec());
        }
        push(TopicNames::dlq_of(&step.topic), "dlq", &d.dlq);
    }
    push(config.topics.results.clone(), "results", &d.results);
    push(config.topics.calls.clone(), "calls", &d.calls);
    push(config.topics.review.clone(), "review", &d.review);
    push(config.topics.memory.clone(), "memory", &d.memory);
    out
}
