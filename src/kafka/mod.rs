//! Kafka edges: client settings, record headers and metadata, the topic plan and admin, dead-
//! letter tools, and the `produce`/`consume` command-line tools. The worker's consume loop
//! lives in `worker`.

pub mod admin;
pub mod dlq;
pub mod headers;
pub mod lag;
pub mod meta;
pub mod tools;
pub mod topics;

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// Consumer settings for the workers: manual offset store (offsets are stored only behind
/// finished work) with librdkafka's auto-commit of what was stored every 200 ms (a crash
/// redoes little more than its in-flight jobs).
///
/// Rebalancing is incremental through Kafka's consumer group protocol (KIP-848, Kafka 4
/// brokers, librdkafka 2.12): the broker computes the assignment and a member joining, leaving
/// or dying moves only the partitions that change owner; the others keep running, with no
/// group-wide stop. Its `range` assignor balances every topic on its own, so each member gets
/// its share of the input topic and of each retry tier (the classic protocol's cooperative
/// assignor balances partition counts over all topics together and handed one member the whole
/// input topic). `group.protocol = "classic"` in `[kafka.consumer]` falls back to the classic
/// protocol (range assignment, eager rebalances) for brokers older than 4.0.
pub fn consumer_config(k: &KafkaSettings) -> ClientConfig {
    let mut c = client_config(k);
    c.set("group.id", &k.group_id)
        .set("client.id", "baton-worker")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        .set("max.poll.interval.ms", "300000");
    if classic_protocol(k) {
        c.set("session.timeout.ms", "30000");
    } else {
        c.set("group.protocol", "consumer")
            .set("group.remote.assignor", "range");
    }
    for (key, value) in &k.consumer {
        c.set(key, value);
    }
    c
}

/// Whether the config chose the classic consumer group protocol.
pub fn classic_protocol(k: &KafkaSettings) -> bool {
    k.consumer.get("group.protocol").map(String::as_str) == Some("classic")
}

/// Producer settings: idempotent, acks=all, small linger for batching.
pub fn producer_config(k: &KafkaSettings) -> ClientConfig {
    let mut c = client_config(k);
    c.set("client.id", "baton-producer")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "60000");
    for (key, value) in &k.producer {
        c.set(key, value);
    }
    c
}

/// Settings for any client under a config (a tool, the memory reader, admin): its bootstrap
/// servers and `[kafka.common]` (security protocol, SASL, TLS).
pub fn client_config(k: &KafkaSettings) -> ClientConfig {
    let mut c = plain_config(&k.bootstrap_servers);
    for (key, value) in &k.common {
        c.set(key, value);
    }
    // The vendored OpenSSL has no CA store of its own: without a CA file, look for the
    // system's (a managed cluster's certificate chains to a public CA).
    let tls = k
        .common
        .get("security.protocol")
        .is_some_and(|p| p.to_ascii_uppercase().contains("SSL"));
    if tls && !k.common.contains_key("ssl.ca.location") {
        c.set("ssl.ca.location", "probe");
    }
    c
}

/// Settings for a plain client (tools, admin) from a bootstrap address.
pub fn plain_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;

    /// A managed cluster's OAUTHBEARER login through its identity provider (OIDC client
    /// credentials): librdkafka refuses these settings unless it was built with libcurl.
    #[test]
    fn the_binary_accepts_an_oidc_login_for_its_clients() {
        let common = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
            ("sasl.oauthbearer.client.id", "baton"),
            ("sasl.oauthbearer.client.secret", "s"),
            (
                "sasl.oauthbearer.token.endpoint.url",
                "https://idp.example/oauth2/token",
            ),
            ("sasl.oauthbearer.scope", "kafka"),
        ];
        let k = crate::config::KafkaSettings {
            bootstrap_servers: "127.0.0.1:9".into(),
            group_id: "g".into(),
            common: common
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            consumer: Default::default(),
            producer: Default::default(),
        };
        let consumer = super::consumer_config(&k).create::<BaseConsumer>();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
        let producer = super::producer_config(&k).create::<BaseProducer>();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }
}
