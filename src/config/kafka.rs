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
    /// librdkafka properties of every client baton makes (worker, memory reader, tools):
    /// security, SASL and TLS settings go here.
    #[serde(default)]
    pub common: BTreeMap<String, String>,
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
            common: BTreeMap::new(),
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
    /// librdkafka properties of every client (security, SASL, TLS).
    pub common: BTreeMap<String, String>,
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

/// Classic-protocol consumer properties the consumer group protocol sets on the broker
/// (librdkafka refuses them with `group.protocol=consumer`).
const CLASSIC_ONLY_KEYS: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

/// Properties `[kafka.common]` may not set: those baton manages in any client.
const MANAGED_COMMON_KEYS: &[&str] = &[
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "bootstrap.servers",
    "acks",
    "enable.idempotence",
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
            (
                "common",
                &self.common,
                MANAGED_COMMON_KEYS,
                "set per client; the consumer and producer sections say why",
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
        if self.consumer.get("group.protocol").map(String::as_str) != Some("classic") {
            for key in self.consumer.keys() {
                if CLASSIC_ONLY_KEYS.contains(&key.as_str()) {
                    r.err(
                        &format!("kafka.consumer.{key}"),
                        "set on the broker under the consumer group protocol baton uses \
                         (group.consumer.* broker settings); remove it, or set \
                         group.protocol = \"classic\""
                            .to_string(),
                    );
                }
            }
        }
        KafkaSettings {
            bootstrap_servers: self.bootstrap_servers.clone().unwrap_or_default(),
            group_id: self.group_id.clone(),
            common: from_env(r, "common", &self.common),
            consumer: from_env(r, "consumer", &self.consumer),
            producer: from_env(r, "producer", &self.producer),
        }
    }
}

/// The properties with each `${NAME}` replaced by the environment variable `NAME`, so
/// credentials (`sasl.password`) and per-process values (`group.instance.id`) stay out of
/// the file; an unset variable is an error naming the property.
fn from_env(
    r: &mut Resolver<'_>,
    section: &str,
    props: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in props {
        match expand(value, |name| std::env::var(name).ok()) {
            Ok(v) => {
                out.insert(key.clone(), v);
            }
            Err(e) => r.err(&format!("kafka.{section}.{key}"), e),
        }
    }
    out
}

/// Replaces each `${NAME}` in `value` by `lookup(NAME)`.
fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("`${` without a closing `}`".into());
        };
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{name}}}` is not an environment variable name"));
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn variables_are_expanded_and_missing_ones_named() {
        let env = |n: &str| (n == "USER_1").then(|| "alice".to_string());
        assert_eq!(expand("plain", env).unwrap(), "plain");
        assert_eq!(expand("${USER_1}", env).unwrap(), "alice");
        assert_eq!(expand("w-${USER_1}-x", env).unwrap(), "w-alice-x");
        assert_eq!(
            expand("${NOPE}", env).unwrap_err(),
            "environment variable NOPE is not set"
        );
        assert!(expand("${USER_1", env).is_err());
        assert!(expand("${a b}", env).is_err());
    }
}
