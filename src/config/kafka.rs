//! `[kafka]`: client settings of the workers, with the properties baton manages itself refused.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::Resolver;

/// `[kafka]` as written.
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

/// Consumer properties baton sets itself and a config may not override.
const MANAGED_CONSUMER_KEYS: &[&str] = &[
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "bootstrap.servers",
];

/// Producer properties baton sets itself and a config may not override.
const MANAGED_PRODUCER_KEYS: &[&str] = &["acks", "enable.idempotence", "bootstrap.servers"];

impl RawKafka {
    /// Refuses overrides of managed properties and builds the settings.
    pub fn resolve(&self, r: &mut Resolver<'_>) -> KafkaSettings {
        // These keys carry baton's delivery guarantees; a user override would silently break
        // at-least-once (offsets stored before the work is done) or the consumer group.
        let managed = [
            (
                "consumer",
                &self.consumer,
                MANAGED_CONSUMER_KEYS,
                "offsets are stored only behind finished work",
            ),
            (
                "producer",
                &self.producer,
                MANAGED_PRODUCER_KEYS,
                "outputs must be acknowledged by all replicas",
            ),
        ];
        for (section, props, keys, why) in managed {
            for key in props.keys().filter(|k| keys.contains(&k.as_str())) {
                r.err(
                    &format!("kafka.{section}.{key}"),
                    format!("managed by baton ({why}); remove it"),
                );
            }
        }
        KafkaSettings {
            bootstrap_servers: self.bootstrap_servers.clone().unwrap_or_default(),
            group_id: self.group_id.clone(),
            consumer: self.consumer.clone(),
            producer: self.producer.clone(),
        }
    }
}
