//! The worker against a real Kafka broker: throughput beyond partitions with per-key order,
//! crash recovery (SIGKILL), clean shutdown (SIGTERM), bad input, and group membership changes.
//! Each test has its own topics, group and mock-llm, so they run in parallel.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rdkafka::Message;
use serde_json::Value;

const UNIFORM_50_500: &str = "[default]\nlatency = { uniform_ms = [50, 500] }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_jobs_over_six_partitions_each_once_in_key_order() {
    let mock = mock(UNIFORM_50_500).await;
    let world = World::new("flow", &mock.base_url(), &one_model_config(1024, "")).await;
    // 200 keys x 10 jobs: per-key order is checkable, and keys spread over all 6 partitions.
    let mut records = Vec::new();
    for seq in 0..10 {
        for k in 0..200 {
            let id = format!("job-{k}-{seq}");
            let key = format!("key-{k}");
            let body = serde_json::json!({ "id": id, "input": format!("ticket {k} step {seq}"), "metadata": { "key": key, "seq": seq } });
            records.push((Some(key.into_bytes()), serde_json::to_vec(&body).unwrap()));
        }
    }
    produce(&world.input(), records).await;
    let _worker = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    let all = reader.read_until(Duration::from_secs(120), |r| {
        distinct(&result_ids(r)) == 2000
    });
    reader.drain_for(Duration::from_secs(2));
    let ids = result_ids(&reader.records);
    assert!(all, "only {} of 2000 results", distinct(&ids));
    assert_eq!(ids.len(), 2000, "each job exactly once");

    // Per-key order: in the results topic (keyed like the input), each key's seq increases.
    let mut last: HashMap<String, i64> = HashMap::new();
    for m in &reader.records {
        let v = value(m);
        let key = v["metadata"]["key"].as_str().unwrap().to_string();
        let seq = v["metadata"]["seq"].as_i64().unwrap();
        let prev = last.insert(key.clone(), seq).unwrap_or(-1);
        assert!(seq > prev, "key {key}: seq {seq} finished after {prev}");
        assert_eq!(std::str::from_utf8(m.key().unwrap()).unwrap(), key);
    }
    // Far more concurrency than partitions: mock-llm saw many overlapping calls.
    let log = mock.request_log();
    assert_eq!(log.len(), 2000);
    let span_ms =
        log.iter().map(|r| r.at_ms).max().unwrap() - log.iter().map(|r| r.at_ms).min().unwrap();
    assert!(
        span_ms < 2000 * 275 / 6,
        "calls overlapped beyond 6 at a time (span {span_ms} ms)"
    );
}

/// Sum of the group's committed offsets on the input topic.
fn committed_total(world: &World) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = baton::kafka::plain_config(&bootstrap())
        .set("group.id", &world.config.kafka.group_id)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition(&world.input(), p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
        .sum()
}

/// Produces `n` jobs with unique keys.
async fn produce_unique(world: &World, n: usize) {
    let records = (0..n)
        .map(|i| {
            (
                Some(format!("k{i}").into_bytes()),
                job(&format!("j{i}"), "hello"),
            )
        })
        .collect();
    produce(&world.input(), records).await;
}

/// 1,500 jobs (100-300 ms each) and one worker (100 in flight) that has published at least 300
/// results: the starting point of the crash and shutdown tests.
async fn a_worker_midway(name: &str) -> (baton::mock_llm::MockLlm, World, Worker, Reader) {
    let mock = mock("[default]\nlatency = { uniform_ms = [100, 300] }\n").await;
    let world = World::new(name, &mock.base_url(), &one_model_config(100, "")).await;
    produce_unique(&world, 1500).await;
    let first = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(
        reader.read_until(Duration::from_secs(60), |r| r.len() >= 300),
        "first worker made progress"
    );
    (mock, world, first, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_loses_nothing() {
    let (_mock, world, mut first, mut reader) = a_worker_midway("kill").await;
    first.kill9();
    let _second = world.worker();
    let all = reader.read_until(Duration::from_secs(120), |r| {
        distinct(&result_ids(r)) == 1500
    });
    let ids = result_ids(&reader.records);
    assert!(
        all,
        "every job has a result after the crash: {} of 1500",
        distinct(&ids)
    );
    assert!(ids.iter().all(|id| id.starts_with('j')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_worker_drains_and_duplicates_nothing() {
    let (_mock, world, mut first, mut reader) = a_worker_midway("term").await;
    let code = first.terminate(Duration::from_secs(30));
    assert_eq!(
        code,
        Some(0),
        "clean exit on SIGTERM; log:\n{}",
        first.log_text()
    );
    assert!(first.log_text().contains("shutting down: draining"));
    // What the first worker left behind: its committed offsets against its published results.
    reader.drain_for(Duration::from_secs(2));
    let published_by_first = distinct(&result_ids(&reader.records));
    let records_by_first = reader.records.len();
    let committed_by_first = committed_total(&world);
    let second = world.worker();
    let all = reader.read_until(Duration::from_secs(120), |r| {
        distinct(&result_ids(r)) == 1500
    });
    reader.drain_for(Duration::from_secs(3));
    let ids = result_ids(&reader.records);
    assert!(all, "every job has a result: {} of 1500", distinct(&ids));
    let dupes: Vec<_> = counts(&ids).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(
        dupes.is_empty(),
        "no duplicates after a graceful shutdown: {} duplicated, e.g. {:?}; the first worker published {published_by_first} jobs in {records_by_first} records and committed {committed_by_first}\nfirst:\n{}\nsecond:\n{}",
        dupes.len(),
        &dupes[..dupes.len().min(5)],
        first.log_text(),
        second.log_text()
    );
}

/// Builds the i-th bad record of one kind.
type MakeRecord = Box<dyn Fn(usize) -> Vec<u8>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_dead_lettered_with_their_class_and_good_ones_answered() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let world = World::new(
        "bad",
        &mock.base_url(),
        &one_model_config(256, "max_payload_bytes = 2048"),
    )
    .await;
    let big = format!(r#"{{"id":"big","input":"{}"}}"#, "x".repeat(4000));
    let kinds: Vec<(&str, MakeRecord)> = vec![
        (
            "invalid_utf8",
            Box::new(|i| {
                [
                    format!(r#"{{"id":"u{i}","input":"caf"#).as_bytes(),
                    &[0xC3, 0x28],
                    b"\"}",
                ]
                .concat()
            }),
        ),
        (
            "invalid_json",
            Box::new(|i| format!(r#"{{"id":"b{i}","input":"#).into_bytes()),
        ),
        (
            "invalid_envelope",
            Box::new(|_| br#"{"input":"no id here"}"#.to_vec()),
        ),
        (
            "invalid_envelope",
            Box::new(|i| format!(r#"{{"id":{i},"input":"numeric id"}}"#).into_bytes()),
        ),
        (
            "invalid_envelope",
            Box::new(|i| {
                format!(r#"{{"id":"t{i}","input":"x","params":{{"temperature":"hot"}}}}"#)
                    .into_bytes()
            }),
        ),
        (
            "payload_too_large",
            Box::new(move |_| big.clone().into_bytes()),
        ),
        (
            "unknown_pipeline",
            Box::new(|i| format!(r#"{{"id":"p{i}","pipeline":"nope","input":"x"}}"#).into_bytes()),
        ),
    ];
    let mut records = Vec::new();
    let mut expected: HashMap<&str, usize> = HashMap::new();
    let mut originals: HashMap<String, Vec<u8>> = HashMap::new();
    for i in 0..100 {
        for (class, make) in &kinds {
            let key = format!("bad-{class}-{i}-{}", records.len());
            let value = make(i);
            originals.insert(key.clone(), value.clone());
            records.push((Some(key.into_bytes()), value));
            *expected.entry(class).or_default() += 1;
            records.push((
                Some(format!("good-{}", records.len()).into_bytes()),
                job(&format!("good-{}", records.len()), "hi"),
            ));
        }
    }
    let good = records.len() - originals.len();
    let bad = originals.len();
    produce(&world.input(), records).await;
    let _worker = world.worker();

    let mut results = Reader::new(&[world.results()]);
    assert!(
        results.read_until(Duration::from_secs(90), |r| r.len() >= good),
        "good jobs answered"
    );
    let mut dlq = Reader::new(&[world.dlq()]);
    assert!(
        dlq.read_until(Duration::from_secs(90), |r| r.len() >= bad),
        "bad records dead-lettered: {}",
        dlq.records.len()
    );

    let mut got: HashMap<String, usize> = HashMap::new();
    for m in &dlq.records {
        let key = std::str::from_utf8(m.key().unwrap()).unwrap().to_string();
        let class = header(m, "baton-error-class").unwrap().to_string();
        assert!(
            key.starts_with(&format!("bad-{class}-")),
            "{key} classified as {class}"
        );
        assert_eq!(
            m.payload().unwrap(),
            originals[&key].as_slice(),
            "original bytes kept for {key}"
        );
        assert_eq!(
            header(m, "baton-original-topic").as_deref(),
            Some(world.input().as_str())
        );
        assert!(header(m, "baton-original-offset")
            .unwrap()
            .parse::<i64>()
            .is_ok());
        assert!(header(m, "baton-original-partition")
            .unwrap()
            .parse::<i32>()
            .is_ok());
        assert!(!header(m, "baton-error").unwrap().is_empty());
        for h in [
            "baton-job-id",
            "baton-step",
            "baton-attempt",
            "traceparent",
            "baton-failed-at",
            "baton-last-model",
        ] {
            assert!(header(m, h).is_some(), "{h} on {key}");
        }
        *got.entry(class).or_default() += 1;
    }
    for (class, n) in expected {
        assert_eq!(got.get(class), Some(&n), "{class}");
    }
    let ids = result_ids(&results.records);
    assert!(ids.iter().all(|id| id.starts_with("good-")));
    assert_eq!(distinct(&ids), good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_a_third_joining_mid_run_lose_nothing() {
    let mock = mock("[default]\nlatency = { uniform_ms = [100, 300] }\n").await;
    let world = World::new(
        "group",
        &mock.base_url(),
        &one_model_config(50, "rebalance_timeout_ms = 10000"),
    )
    .await;
    produce_unique(&world, 2000).await;
    let a = world.worker();
    let b = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(
        reader.read_until(Duration::from_secs(60), |r| r.len() >= 400),
        "two workers made progress"
    );
    let c = world.worker();
    let all = reader.read_until(Duration::from_secs(120), |r| {
        distinct(&result_ids(r)) == 2000
    });
    let logs = [&a, &b, &c]
        .iter()
        .map(|w| w.log_text())
        .collect::<Vec<_>>()
        .join("\n-----\n");
    assert!(
        all,
        "nothing lost across the rebalance: {} of 2000\n{logs}",
        distinct(&result_ids(&reader.records))
    );
    assert!(
        c.log_text().contains("partitions assigned"),
        "the third worker got partitions:\n{}",
        c.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_carry_the_envelope_and_headers() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let world = World::new("env", &mock.base_url(), &one_model_config(16, "")).await;
    let job = serde_json::json!({
        "id": "e1", "tenant": "acme", "task": "simple", "input": "hello there",
        "metadata": { "trace": [1, 2, { "x": null }] }
    });
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let producer =
        baton::kafka::tools::tool_producer(&baton::kafka::plain_config(&bootstrap())).unwrap();
    let payload = serde_json::to_vec(&job).unwrap();
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: "traceparent",
        value: Some(tp),
    });
    let input = world.input();
    let rec = rdkafka::producer::FutureRecord::to(&input)
        .key("e1")
        .payload(&payload)
        .headers(headers);
    producer.send(rec, Duration::from_secs(10)).await.unwrap();
    let _worker = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(reader.read_until(Duration::from_secs(60), |r| !r.is_empty()));
    let m = &reader.records[0];
    let v = value(m);
    assert_eq!(v["id"], "e1");
    assert_eq!(v["pipeline"], "p");
    assert_eq!(v["step"], "s");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["model"], "m");
    assert_eq!(v["provider"], "openai");
    assert_eq!(v["attempts"], 1);
    assert_eq!(
        v["metadata"], job["metadata"],
        "metadata passes through untouched"
    );
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(!v["output"]["text"].as_str().unwrap().is_empty());
    assert!(v["route"]["candidates"]
        .as_array()
        .unwrap()
        .contains(&Value::from("m")));
    assert!(v["started_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(header(m, "baton-job-id").as_deref(), Some("e1"));
    assert_eq!(header(m, "baton-step").as_deref(), Some("p.s"));
    assert_eq!(header(m, "baton-attempt").as_deref(), Some("1"));
    let child = header(m, "traceparent").unwrap();
    assert!(
        child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "trace continued: {child}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_paused_at_capacity_keep_consuming_after_rebalances() {
    // Small in-flight limits and a deep topic keep every worker's backlog full, so partitions
    // are paused whenever a rebalance revokes and re-assigns them; slow calls make members
    // rejoin at different times, so a worker runs its loop between revoke and assign.
    let mock = mock("[default]\nlatency = { uniform_ms = [20, 1500] }\n").await;
    let world = World::new("paused", &mock.base_url(), &one_model_config(20, "")).await;
    produce_unique(&world, 2000).await;
    let a = world.worker();
    let b = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(
        reader.read_until(Duration::from_secs(60), |r| r.len() >= 100),
        "workers made progress"
    );
    let c = world.worker();
    assert!(
        reader.read_until(Duration::from_secs(60), |r| r.len() >= 400),
        "progress after the join"
    );
    drop(c);
    let all = reader.read_until(Duration::from_secs(120), |r| {
        distinct(&result_ids(r)) == 2000
    });
    let logs = format!("{}\n-----\n{}", a.log_text(), b.log_text());
    assert!(
        all,
        "{} of 2000 after the rebalances\n{logs}",
        distinct(&result_ids(&reader.records))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_that_is_not_utf8_does_not_wedge_the_partition() {
    use rdkafka::bindings as rd;
    use rdkafka::message::{BorrowedHeaders, Header, OwnedHeaders};
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let world = World::new("hdr", &mock.base_url(), &one_model_config(16, "")).await;
    // rdkafka's Header API only takes &str keys; a foreign producer can send any bytes.
    let headers = OwnedHeaders::new().insert(Header {
        key: "app",
        value: Some("1"),
    });
    let native = headers.as_borrowed() as *const BorrowedHeaders as *mut rd::rd_kafka_headers_t;
    let bad_key = [0xffu8, 0xfe];
    // SAFETY: `native` is the live header list owned by `headers`; key and value are copied.
    unsafe { rd::rd_kafka_header_add(native, bad_key.as_ptr().cast(), 2, b"v".as_ptr().cast(), 1) };
    let producer =
        baton::kafka::tools::tool_producer(&baton::kafka::plain_config(&bootstrap())).unwrap();
    let input = world.input();
    for i in 0..3 {
        let payload = job(&format!("h{i}"), "hello");
        let rec = rdkafka::producer::FutureRecord::to(&input)
            .key("same-key")
            .payload(&payload)
            .headers(headers.clone());
        producer.send(rec, Duration::from_secs(10)).await.unwrap();
    }
    let _worker = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(
        reader.read_until(Duration::from_secs(60), |r| distinct(&result_ids(r)) == 3),
        "all three jobs of the key answered: {:?}",
        result_ids(&reader.records)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_broker_rejects_becomes_a_dead_letter() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let dir = tempfile::tempdir().unwrap();
    let decl = dir.path().join("topics.toml");
    // The results topic accepts only small records; the job's metadata makes its result bigger.
    let text = baton::config::topics::BUILTIN.replace(
        "[results]\npartitions = 6\nreplication_factor = 1\nconfigs = { \"retention.ms\" = \"604800000\" }",
        "[results]\npartitions = 6\nreplication_factor = 1\nconfigs = { \"max.message.bytes\" = \"2000\" }",
    );
    assert_ne!(text, baton::config::topics::BUILTIN);
    std::fs::write(&decl, text).unwrap();
    let cfg = one_model_config(16, "").replace(
        "[topics]\n",
        &format!("[topics]\ndeclarations = {:?}\n", decl.to_str().unwrap()),
    );
    let world = World::new("reject", &mock.base_url(), &cfg).await;
    // Random hex: the producer compresses batches, so the blob must not compress away.
    let blob: String = (0..8000)
        .map(|_| format!("{:x}", rand::random::<u8>() % 16))
        .collect();
    let big = serde_json::json!({ "id": "big", "input": "hi", "metadata": { "blob": blob } });
    let small = job("small", "hi");
    produce(
        &world.input(),
        vec![
            (Some(b"k".to_vec()), serde_json::to_vec(&big).unwrap()),
            (Some(b"k".to_vec()), small),
        ],
    )
    .await;
    let worker = world.worker();
    let mut dlq = Reader::new(&[world.dlq()]);
    assert!(
        dlq.read_until(Duration::from_secs(60), |r| !r.is_empty()),
        "the oversized output was dead-lettered; results: {:?}; worker log:\n{}",
        {
            let mut r = Reader::new(&[world.results()]);
            r.drain_for(Duration::from_secs(2));
            result_ids(&r.records)
        },
        worker.log_text()
    );
    let m = &dlq.records[0];
    assert_eq!(
        header(m, "baton-error-class").as_deref(),
        Some("output_rejected")
    );
    assert_eq!(header(m, "baton-job-id").as_deref(), Some("big"));
    let mut results = Reader::new(&[world.results()]);
    assert!(
        results.read_until(Duration::from_secs(60), |r| result_ids(r) == ["small"]),
        "the next job of the key went on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_retry_fall_back_or_dead_letter_by_class() {
    // "down" answers 503 always, "strict" rejects with 400, "ok" answers.
    let mock = mock(
        r#"
[default]
latency = { fixed_ms = 5 }
[models.down]
errors = [{ status = 503, rate = 1.0 }]
[models.strict]
errors = [{ status = 400, rate = 1.0 }]
"#,
    )
    .await;
    let cfg = r#"
[kafka]
bootstrap_servers = "{BOOTSTRAP}"
group_id = "{GROUP}"
[topics]
prefix = "{PREFIX}"
[worker]
metrics_listen = "off"
provider_attempts = 3
[models.down]
base_url = "{MOCK}"
[models.ok]
base_url = "{MOCK}"
[models.strict]
base_url = "{MOCK}"
[[pipelines.p.steps]]
name = "s"
model = "down"
task_models = { strict = "strict" }
fallbacks = ["ok"]
"#;
    let world = World::new("faults", &mock.base_url(), cfg).await;
    let strict = serde_json::json!({"id": "bad-request", "task": "strict", "input": "x"});
    produce(
        &world.input(),
        vec![
            (Some(b"a".to_vec()), job("falls-back", "hello")),
            (Some(b"b".to_vec()), serde_json::to_vec(&strict).unwrap()),
        ],
    )
    .await;
    let _worker = world.worker();
    let mut results = Reader::new(&[world.results()]);
    assert!(results.read_until(Duration::from_secs(60), |r| !r.is_empty()));
    let v = value(&results.records[0]);
    assert_eq!(v["id"], "falls-back");
    assert_eq!(v["model"], "ok", "served by the fallback");
    assert_eq!(
        v["attempts"], 4,
        "three tries on the 503 model, then one on the fallback"
    );
    let mut dlq = Reader::new(&[world.dlq()]);
    assert!(dlq.read_until(Duration::from_secs(60), |r| !r.is_empty()));
    let m = &dlq.records[0];
    assert_eq!(header(m, "baton-job-id").as_deref(), Some("bad-request"));
    assert_eq!(
        header(m, "baton-error-class").as_deref(),
        Some("bad_request")
    );
    assert_eq!(header(m, "baton-last-model").as_deref(), Some("strict"));
    assert_eq!(
        header(m, "baton-attempt").as_deref(),
        Some("1"),
        "no retry on a plain 400"
    );
    let log = mock.request_log();
    assert_eq!(log.iter().filter(|r| r.model == "down").count(), 3);
    assert_eq!(log.iter().filter(|r| r.model == "strict").count(), 1);
}
