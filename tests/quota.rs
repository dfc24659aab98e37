//! A model's rate limit holds for the whole consumer group, against a real broker: each worker
//! enforces the share of the quota that matches the partitions it owns, so mock-llm never sees
//! more than the quota in any minute, whether one worker runs or three.

mod common;

use std::time::{Duration, Instant};

use common::*;

const QUOTA: usize = 600;

/// The most requests mock-llm got in any `window` (a sliding window over the log).
fn busiest(mut at_ms: Vec<u64>, window: u64) -> usize {
    at_ms.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..at_ms.len() {
        while at_ms[end] - at_ms[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Requests mock-llm got between `from` and `to` (unix ms).
fn calls_between(log: &[u64], from: u64, to: u64) -> usize {
    log.iter().filter(|&&t| t >= from && t < to).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_one_quota_and_one_worker_uses_all_of_it() {
    let mock = mock("[default]\nlatency = { fixed_ms = 20 }\n").await;
    let cfg = one_model_config(64, "rate_limit_wait_ms = 120000").replace(
        "timeout_ms = 10000",
        &format!("timeout_ms = 10000\nrate_limit = {{ requests_per_minute = {QUOTA} }}"),
    );
    let world = World::new("quota", &mock.base_url(), &cfg).await;
    // More than the quota can serve in the test's time: the workers are always waiting on it.
    produce(
        &world.input(),
        (0..1500)
            .map(|i| {
                let id = format!("q{i}");
                (Some(id.clone().into_bytes()), job(&id, "hi"))
            })
            .collect(),
    )
    .await;
    let times = |mock: &baton::mock_llm::MockLlm| -> Vec<u64> {
        mock.request_log().iter().map(|r| r.at_ms).collect()
    };

    // One worker owns every partition: it uses the whole quota (10 a second).
    let _first = world.worker();
    let started = Instant::now();
    while mock.request_log().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "no calls");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alone_from = baton::util::unix_ms() + 2_000;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let alone = calls_between(&times(&mock), alone_from, alone_from + 10_000);

    // Two more join; for over a minute the three share the quota.
    let _second = world.worker();
    let _third = world.worker();
    let shared_from = baton::util::unix_ms() + 10_000;
    tokio::time::sleep(Duration::from_secs(75)).await;
    let shared = calls_between(&times(&mock), shared_from, shared_from + 60_000);
    let worst = busiest(times(&mock), 60_000);
    eprintln!(
        "alone: {alone} calls in 10 s; three workers: {shared} calls in 60 s; busiest minute {worst} (quota {QUOTA}/min)"
    );
    assert!(worst <= QUOTA, "{worst} calls in one minute, quota {QUOTA}");
    assert!(
        alone >= 90,
        "one worker starved of its quota: {alone} calls in 10 s"
    );
    assert!(
        shared >= QUOTA * 9 / 10,
        "three workers used {shared} of {QUOTA} in a minute"
    );
}
