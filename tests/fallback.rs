//! Failure handling against a real broker and mock-llm's fault modes.

mod common;

use std::time::Duration;

use baton::mock_llm::ModelBehavior;
use common::*;
use rdkafka::Message;

const MOCK: &str = r#"
seed = 5
[default]
latency = { fixed_ms = 20 }
"#;

/// Models `primary` (with `primary_extra` lines) and `backup` on the mock, and one pipeline
/// `p` whose step `s` tries the primary, then the backup.
fn primary_with_backup(primary_extra: &str) -> String {
    format!(
        r#"
[models.primary]
base_url = "{{MOCK}}"
{primary_extra}
[models.backup]
base_url = "{{MOCK}}"

[[pipelines.p.steps]]
name = "s"
model = "primary"
fallbacks = ["backup"]
"#
    )
}

fn config() -> String {
    config_head("provider_attempts = 2")
        + r#"
[circuit_breaker]
consecutive_failures = 3
cooldown_ms = 4000

"# + &primary_with_backup("")
}

fn behavior(json: &str) -> ModelBehavior {
    ModelBehavior::from_json_slice(json.as_bytes(), "test").unwrap()
}

fn wave(prefix: &str, n: usize) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            (Some(id.clone().into_bytes()), job(&id, "hello"))
        })
        .collect()
}

/// Reads results until `ids` (by prefix) are all in; returns how many each model served.
fn served(reader: &mut Reader, prefix: &str, n: usize) -> (usize, usize) {
    let done = |r: &[rdkafka::message::OwnedMessage]| {
        distinct(
            &result_ids(r)
                .into_iter()
                .filter(|id| id.starts_with(&format!("{prefix}-")))
                .collect::<Vec<_>>(),
        ) >= n
    };
    assert!(
        reader.read_until(Duration::from_secs(60), done),
        "wave {prefix} incomplete"
    );
    let mut by = (0, 0);
    for m in &reader.records {
        let v = value(m);
        if v["id"].as_str().unwrap().starts_with(&format!("{prefix}-")) {
            match v["model"].as_str().unwrap() {
                "primary" => by.0 += 1,
                _ => by.1 += 1,
            }
        }
    }
    by
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_opens_the_circuit_and_a_probe_brings_the_model_back() {
    let mock = mock(MOCK).await;
    let port = free_port();
    let config = config().replace(
        "metrics_listen = \"off\"",
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    );
    let world = World::new("circuit", &mock.base_url(), &config).await;
    let _worker = world.worker();
    let mut results = Reader::new(&[world.results()]);
    let primary_calls = |mock: &baton::mock_llm::MockLlm| {
        mock.request_log()
            .iter()
            .filter(|r| r.model == "primary")
            .count()
    };

    // The primary goes down. A first small wave finds out: each job tries it, fails over.
    mock.set_model(
        "primary",
        behavior(r#"{"errors":[{"status":503,"rate":1.0}]}"#),
    )
    .unwrap();
    produce(&world.input(), wave("a", 5)).await;
    let (p, b) = served(&mut results, "a", 5);
    assert_eq!((p, b), (0, 5), "the backup served every job");
    let after_a = primary_calls(&mock);
    assert!(after_a >= 3, "the outage was seen: {after_a} calls");

    // The circuit is open: the next wave does not hammer the primary at all.
    produce(&world.input(), wave("b", 200)).await;
    let (p, b) = served(&mut results, "b", 200);
    assert_eq!((p, b), (0, 200));
    let during_b = primary_calls(&mock) - after_a;
    assert!(
        during_b <= 1,
        "{during_b} calls reached the primary while its circuit was open"
    );
    // Every answer from the backup is one move away from the primary, counted with its cause
    // (seen: moves past an open circuit were not counted, 1 against 17 answers).
    let moves = fallbacks(port).await;
    let total: u64 = moves.values().sum();
    assert_eq!(total, 205, "moves by cause: {moves:?}");
    assert!(
        moves.get("circuit_open").is_some_and(|&n| n >= 195),
        "{moves:?}"
    );

    // The primary recovers. After the cooldown one job probes it and closes the circuit...
    mock.set_model("primary", behavior("{}")).unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    produce(&world.input(), wave("c", 1)).await;
    let (p, _) = served(&mut results, "c", 1);
    assert_eq!(p, 1, "the probe succeeded on the primary");
    // ... and the primary serves again.
    produce(&world.input(), wave("d", 100)).await;
    let (p, b) = served(&mut results, "d", 100);
    assert_eq!((p, b), (100, 0));
}

/// A port free to listen on.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `baton_fallbacks_total` away from `primary`, by cause, from the worker's `/metrics`.
async fn fallbacks(port: u16) -> std::collections::BTreeMap<String, u64> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut by = std::collections::BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| l.starts_with("baton_fallbacks_total{"))
    {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        if !labels.contains("model=\"primary\"") {
            continue;
        }
        let class = labels.split("error_class=\"").nth(1).unwrap();
        let class = class.split('"').next().unwrap().to_string();
        *by.entry(class).or_default() += value.parse::<f64>().unwrap() as u64;
    }
    by
}

fn limited() -> String {
    config_head("rate_limit_wait_ms = 300")
        + &primary_with_backup("rate_limit = { requests_per_minute = 600, concurrency = 8 }")
}

/// Nobody hammers a provider past its quota: calls beyond a model's requests per minute wait a
/// bounded time, then go to the next candidate. mock-llm never answers 429 here; the limit is
/// baton's own.
#[tokio::test(flavor = "multi_thread")]
async fn a_models_quota_holds_and_overflow_goes_to_the_next_candidate() {
    let mock = mock(MOCK).await;
    let world = World::new("quota", &mock.base_url(), &limited()).await;
    let _worker = world.worker();
    let mut results = Reader::new(&[world.results()]);
    let started = std::time::Instant::now();
    produce(&world.input(), wave("q", 150)).await;
    let (primary, backup) = served(&mut results, "q", 150);
    let elapsed = started.elapsed().as_secs_f64();
    let calls = mock
        .request_log()
        .iter()
        .filter(|r| r.model == "primary")
        .count();
    // Under 10 a second (a worker starts with no burst: see the quota tests).
    let allowed = 1 + (elapsed * 10.0).ceil() as usize;
    assert!(
        calls <= allowed,
        "{calls} calls to primary in {elapsed:.1}s (quota {allowed})"
    );
    assert_eq!(calls, primary, "every primary call answered a job");
    assert!(
        primary as f64 >= elapsed * 10.0 / 3.0,
        "the quota was used: {primary} in {elapsed:.1}s"
    );
    assert_eq!(primary + backup, 150);
    assert!(
        backup >= 150 - allowed,
        "the overflow went to the backup: {backup}"
    );
}

fn retrying() -> String {
    config_head("provider_attempts = 1")
        + r#"
[retry]
tiers = ["2s", "3s"]

[circuit_breaker]
consecutive_failures = 100000
min_calls = 100000

[models.only]
base_url = "{MOCK}"

[[pipelines.p.steps]]
name = "s"
model = "only"
"#
}

/// The only model is down: jobs wait in the retry tiers (their partitions paused, no slot
/// held), none is processed before it is due, and all complete once the model is back.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_wait_in_retry_tiers_and_complete_after_recovery() {
    let mock = mock(MOCK).await;
    mock.set_model(
        "only",
        behavior(r#"{"errors":[{"status":503,"rate":1.0}]}"#),
    )
    .unwrap();
    let world = World::new("retry", &mock.base_url(), &retrying()).await;
    let step = &world.config.steps[0];
    let tier0 = step.retry_topics[0].clone();
    let worker = world.worker();
    let n = 40;
    produce(&world.input(), wave("r", n)).await;

    // Every job fails its first round and lands in the 2 s tier, due 2 s later.
    let mut retries = Reader::new(std::slice::from_ref(&tier0));
    assert!(
        retries.read_until(Duration::from_secs(30), |r| r.len() >= n),
        "{} retry records; mock saw {} calls; worker log:\n{}",
        retries.records.len(),
        mock.request_log().len(),
        worker.log_text()
    );
    let mut dues: Vec<u64> = retries
        .records
        .iter()
        .map(|m| header(m, "baton-retry-due").unwrap().parse().unwrap())
        .collect();
    for m in &retries.records {
        assert_eq!(header(m, "baton-retry-tier").as_deref(), Some("0"));
        assert_eq!(header(m, "baton-retry-count").as_deref(), Some("1"));
        let history: serde_json::Value =
            serde_json::from_str(&header(m, "baton-retry-history").unwrap()).unwrap();
        assert_eq!(history[0]["error_class"], "provider_error");
        assert_eq!(history[0]["model"], "only");
    }

    // The model comes back before the jobs are due.
    mock.set_model("only", behavior("{}")).unwrap();
    let mut results = Reader::new(&[world.results(), world.dlq()]);
    assert!(results.read_until(Duration::from_secs(60), |r| distinct(&result_ids(r)) >= n));
    assert!(
        results.records.iter().all(|m| m.topic() == world.results()),
        "nothing dead-lettered"
    );

    // None was processed before its due time: the k-th successful call comes no earlier than
    // the k-th earliest due time.
    let mut calls: Vec<u64> = mock
        .request_log()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.at_ms)
        .collect();
    calls.sort_unstable();
    dues.sort_unstable();
    assert_eq!(calls.len(), n, "one successful call per job");
    for (k, (call, due)) in calls.iter().zip(&dues).enumerate() {
        assert!(call >= due, "call {k} at {call} before due {due}");
    }

    // The result tells the whole story (seen: `latency_ms` was the last round's alone): the
    // job's total time covers its wait in the 2 s tier; the round and the call are its parts.
    for m in results
        .records
        .iter()
        .filter(|m| m.topic() == world.results())
    {
        let v = value(m);
        let (total, round, call) = (
            v["total_ms"].as_u64().unwrap(),
            v["latency_ms"].as_u64().unwrap(),
            v["provider_latency_ms"].as_u64().unwrap(),
        );
        assert!(total >= 2000, "total {total} ms covers the tier's 2 s: {v}");
        assert!(
            total > round && round >= call,
            "total {total}, round {round}, call {call}"
        );
        assert!(v["queue_ms"].is_u64(), "{v}");
    }
}

/// Past the last tier the job is dead-lettered with its whole history.
#[tokio::test(flavor = "multi_thread")]
async fn after_the_last_tier_the_dead_letter_carries_the_history() {
    let mock = mock(MOCK).await;
    mock.set_model(
        "only",
        behavior(r#"{"errors":[{"status":503,"rate":1.0}]}"#),
    )
    .unwrap();
    let world = World::new("retry-dlq", &mock.base_url(), &retrying()).await;
    let worker = world.worker();
    produce(&world.input(), wave("x", 3)).await;
    let mut dlq = Reader::new(&[world.dlq()]);
    assert!(
        dlq.read_until(Duration::from_secs(60), |r| r.len() >= 3),
        "{} dead letters; mock saw {} calls; worker log:\n{}",
        dlq.records.len(),
        mock.request_log().len(),
        worker.log_text()
    );
    for m in &dlq.records {
        assert_eq!(
            header(m, "baton-error-class").as_deref(),
            Some("provider_error")
        );
        assert!(header(m, "baton-error")
            .unwrap()
            .contains("after 2 retry tiers"));
        // One call per round: the input, then each tier.
        assert_eq!(header(m, "baton-attempt").as_deref(), Some("3"));
        let history: serde_json::Value =
            serde_json::from_str(&header(m, "baton-retry-history").unwrap()).unwrap();
        let topics: Vec<&str> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["topic"].as_str().unwrap())
            .collect();
        assert_eq!(topics.len(), 3, "{history}");
        assert!(topics[1].ends_with(".retry.2s") && topics[2].ends_with(".retry.3s"));
        assert!(header(m, "baton-original-topic")
            .unwrap()
            .ends_with(".retry.3s"));
    }
    assert_eq!(mock.request_log().len(), 9);
}

/// One pipeline per error class, each with its own mock models, all served by one worker.
const CLASSES_MOCK: &str = r#"
seed = 9
[default]
latency = { fixed_ms = 5 }
[models.e5xx]
errors = [{ status = 503, rate = 1.0 }]
[models.e429]
rate_limited = { rate = 1.0, retry_after_s = 1 }
[models.e429long]
rate_limited = { rate = 1.0, retry_after_s = 20 }
[models.e400]
errors = [{ status = 400, rate = 1.0 }]
[models.efilter]
content_filter = ["forbidden"]
[models.ectx]
context_window = 20
[models.esmall]
context_window = 20
[models.e401]
errors = [{ status = 401, rate = 1.0 }]
[models.eslow]
latency = { fixed_ms = 3000 }
[models.edown]
errors = [{ status = 503, rate = 1.0 }]
"#;

fn classes() -> String {
    config_head("provider_attempts = 2")
        + r#"
[retry]
tiers = ["2s"]

[models.e5xx]
base_url = "{MOCK}"
[models.e429]
base_url = "{MOCK}"
[models.e429long]
base_url = "{MOCK}"
[models.e400]
base_url = "{MOCK}"
[models.efilter]
base_url = "{MOCK}"
[models.ectx]
base_url = "{MOCK}"
context_window = 8000
[models.esmall]
base_url = "{MOCK}"
context_window = 8000
[models.big]
base_url = "{MOCK}"
context_window = 100000
[models.e401]
base_url = "{MOCK}"
[models.eslow]
base_url = "{MOCK}"
timeout_ms = 300
[models.ok]
base_url = "{MOCK}"
[models.edown]
base_url = "{MOCK}"
sensitivities = ["public", "internal", "confidential", "restricted"]

[models.other]
base_url = "{MOCK2}"

[[pipelines.sfilter2.steps]]
name = "s"
model = "efilter"
fallbacks = ["ok", "other"]
content_filter = "other_provider"
[[pipelines.sreview.steps]]
name = "s"
model = "efilter"
fallbacks = ["ok"]
review = ["content_filter"]
[[pipelines.srestricted.steps]]
name = "s"
model = "edown"
fallbacks = ["ok"]
[[pipelines.s5xx.steps]]
name = "s"
model = "e5xx"
fallbacks = ["ok"]
[[pipelines.s429.steps]]
name = "s"
model = "e429"
fallbacks = ["ok"]
[[pipelines.s429long.steps]]
name = "s"
model = "e429long"
[[pipelines.s400.steps]]
name = "s"
model = "e400"
fallbacks = ["ok"]
[[pipelines.sfilter.steps]]
name = "s"
model = "efilter"
fallbacks = ["ok"]
[[pipelines.sctx.steps]]
name = "s"
model = "ectx"
fallbacks = ["esmall", "big"]
[[pipelines.s401.steps]]
name = "s"
model = "e401"
fallbacks = ["ok"]
[[pipelines.sslow.steps]]
name = "s"
model = "eslow"
fallbacks = ["ok"]
"#
}

/// Each error class gets its own treatment, seen in mock-llm's request log: how many calls
/// reached each model, how far apart, and how the job ended.
#[tokio::test(flavor = "multi_thread")]
async fn each_error_class_is_retried_failed_over_or_dead_lettered_as_it_should() {
    let mock = mock(CLASSES_MOCK).await;
    // A second provider endpoint, for the content filter that tries another provider.
    let other = common::mock("").await;
    let config = classes().replace("{MOCK2}", &other.base_url());
    let world = World::new("classes", &mock.base_url(), &config).await;
    let topic = |p: &str| format!("{}{p}.s", world.prefix);
    let _worker = world.worker();
    let text = "please answer this forbidden question";
    for p in [
        "s5xx", "s429", "s429long", "s400", "sfilter", "sslow", "sreview", "sfilter2",
    ] {
        produce(&topic(p), vec![(Some(p.as_bytes().to_vec()), job(p, text))]).await;
    }
    let restricted = serde_json::to_vec(&serde_json::json!({
        "id": "srestricted", "input": "patient record", "policy": {"sensitivity": "restricted"}
    }))
    .unwrap();
    produce(
        &topic("srestricted"),
        vec![(Some(b"srestricted".to_vec()), restricted)],
    )
    .await;
    // Long enough for the mock's 20-token windows.
    let long = "a long ticket that does not fit a tiny window ".repeat(10);
    produce(
        &topic("sctx"),
        vec![(Some(b"sctx".to_vec()), job("sctx", &long))],
    )
    .await;
    // Two jobs on the 401 model, one after the other: the second never calls it.
    produce(
        &topic("s401"),
        vec![(Some(b"k".to_vec()), job("s401-1", text))],
    )
    .await;
    produce(
        &topic("s401"),
        vec![(Some(b"k".to_vec()), job("s401-2", text))],
    )
    .await;

    let mut outs: Vec<String> = ["s5xx", "s429", "s400", "sfilter", "sctx", "s401", "sslow"]
        .iter()
        .map(|p| format!("{}.dlq", topic(p)))
        .collect();
    outs.push(world.results());
    outs.push(format!("{}.retry.2s", topic("s429long")));
    outs.push(format!("{}.retry.2s", topic("srestricted")));
    outs.push(world.config.topics.review.clone());
    let mut r = Reader::new(&outs);
    assert!(
        r.read_until(Duration::from_secs(60), |r| r.len() >= 12),
        "{} outputs",
        r.records.len()
    );
    let by_id = |id: &str| {
        r.records
            .iter()
            .find(|m| header(m, "baton-job-id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no output for {id}"))
    };
    let served_by = |id: &str| {
        let m = by_id(id);
        assert_eq!(m.topic(), world.results(), "{id} was answered");
        value(m)["model"].as_str().unwrap().to_string()
    };
    let dead = |id: &str| {
        let m = by_id(id);
        assert!(
            m.topic().ends_with(".dlq"),
            "{id} was dead-lettered, got {}",
            m.topic()
        );
        header(m, "baton-error-class").unwrap()
    };
    let log = mock.request_log();
    let calls = |model: &str| -> Vec<u64> {
        log.iter()
            .filter(|x| x.model == model)
            .map(|x| x.at_ms)
            .collect()
    };

    // 5xx: retried on the model, then the fallback.
    assert_eq!(served_by("s5xx"), "ok");
    assert_eq!(calls("e5xx").len(), 2);
    // 429 with Retry-After: 1 s: the retry waits at least that long.
    assert_eq!(served_by("s429"), "ok");
    let c = calls("e429");
    assert_eq!(c.len(), 2);
    assert!(c[1] - c[0] >= 1000, "retry after {} ms", c[1] - c[0]);
    // Retry-After beyond the in-process cap: no second call, the retry tier waits instead,
    // due no sooner than the provider asked (20 s, though the tier is 2 s).
    let m = by_id("s429long");
    assert!(m.topic().ends_with(".retry.2s"));
    let due: u64 = header(m, "baton-retry-due").unwrap().parse().unwrap();
    let c = calls("e429long");
    assert_eq!(c.len(), 1);
    assert!(due >= c[0] + 19_000, "due {} ms after the call", due - c[0]);
    // A plain 400 and a content filter: dead-lettered at once, no retry, no fallback.
    assert_eq!(dead("s400"), "bad_request");
    assert_eq!(calls("e400").len(), 1);
    assert_eq!(dead("sfilter"), "content_filter");
    assert_eq!(
        calls("efilter").len(),
        3,
        "one call each for sfilter, sreview and sfilter2"
    );
    // Context overflow: only a model with a larger window is tried next.
    assert_eq!(served_by("sctx"), "big");
    assert_eq!(calls("ectx").len(), 1);
    assert_eq!(calls("esmall").len(), 0, "a window no larger is skipped");
    // Bad credentials: the model leaves rotation; the next job does not call it.
    assert_eq!(served_by("s401-1"), "ok");
    assert_eq!(served_by("s401-2"), "ok");
    assert_eq!(calls("e401").len(), 1);
    // A route can let another provider try what one provider's filter refused (the fallback
    // on the same endpoint is skipped).
    assert_eq!(served_by("sfilter2"), "other");
    assert_eq!(other.request_log().len(), 1);
    // A route can send a class to a person instead of the dead-letter topic.
    let m = by_id("sreview");
    assert_eq!(m.topic(), world.config.topics.review);
    assert_eq!(
        header(m, "baton-error-class").as_deref(),
        Some("content_filter")
    );
    // A restricted job whose only allowed model is down waits in a retry tier; the cloud
    // fallback its policy forbids is never called (its only calls are other jobs').
    let m = by_id("srestricted");
    assert!(m.topic().ends_with(".retry.2s"), "{}", m.topic());
    // Two attempts per round (the retry round may have run by now too).
    assert!(
        matches!(calls("edown").len(), 2 | 4),
        "{}",
        calls("edown").len()
    );
    assert_eq!(
        calls("ok").len(),
        5,
        "ok answered s5xx, s429, s401-1, s401-2 and sslow, nothing else"
    );
    // A timeout: the fallback gets the next attempt; the silent model is not called again.
    assert_eq!(served_by("sslow"), "ok");
    assert_eq!(calls("eslow").len(), 1);
}

const ROUNDS_MOCK: &str = r#"
seed = 4
[default]
latency = { fixed_ms = 5 }
[models.nano]
answer = { classify = { otherwise = "simple" } }
[models.m]
errors = [{ status = 503, rate = 1.0 }]
"#;

fn rounds() -> String {
    config_head("provider_attempts = 1")
        + r#"
[retry]
tiers = ["1s"]

[models.nano]
base_url = "{MOCK}"
price_input_per_mtok = 100.0
price_output_per_mtok = 100.0
[models.m]
base_url = "{MOCK}"
price_input_per_mtok = 10.0
price_output_per_mtok = 10.0

[routes.r]
models = ["m"]
[routes.r.classifier]
model = "nano"

[[pipelines.p.steps]]
name = "s"
route = "r"
"#
}

/// Every round bills its classification: the result's cost counts the failed round too.
#[tokio::test(flavor = "multi_thread")]
async fn the_cost_of_every_round_counts() {
    let mock = mock(ROUNDS_MOCK).await;
    let world = World::new("rounds", &mock.base_url(), &rounds()).await;
    let _worker = world.worker();
    produce(&world.input(), wave("c", 1)).await;
    let tier = world.config.steps[0].retry_topics[0].clone();
    let mut retry = Reader::new(std::slice::from_ref(&tier));
    assert!(retry.read_until(Duration::from_secs(30), |r| !r.is_empty()));
    let first_round: f64 = header(&retry.records[0], "baton-step-cost-usd")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first_round > 0.0,
        "the first round's classification was billed"
    );
    mock.set_model("m", behavior("{}")).unwrap();
    let mut results = Reader::new(&[world.results()]);
    assert!(results.read_until(Duration::from_secs(30), |r| !r.is_empty()));
    let v = value(&results.records[0]);
    let classify = v["route"]["classifier"]["cost_usd"].as_f64().unwrap();
    let usage = &v["usage"];
    let answer =
        (usage["input_tokens"].as_f64().unwrap() + usage["output_tokens"].as_f64().unwrap()) * 10.0
            / 1e6;
    let cost = v["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (first_round + classify + answer)).abs() < 1e-8,
        "cost {cost} != first round {first_round} + classification {classify} + answer {answer}"
    );
    assert!(
        (first_round - classify).abs() < 1e-8,
        "the same classification each round"
    );
}

fn outage() -> String {
    config_head("provider_attempts = 2\nmax_in_flight = 64")
        + r#"
[circuit_breaker]
consecutive_failures = 3
cooldown_ms = 3000

"# + &primary_with_backup("")
}

/// The primary is down for 30 s while 1,000 jobs stream in: every job is answered (by the
/// fallback during the outage), the primary is only probed meanwhile, and it serves again once
/// it is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_30_second_outage_during_1000_jobs() {
    let mock = mock(MOCK).await;
    let world = World::new("outage", &mock.base_url(), &outage()).await;
    let _worker = world.worker();
    let now_ms = || baton::util::unix_ms();
    let (seconds, per_second) = (45u64, 23usize);
    let t0 = now_ms();
    let (mut down_at, mut up_at) = (0, 0);
    let mut produced_at = std::collections::HashMap::new();
    let mut n = 0;
    for sec in 0..seconds {
        if sec == 5 {
            mock.set_model(
                "primary",
                behavior(r#"{"errors":[{"status":503,"rate":1.0}]}"#),
            )
            .unwrap();
            down_at = now_ms();
        }
        if sec == 35 {
            mock.set_model("primary", behavior("{}")).unwrap();
            up_at = now_ms();
        }
        let batch: Vec<_> = (0..per_second)
            .map(|_| {
                let id = format!("o-{n:04}");
                n += 1;
                produced_at.insert(id.clone(), now_ms());
                (Some(id.clone().into_bytes()), job(&id, "hello"))
            })
            .collect();
        produce(&world.input(), batch).await;
        let next = t0 + (sec + 1) * 1000;
        tokio::time::sleep(Duration::from_millis(next.saturating_sub(now_ms()))).await;
    }
    assert!(n >= 1000);
    let mut out = Reader::new(&[world.results(), world.dlq()]);
    assert!(out.read_until(Duration::from_secs(60), |r| distinct(&result_ids(r)) >= n));
    assert!(
        out.records.iter().all(|m| m.topic() == world.results()),
        "nothing dead-lettered"
    );

    let (mut during, mut during_backup, mut after, mut after_primary) = (0, 0, 0, 0);
    for m in &out.records {
        let v = value(m);
        let at = produced_at[v["id"].as_str().unwrap()];
        let model = v["model"].as_str().unwrap();
        if at > down_at + 1000 && at < up_at {
            during += 1;
            during_backup += usize::from(model == "backup");
        } else if at > up_at + 5000 {
            after += 1;
            after_primary += usize::from(model == "primary");
        }
    }
    assert_eq!(
        during, during_backup,
        "every job during the outage answered by the fallback"
    );
    assert!(
        after > 50 && after_primary * 100 >= after * 95,
        "{after_primary} of {after} after recovery on the primary"
    );

    // The primary was probed, not hammered: a few failed calls per cooldown.
    let failed: Vec<u64> = mock
        .request_log()
        .iter()
        .filter(|r| r.model == "primary" && r.status == 503)
        .map(|r| r.at_ms)
        .collect();
    assert!(
        failed.len() <= 40,
        "{} failed calls reached the primary",
        failed.len()
    );
    let late_probes = failed.iter().filter(|&&t| t > down_at + 10_000).count();
    println!(
        "outage: {n} jobs; {during} during the outage, all on backup; {after_primary}/{after} after recovery on primary; {} failed calls reached the primary ({late_probes} probes after its first 10 s)",
        failed.len()
    );
    assert!(
        late_probes >= 3,
        "the primary kept being probed: {late_probes}"
    );
}

/// A provider whose error body echoes the request's `Authorization` header (seen: the key
/// copied into `baton-error` on every dead letter and printed by `dlq inspect`). The key is
/// in no dead letter, no log line and no `dlq inspect` output; the echo itself is there,
/// redacted.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_echoed_by_a_failing_provider_reaches_no_dead_letter_log_or_tool() {
    const KEY: &str = "sk-test-echoed-7f3a9c1e5b2d4f6081a3c5e7";
    let mock = mock(MOCK).await;
    let echoing = format!(
        r#"{{"errors":[{{"status":500,"rate":1.0}}],"api_key":"{KEY}","echo_auth_in_errors":true}}"#
    );
    mock.set_model("only", behavior(&echoing)).unwrap();
    let config = config_head("provider_attempts = 2")
        + r#"
[retry]
tiers = []

[circuit_breaker]
consecutive_failures = 100000
min_calls = 100000

[models.only]
base_url = "{MOCK}"
api_key_env = "BATON_TEST_ECHOED_KEY"

[[pipelines.p.steps]]
name = "s"
model = "only"
"#;
    let world = World::new("secret", &mock.base_url(), &config).await;
    let worker = Worker::start_with_env(
        &world.config_path,
        world.dir.path(),
        &[("BATON_TEST_ECHOED_KEY", KEY)],
    );
    let n = 10;
    produce(&world.input(), wave("k", n)).await;
    let mut dead = Reader::new(&[world.dlq()]);
    assert!(
        dead.read_until(Duration::from_secs(60), |r| r.len() >= n),
        "{} dead letters; worker log:\n{}",
        dead.records.len(),
        worker.log_text()
    );
    let calls = mock.request_log();
    assert!(
        calls.iter().all(|c| c.status == 500),
        "the key was accepted, the echo sent"
    );
    for m in &dead.records {
        let error = header(m, "baton-error").unwrap_or_default();
        assert!(error.contains("[REDACTED]"), "the echo, redacted: {error}");
        let record = format!(
            "{:?} {:?}",
            m.headers(),
            m.payload().map(String::from_utf8_lossy)
        );
        assert!(!record.contains(KEY), "the key in a dead letter: {record}");
    }
    let log = worker.log_text();
    assert!(!log.contains(KEY), "the key in the worker's log:\n{log}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["dlq", "inspect", "--records", "--topic", &world.dlq()])
        .args(["--bootstrap", &bootstrap(), "--idle-ms", "1000"])
        .env_remove("BATON_BOOTSTRAP")
        .output()
        .expect("run baton dlq inspect");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("{n} dead letter(s)")), "{text}");
    assert!(!text.contains(KEY), "the key in dlq inspect:\n{text}");
}
