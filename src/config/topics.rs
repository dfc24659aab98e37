//! `[topics]`: what the shared topics are called, and the declarations file that says how each
//! kind of topic is made (partitions, replication, configs; `topics/baton.toml` is built in).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::Resolver;

/// `[topics]` as written.
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
    /// Stage tracking topic (compacted, key = job id).
    #[serde(default = "d_status")]
    pub status: String,
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
            status: d_status(),
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
fn d_status() -> String {
    "baton.status".into()
}
fn d_memory() -> String {
    "baton.memory".into()
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
    /// Each job's stage (compacted, key = job id).
    pub status: String,
}

impl TopicNames {
    /// The dead-letter topic of an input topic.
    pub fn dlq_of(input_topic: &str) -> String {
        format!("{input_topic}.dlq")
    }
}

impl RawTopics {
    /// The prefixed names.
    pub fn resolve(&self) -> TopicNames {
        let prefix = &self.prefix;
        TopicNames {
            results: format!("{prefix}{}", self.results),
            calls: format!("{prefix}{}", self.calls),
            review: format!("{prefix}{}", self.review),
            memory: format!("{prefix}{}", self.memory),
            status: format!("{prefix}{}", self.status),
            prefix: prefix.clone(),
        }
    }

    /// The declarations named (a relative file resolves against `base_dir`), or the built-in.
    pub fn declarations(&self, base_dir: Option<&Path>, r: &mut Resolver<'_>) -> TopicDeclarations {
        match &self.declarations {
            None => TopicDeclarations::builtin(),
            Some(p) => {
                let path: PathBuf = match base_dir {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p.clone(),
                };
                TopicDeclarations::load(&path).unwrap_or_else(|e| {
                    r.err("topics.declarations", e.to_string());
                    TopicDeclarations::builtin()
                })
            }
        }
    }
}

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
    /// The stage tracking topic; as `memory` (compacted) when absent.
    #[serde(default)]
    pub status: Option<TopicSpec>,
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

    /// The spec of the status topic.
    pub fn status_spec(&self) -> &TopicSpec {
        self.status.as_ref().unwrap_or(&self.memory)
    }

    fn kinds(&self) -> [(&'static str, &TopicSpec); 8] {
        [
            ("input", &self.input),
            ("retry", self.retry_spec()),
            ("dlq", &self.dlq),
            ("results", &self.results),
            ("calls", &self.calls),
            ("review", &self.review),
            ("memory", &self.memory),
            ("status", self.status_spec()),
        ]
    }
}
