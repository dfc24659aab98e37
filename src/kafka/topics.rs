//! The plan of every topic a config implies.
//!
//! The declarations (`config::topics`, `topics/baton.toml`) say how each kind of topic is made
//! (partitions, replication, configs); the config says what the topics are called. [`plan`]
//! joins the two; `baton topics apply` turns the plan into admin calls.

use crate::config::{Config, TopicNames, TopicSpec};

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
    push(config.topics.status.clone(), "status", d.status_spec());
    out
}
