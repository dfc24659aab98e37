//! How the worker shares its slots, against a real broker: every partition of a backlog gets its
//! share from the start, and a due retry record is not stuck behind the input backlog.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Publishes `values` to one partition of `topic`, with `headers` on each.
async fn produce_to(topic: &str, partition: i32, values: Vec<Vec<u8>>, headers: &[(&str, &str)]) {
    let producer: FutureProducer = baton::kafka::plain_config(&bootstrap())
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let sends = values.iter().map(|v| {
        let mut h = OwnedHeaders::new();
        for (k, val) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*val),
            });
        }
        let record = FutureRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(v)
            .headers(h);
        producer.send(record, Duration::from_secs(30))
    });
    for r in futures::future::join_all(sends).await {
        r.expect("record acknowledged");
    }
}

/// The Kafka timestamp (ms) of each result, by job id.
fn result_times(reader: &Reader) -> HashMap<String, i64> {
    reader
        .records
        .iter()
        .map(|m| {
            let id = value(m)["id"].as_str().unwrap().to_string();
            (id, m.timestamp().to_millis().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_on_six_partitions_is_drained_side_by_side_and_due_retries_go_first() {
    const PER_PARTITION: usize = 800;
    let mock = mock("[default]\nlatency = { fixed_ms = 100 }\n").await;
    let world = World::new(
        "fair",
        &mock.base_url(),
        &one_model_config(64, "").replace("[models.m]", "[retry]\ntiers = [\"1s\"]\n\n[models.m]"),
    )
    .await;
    for p in 0..6 {
        let values = (0..PER_PARTITION)
            .map(|i| job(&format!("p{p}-{i}"), &format!("ticket {i}")))
            .collect();
        produce_to(&world.input(), p, values, &[]).await;
    }
    let mut reader = Reader::new(&[world.results()]);
    let _worker = world.worker();
    // Once the backlog is being worked on, a retry record due one second later arrives.
    assert!(
        reader.read_until(Duration::from_secs(60), |r| r.len() >= 200),
        "the worker started"
    );
    let retry_topic = format!("{}.retry.1s", world.input());
    let due = baton::util::unix_ms() + 1000;
    produce_to(
        &retry_topic,
        0,
        vec![job("retry-0", "a retried ticket")],
        &[
            ("baton-retry-due", &due.to_string()),
            ("baton-retry-tier", "0"),
            ("baton-retry-count", "1"),
        ],
    )
    .await;
    let total = 6 * PER_PARTITION + 1;
    assert!(
        reader.read_until(Duration::from_secs(120), |r| r.len() >= total),
        "all results"
    );
    let times = result_times(&reader);
    // Each partition's first result comes within a couple of seconds of the first result.
    let first: Vec<i64> = (0..6)
        .map(|p| {
            (0..PER_PARTITION)
                .filter_map(|i| times.get(&format!("p{p}-{i}")))
                .copied()
                .min()
                .unwrap()
        })
        .collect();
    let start = *first.iter().min().unwrap();
    let spread: Vec<i64> = first.iter().map(|t| t - start).collect();
    assert!(
        spread.iter().all(|&d| d <= 2000),
        "first result per partition, ms after the first: {spread:?}"
    );
    // While every partition has work, each gets a fair share: by the time half the backlog is
    // answered, every partition has answered between half and twice the mean.
    let mut sorted: Vec<i64> = times.values().copied().collect();
    sorted.sort_unstable();
    let half_time = sorted[sorted.len() / 2];
    let per: Vec<usize> = (0..6)
        .map(|p| {
            (0..PER_PARTITION)
                .filter(|i| times[&format!("p{p}-{i}")] <= half_time)
                .count()
        })
        .collect();
    let mean = per.iter().sum::<usize>() as f64 / 6.0;
    assert!(
        per.iter()
            .all(|&n| n as f64 >= mean * 0.5 && n as f64 <= mean * 2.0),
        "results per partition at half time: {per:?}"
    );
    // The retry record was answered within about a second of its due time, not after the
    // backlog (which takes several seconds more).
    let retry_at = times["retry-0"];
    let last = *sorted.last().unwrap();
    eprintln!(
        "first result per partition (ms after the first): {spread:?}; results per partition at half time: {per:?}; retry answered {} ms after due, backlog done {} ms after due",
        retry_at - due as i64,
        last - due as i64
    );
    assert!(
        retry_at - due as i64 <= 1500,
        "retry answered {} ms after due (backlog ended {} ms after due)",
        retry_at - due as i64,
        last - due as i64
    );
}
