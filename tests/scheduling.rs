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

/// `per_partition` jobs on each of the 6 partitions of `topic`.
async fn backlog(topic: &str, per_partition: usize) {
    for p in 0..6 {
        let values = (0..per_partition)
            .map(|i| job(&format!("p{p}-{i}"), &format!("ticket {i}")))
            .collect();
        produce_to(topic, p, values, &[]).await;
    }
}

/// The partitions of `topic` a worker owns, from its log's "partitions assigned" and
/// "partitions revoked" lines (`which=topic[0,3]`).
fn owned(log: &str, topic: &str) -> Vec<i32> {
    let mut owned = std::collections::BTreeSet::new();
    let marker = format!("{topic}[");
    for line in log.lines() {
        let assigned = line.contains("partitions assigned");
        if !assigned && !line.contains("partitions revoked") {
            continue;
        }
        let Some(at) = line.find(&marker) else {
            continue;
        };
        let rest = &line[at + marker.len()..];
        let list = &rest[..rest.find(']').unwrap()];
        for p in list.split(',').map(|p| p.parse::<i32>().unwrap()) {
            if assigned {
                owned.insert(p);
            } else {
                owned.remove(&p);
            }
        }
    }
    owned.into_iter().collect()
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
    backlog(&world.input(), PER_PARTITION).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_member_does_not_stall_the_survivors_partitions_and_redoes_little() {
    const PER_PARTITION: usize = 250;
    const IN_FLIGHT: usize = 64;
    let mock = mock("[default]\nlatency = { fixed_ms = 1000 }\n").await;
    let config = one_model_config(IN_FLIGHT, "");
    let world = World::new("kill", &mock.base_url(), &config).await;
    backlog(&world.input(), PER_PARTITION).await;
    let mut reader = Reader::new(&[world.results()]);
    let mut doomed = world.worker();
    let survivor = world.worker();
    // Both members own input partitions and have worked a while with them.
    let input = world.input();
    let settled = std::time::Instant::now();
    loop {
        let a = owned(&doomed.log_text(), &input);
        let b = owned(&survivor.log_text(), &input);
        if !a.is_empty() && !b.is_empty() && a.len() + b.len() == 6 {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(60),
            "the two workers share the input partitions:\n{}\n---\n{}",
            doomed.log_text(),
            survivor.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.drain_for(Duration::from_secs(3));
    let survivors = owned(&survivor.log_text(), &input);
    let log_before_kill = survivor.log_text().len();
    let killed_at = baton::util::unix_ms() as i64;
    doomed.kill9();
    let total = 6 * PER_PARTITION;
    assert!(
        reader.read_until(Duration::from_secs(120), |r| {
            distinct(&result_ids(r)) >= total
        }),
        "every job answered after the kill"
    );
    reader.drain_for(Duration::from_secs(2));
    // Results by partition, in time order.
    let mut by_partition: Vec<Vec<i64>> = vec![Vec::new(); 6];
    for m in &reader.records {
        let id = value(m)["id"].as_str().unwrap().to_string();
        let p: usize = id[1..id.find('-').unwrap()].parse().unwrap();
        by_partition[p].push(m.timestamp().to_millis().unwrap());
    }
    for times in &mut by_partition {
        times.sort_unstable();
    }
    // Through the group's rebalance (once the dead member's session expires) the survivor's
    // own partitions never stop for long.
    let mut worst = 0;
    for &p in &survivors {
        let p = p as usize;
        let times: Vec<i64> = by_partition[p]
            .iter()
            .copied()
            .filter(|&t| t >= killed_at)
            .collect();
        let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        worst = worst.max(gap);
    }
    // Redone: the calls made again for jobs the dead member had started or finished without
    // its offset committed.
    let redone = mock.request_log().len() - total;
    let ids = result_ids(&reader.records);
    let duplicates = ids.len() - distinct(&ids);
    eprintln!(
        "survivor's partitions {survivors:?}: longest gap {worst} ms after the kill; {redone} jobs redone, {duplicates} answered twice (in flight {IN_FLIGHT})"
    );
    // Jobs take 1 s, so results come in waves about a second apart; a couple of seconds on a
    // loaded machine is the bound (the eager protocol's stall is caught by the revoke check
    // below).
    assert!(
        worst <= 3000,
        "a survivor's partition stalled for {worst} ms"
    );
    // Incremental rebalancing: the survivor gives up none of its partitions to take the dead
    // member's.
    let full = survivor.log_text();
    // Logs to a file (not a terminal) carry no colour codes.
    assert!(
        !full.contains('\x1b'),
        "ANSI escapes in a log file:\n{full}"
    );
    let log = full[log_before_kill..].to_string();
    assert!(
        !log.contains("partitions revoked"),
        "the survivor revoked partitions:\n{log}"
    );
    assert!(
        redone <= IN_FLIGHT * 2,
        "{redone} jobs redone after a crash with {IN_FLIGHT} in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_budget_bounds_the_calls_open_at_once_and_every_job_still_ends() {
    // A 1 MiB budget leaves 768 KiB for running and waiting jobs; a 40 KiB job is charged
    // 8 x (40 KiB + 256 B), so two fit and a third waits, whatever the 256 slots would allow.
    const JOBS: usize = 24;
    const LATENCY_MS: u64 = 300;
    let mock = mock(&format!(
        "[default]\nlatency = {{ fixed_ms = {LATENCY_MS} }}\n"
    ))
    .await;
    let config = one_model_config(256, "max_in_flight_bytes = 1048576").replace(
        "timeout_ms = 10000",
        "timeout_ms = 10000\ncontext_window = 128000",
    );
    let world = World::new("budget", &mock.base_url(), &config).await;
    let text = "lorem ipsum ".repeat(40 * 1024 / 12);
    let values = (0..JOBS)
        .map(|i| (None, job(&format!("big-{i}"), &text)))
        .collect();
    produce(&world.input(), values).await;
    let mut reader = Reader::new(&[world.results(), world.dlq()]);
    let worker = world.worker();
    assert!(
        reader.read_until(Duration::from_secs(120), |r| r.len() >= JOBS),
        "every job ended: {} of {JOBS}\n{}",
        reader.records.len(),
        worker.log_text()
    );
    let ids = result_ids(&reader.records);
    assert_eq!(distinct(&ids), JOBS, "each job answered: {ids:?}");
    // The calls the provider had open at once: at each arrival, those that arrived earlier and
    // were still running.
    let calls = mock.request_log();
    assert_eq!(calls.len(), JOBS, "one call per job");
    let open_at = |at: u64| {
        calls
            .iter()
            .filter(|c| c.at_ms <= at && at < c.at_ms + c.latency_ms)
            .count()
    };
    let most = calls.iter().map(|c| open_at(c.at_ms)).max().unwrap();
    eprintln!("most calls open at once: {most}");
    assert!(most <= 2, "{most} calls open at once; the budget fits two");
    assert_eq!(most, 2, "two jobs fit the budget side by side");
}
