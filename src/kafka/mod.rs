//! Kafka edges: client settings, record headers and metadata, the topic plan and admin, dead-
//! letter tools, and the `produce`/`consume` command-line tools. The worker's consume loop
//! lives in `worker`.

pub mod admin;
pub mod dlq;
pub mod headers;
pub mod meta;
pub mod tools;
pub mod topics;

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// Consumer settings for the workers: manual offset store (offsets are stored only behind
/// finished work) with librdkafka's periodic auto-commit of what was stored.
pub fn consumer_config(k: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set("group.id", &k.group_id)
        .set("client.id", "baton-worker")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        .set("session.timeout.ms", "30000")
        .set("max.poll.interval.ms", "300000");
    for (key, value) in &k.consumer {
        c.set(key, value);
    }
    c
}

/// Producer settings: idempotent, acks=all, small linger for batching.
pub fn producer_config(k: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set("client.id", "baton-producer")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "60000");
    for (key, value) in &k.producer {
        c.set(key, value);
    }
    c
}

/// Settings for a plain client (tools, admin) from a bootstrap address.
pub fn plain_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}
