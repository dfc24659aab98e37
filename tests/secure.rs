//! Production Kafka, against a real broker: a worker that reaches the cluster only through a
//! TLS + SASL listener (as managed Kafka services require: SCRAM, OAUTHBEARER), and a topic written with zstd
//! compression by an independent client (Kafka's own console producer).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_consumes_and_produces_through_tls_and_scram() {
    let (secure, ca, user, password) = secure_listener();
    let common = format!(
        "common = {{ \"security.protocol\" = \"SASL_SSL\", \"sasl.mechanism\" = \"SCRAM-SHA-256\", \
         \"sasl.username\" = \"${{BATON_TEST_SASL_USER}}\", \"sasl.password\" = \"${{BATON_TEST_SASL_PASSWORD}}\", \
         \"ssl.ca.location\" = \"{ca}\" }}"
    );
    // Credentials come from the worker's environment, never from the file.
    let log = worker_through(
        "tls",
        &secure,
        &common,
        &[
            ("BATON_TEST_SASL_USER", user.as_str()),
            ("BATON_TEST_SASL_PASSWORD", password.as_str()),
        ],
        &password,
    )
    .await;
    assert!(
        !log.contains(&password),
        "the SASL password is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_consumes_and_produces_through_tls_and_oauthbearer() {
    // The test broker takes Kafka's unsigned tokens (librdkafka makes one for the principal);
    // against a managed cluster the same mechanism gets its tokens from the identity provider
    // (`sasl.oauthbearer.method = "oidc"`, which the binary is built for).
    let (secure, ca, _, _) = secure_listener();
    let common = format!(
        "common = {{ \"security.protocol\" = \"SASL_SSL\", \"sasl.mechanism\" = \"OAUTHBEARER\", \
         \"enable.sasl.oauthbearer.unsecure.jwt\" = \"true\", \"sasl.oauthbearer.config\" = \"principal=baton\", \
         \"ssl.ca.location\" = \"{ca}\" }}"
    );
    worker_through("oauth", &secure, &common, &[], "no secret").await;
}

/// Runs a worker whose config reaches the cluster only through `secure` with the `[kafka]`
/// line `common` (the world's topics are made through the plain listener), feeds it 20 jobs
/// and waits for their results; returns the worker's log. `secret` must not be in the file.
async fn worker_through(
    name: &str,
    secure: &str,
    common: &str,
    env: &[(&str, &str)],
    secret: &str,
) -> String {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let world = World::new(name, &mock.base_url(), &one_model_config(16, "")).await;
    let plain = std::fs::read_to_string(&world.config_path).unwrap();
    let text = plain.replace(
        &format!("bootstrap_servers = \"{}\"", bootstrap()),
        &format!("bootstrap_servers = \"{secure}\"\n{common}"),
    );
    assert_ne!(text, plain);
    assert!(!text.contains(secret));
    let secure_config = world.dir.path().join("secure.toml");
    std::fs::write(&secure_config, text).unwrap();
    produce(
        &world.input(),
        (0..20)
            .map(|i| (None, job(&format!("t{i}"), "over TLS")))
            .collect(),
    )
    .await;
    let worker = Worker::start_with_env(&secure_config, world.dir.path(), env);
    let mut reader = Reader::new(&[world.results()]);
    assert!(
        reader.read_until(Duration::from_secs(60), |r| r.len() >= 20),
        "results through the secure listener; worker log:\n{}",
        worker.log_text()
    );
    let log = worker.log_text();
    assert!(log.contains("partitions assigned"), "{log}");
    // The on-call tools reach the same cluster the same way, from the same config.
    let config = secure_config.to_str().unwrap();
    let results = world.results();
    let consumed = tool(
        &[
            "consume", "--config", config, "--topic", &results, "--count", "20",
        ],
        env,
    );
    assert_eq!(consumed.lines().count(), 20, "{consumed}");
    let status = tool(&["status", "--config", config, "t7"], env);
    assert!(
        status.contains("job t7:") && status.contains("done"),
        "{status}"
    );
    let dlq = world.dlq();
    let inspected = tool(
        &[
            "dlq",
            "inspect",
            "--config",
            config,
            "--topic",
            &dlq,
            "--idle-ms",
            "1000",
        ],
        env,
    );
    assert!(inspected.contains("0 dead letter(s)"), "{inspected}");
    log
}

/// Runs a `baton` tool with `env` (no bootstrap from the environment); returns its output.
fn tool(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("BATON_BOOTSTRAP")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run baton");
    assert!(
        out.status.success(),
        "baton {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_written_with_zstd_by_another_client_is_consumed() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let world = World::new("zstd", &mock.base_url(), &one_model_config(16, "")).await;
    let lines: String = (0..30)
        .map(|i| format!("{{\"id\":\"z{i}\",\"input\":\"compressed {i}\"}}\n"))
        .collect();
    kafka_tool_with_input(
        "org.apache.kafka.tools.ConsoleProducer",
        &[
            "--bootstrap-server",
            &bootstrap(),
            "--topic",
            &world.input(),
            "--compression-codec",
            "zstd",
        ],
        &lines,
    );
    let _worker = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(
        reader.read_until(Duration::from_secs(60), |r| r.len() >= 30),
        "30 answers"
    );
    let ids = result_ids(&reader.records);
    assert_eq!(
        distinct(&ids),
        30,
        "every zstd record answered once: {ids:?}"
    );
}
