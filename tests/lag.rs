//! Lag that agrees with Kafka, against a real broker: `baton lag` and the workers'
//! `baton_consumer_lag` series are compared with Apache Kafka's own consumer-groups command,
//! while a backlog drains and after it, with a partition that never committed and with the
//! partitions split between two workers.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

/// Committed offset (`None`: never committed), log end and lag of one topic-partition.
type Offsets = BTreeMap<(String, i32), (Option<i64>, i64, i64)>;

/// Kafka's view: `ConsumerGroupCommand --describe` of the group, for `topics`.
fn kafka_view(group: &str, topics: &[String]) -> Offsets {
    let out = kafka_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &[
            "--bootstrap-server",
            &bootstrap(),
            "--describe",
            "--group",
            group,
        ],
    );
    let mut view = Offsets::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || cols[0] != group || !topics.iter().any(|t| t == cols[1]) {
            continue;
        }
        let committed = cols[3].parse::<i64>().ok();
        let end: i64 = cols[4].parse().unwrap();
        // Kafka prints `-` as the lag of a partition without a committed offset.
        let lag = cols[5].parse::<i64>().unwrap_or(-1);
        view.insert(
            (cols[1].to_string(), cols[2].parse().unwrap()),
            (committed, end, lag),
        );
    }
    view
}

/// `baton lag --json` (one reading, or two `interval` apart).
fn baton_lag(config: &Path, interval: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["lag", "--json", "--interval", interval, "--config"])
        .arg(config)
        .env_remove("BATON_BOOTSTRAP")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `baton lag`'s rows as [`Offsets`], for `topics`.
fn baton_view(report: &Value, topics: &[String]) -> Offsets {
    let mut view = Offsets::new();
    for r in report["partitions"].as_array().unwrap() {
        let topic = r["topic"].as_str().unwrap().to_string();
        if topics.contains(&topic) {
            view.insert(
                (topic, r["partition"].as_i64().unwrap() as i32),
                (
                    r["committed"].as_i64(),
                    r["log_end"].as_i64().unwrap(),
                    r["lag"].as_i64().unwrap(),
                ),
            );
        }
    }
    view
}

/// A worker's `baton_consumer_lag` series: (topic, partition) → lag (none while it is not
/// listening yet).
async fn metric(port: u16) -> BTreeMap<(String, i32), i64> {
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return BTreeMap::new();
    };
    let body = response.text().await.unwrap();
    let mut series = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("baton_consumer_lag{topic=\"") else {
            continue;
        };
        let (topic, rest) = rest.split_once("\",partition=\"").unwrap();
        let (partition, value) = rest.split_once("\"} ").unwrap();
        series.insert(
            (topic.to_string(), partition.parse().unwrap()),
            value.parse().unwrap(),
        );
    }
    series
}

/// Each view's lag per partition, `-` (no commit) kept apart from numbers.
fn lags(view: &Offsets) -> BTreeMap<(String, i32), i64> {
    view.iter().map(|(k, v)| (k.clone(), v.2)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_lag_and_the_lag_metric_agree_with_kafkas_consumer_groups_command() {
    // Jobs take 8 s and start together, so the committed offsets stand still for most of each
    // 8 s wave: long enough for Kafka's tool (a JVM) to read the same offsets as baton.
    let mock = mock("[default]\nlatency = { fixed_ms = 8000 }\n").await;
    let port = free_port();
    let cfg = one_model_config(24, "")
        .replace(
            "metrics_listen = \"off\"",
            &format!("metrics_listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "group_id = \"{GROUP}\"",
            "group_id = \"{GROUP}\"\nconsumer = { \"statistics.interval.ms\" = \"500\" }",
        );
    let world = World::new("lag", &mock.base_url(), &cfg).await;
    let input = world.input();
    let group = world.config.kafka.group_id.clone();
    produce(
        &input,
        (0..120)
            .map(|i| {
                (
                    Some(format!("k{i}").into_bytes()),
                    job(&format!("j{i}"), "hi"),
                )
            })
            .collect(),
    )
    .await;
    // Two retry records due in an hour: held, never committed, so that partition's lag counts
    // from the log start.
    let retry_topic = world.config.steps[0].retry_topics[0].clone();
    let producer: FutureProducer = baton::kafka::plain_config(&bootstrap()).create().unwrap();
    let due = (baton::util::unix_ms() + 3_600_000).to_string();
    for i in 0..2 {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "baton-retry-due",
                value: Some(due.as_str()),
            })
            .insert(Header {
                key: "baton-retry-tier",
                value: Some("0"),
            })
            .insert(Header {
                key: "baton-retry-count",
                value: Some("1"),
            });
        let payload = job(&format!("r{i}"), "later");
        let record = FutureRecord::<(), _>::to(&retry_topic)
            .partition(0)
            .payload(&payload)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let topics = vec![input.clone(), retry_topic.clone()];
    let _first = world.worker();

    // While the backlog drains: a moment when baton's reading, the metric and Kafka's agree.
    let started = Instant::now();
    let mut agreed_while_draining = false;
    while started.elapsed() < Duration::from_secs(48) && !agreed_while_draining {
        let before = baton_view(&baton_lag(&world.config_path, "0"), &topics);
        let kafka = kafka_view(&group, &topics);
        let after = baton_view(&baton_lag(&world.config_path, "0"), &topics);
        let total: i64 = before.values().filter(|v| v.0.is_some()).map(|v| v.2).sum();
        let committed_somewhere = before.values().any(|v| v.0.is_some_and(|c| c > 0));
        if before != after || !committed_somewhere || total == 0 {
            continue; // offsets moved during the reading, or not yet / no longer draining
        }
        assert_eq!(
            kafka.len(),
            before.len(),
            "kafka {kafka:?}\nbaton {before:?}"
        );
        for (tp, (committed, end, lag)) in &kafka {
            let (b_committed, b_end, b_lag) = before[tp];
            assert_eq!((committed, end), (&b_committed, &b_end), "{tp:?}");
            if committed.is_some() {
                assert_eq!(*lag, b_lag, "{tp:?}");
            } else {
                // Never committed: Kafka prints no lag; baton counts from the log start.
                assert_eq!(b_lag, *end, "{tp:?}");
            }
        }
        // The metric (statistics every 500 ms) shows the same lag once it has caught up.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let again = baton_view(&baton_lag(&world.config_path, "0"), &topics);
        let m = metric(port).await;
        if again == before {
            let want = lags(&before);
            let got: BTreeMap<_, _> = m
                .into_iter()
                .filter(|(k, _)| want.contains_key(k))
                .collect();
            assert_eq!(got, want, "metric against baton lag while draining");
            agreed_while_draining = true;
        }
    }
    assert!(agreed_while_draining, "no quiet moment in 48 s of draining");

    // After the backlog: everything committed but the held retry records.
    let done = Instant::now();
    loop {
        let v = baton_view(&baton_lag(&world.config_path, "0"), &topics);
        if v.iter().all(|(tp, x)| tp.0 != input || x.2 == 0) {
            break;
        }
        assert!(
            done.elapsed() < Duration::from_secs(60),
            "the backlog never drained: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = baton_lag(&world.config_path, "2s");
    let view = baton_view(&report, &topics);
    let kafka = kafka_view(&group, &topics);
    for (tp, (committed, end, _)) in &kafka {
        assert_eq!((committed, end), (&view[tp].0, &view[tp].1), "{tp:?}");
    }
    assert_eq!(report["total_lag"], 2, "{report}");
    assert_eq!(report["retry_tiers"][&retry_topic], 2, "{report}");
    assert_eq!(report["dead_letters"][&world.dlq()], 0, "{report}");
    assert_eq!(report["rate_per_s"], 0.0, "{report}");
    assert_eq!(
        report["eta_s"],
        Value::Null,
        "held records do not drain: {report}"
    );

    // A second worker takes half the partitions: each series is exported by its owner only,
    // and the two add up to Kafka's count.
    let port2 = free_port();
    let text = std::fs::read_to_string(&world.config_path)
        .unwrap()
        .replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{port2}"));
    let path2 = world.dir.path().join("second.toml");
    std::fs::write(&path2, text).unwrap();
    let _second = Worker::start(&path2, world.dir.path());
    let want = lags(&view);
    let split = Instant::now();
    loop {
        let (a, b) = (metric(port).await, metric(port2).await);
        let a: BTreeMap<_, _> = a
            .into_iter()
            .filter(|(k, _)| want.contains_key(k))
            .collect();
        let b: BTreeMap<_, _> = b
            .into_iter()
            .filter(|(k, _)| want.contains_key(k))
            .collect();
        let overlap = a.keys().filter(|k| b.contains_key(*k)).count();
        let mut union = a.clone();
        union.extend(b.clone());
        if !a.is_empty() && !b.is_empty() && overlap == 0 && union == want {
            break;
        }
        assert!(
            split.elapsed() < Duration::from_secs(60),
            "series after the split:\nfirst  {a:?}\nsecond {b:?}\nwanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
