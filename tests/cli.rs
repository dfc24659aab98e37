//! The `baton` command line as a user meets it: config errors, `check`, `topics apply` and
//! drift, `produce`/`consume`, `/metrics`, multi-step pipelines, policy, and `demo`.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn baton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env_remove("BATON_BOOTSTRAP")
        .stdin(Stdio::null())
        .output()
        .expect("run baton")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[models.m]\nbase_url = \"http://127.0.0.1:1/v1\"\n\n[[pipelines.p.steps]]\nname = \"s\"\nmodel = \"gpt5\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    for args in [
        vec!["run", "--config", p, "--bootstrap", "127.0.0.1:1"],
        vec!["check", "--config", p],
    ] {
        let o = baton(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("pipelines.p.steps[0].model (line 6): unknown model \"gpt5\""),
            "{}",
            text(&o)
        );
    }
    std::fs::write(&path, "[worker]\nmax_in_flight = -1\n").unwrap();
    let o = baton(&["check", "--config", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("worker.max_in_flight (line 2)"),
        "{}",
        text(&o)
    );
}

/// Whatever file a command cannot read, the message says which one.
#[test]
fn an_unreadable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let o = baton(&["check", "--config", missing]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("cannot read config file {missing}: ")),
        "{}",
        text(&o)
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/support.toml");
    let job = dir.path().join("job.json");
    let job = job.to_str().unwrap();
    for (args, want) in [
        (
            vec!["check", "--config", example, "--sample-job", job],
            format!("--sample-job: cannot read {job}: "),
        ),
        (
            vec!["route", "--config", example, job],
            format!("cannot read job file {job}: "),
        ),
    ] {
        let o = baton(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(&want), "want {want:?} in {}", text(&o));
    }
}

#[test]
fn run_refuses_to_start_without_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let cfg = one_model_config(8, "")
        .replace("{PREFIX}", &format!("{}.", unique("notopics")))
        .replace("{MOCK}", "http://127.0.0.1:1/v1")
        .replace("{BOOTSTRAP}", &bootstrap())
        .replace("{GROUP}", "g");
    std::fs::write(&path, cfg).unwrap();
    let o = baton(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("missing topics:") && text(&o).contains(".p.s.dlq"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("baton topics apply"), "{}", text(&o));
}

#[test]
fn check_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/support.toml");
    let o = baton(&["check", "--config", example]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("step support.answer: consumes support.answer -> baton.results"));
}

#[test]
fn route_explain_traces_the_decision() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/support.toml");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, v: serde_json::Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        p.to_str().unwrap().to_string()
    };
    let legal = write(
        "legal.json",
        serde_json::json!({"id": "t1", "input": "Does the MSA cap our liability?",
            "policy": {"sensitivity": "confidential"}}),
    );
    let o = baton(&["route", "--explain", "--config", example, &legal]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "job t1 on support.answer",
        "class: complex",
        "legal-terms",
        "MATCHED (keyword \"MSA\")",
        "variant: ",
        "models (class complex, strategy priority):",
        "premium          kept",
        "order: premium -> on-prem",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    // Restricted data: the cloud models are dropped with the reason, on-prem serves.
    let restricted = write(
        "restricted.json",
        serde_json::json!({"id": "t2", "input": "Patient record 12: summarize.",
            "policy": {"sensitivity": "restricted"}}),
    );
    let o = baton(&["route", "--explain", "--config", example, &restricted]);
    let out = text(&o);
    assert!(out.contains("sensitivity restricted not allowed"), "{out}");
    assert!(out.contains("order: on-prem\n"), "{out}");

    // An impossible budget: every model dropped by the ceiling, and said so.
    let broke = write(
        "broke.json",
        serde_json::json!({"id": "t3", "input": "Hello", "policy": {"max_cost_usd": 0.0000001}}),
    );
    let o = baton(&["route", "--explain", "--config", example, &broke]);
    let out = text(&o);
    assert!(out.contains("exceeds max_cost_usd"), "{out}");
    assert!(out.contains("order: none: policy_unsatisfiable"), "{out}");

    // The classifier's answer can be assumed; --json prints the result's `route` object.
    let plain = write(
        "plain.json",
        serde_json::json!({"id": "t4", "input": "My SSO broke."}),
    );
    let o = baton(&[
        "route", "--json", "--class", "complex", "--config", example, &plain,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["class"], "complex");
    assert_eq!(v["rule"], "classifier");
    assert_eq!(v["classifier"]["model"], "triage");
    assert_eq!(v["candidates"][0], "premium");

    let o = baton(&["route", "--config", example, "--step", "nope.x", &plain]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown step \"nope.x\""));
}

/// The broker script's cluster ids go to the storage tool as `--cluster-id ID`: one starting with
/// '-' is taken for an option and the broker never starts (CI failed that way once in 64 runs).
/// 400 draws from the script's own generator: a generator that allowed a leading '-' would pass
/// this with a chance of (63/64)^400, under 0.2%.
#[test]
fn the_broker_script_never_makes_a_cluster_id_the_storage_tool_reads_as_an_option() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kafka/local.sh");
    let o = Command::new("bash")
        .args([
            "-c",
            "source \"$1\"; for _ in $(seq 400); do random_cluster_id; done",
            "bash",
            script,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    assert!(o.status.success(), "{}", text(&o));
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), 400, "{}", text(&o));
    for id in &ids {
        assert_eq!(id.len(), 22, "16 bytes in unpadded base64url: {id}");
        assert!(!id.starts_with('-'), "{id} would be read as an option");
    }
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "demo", "run", "mock-llm", "produce", "consume", "topics", "check", "route", "dlq", "bench",
    ] {
        let o = baton(&[sub, "--help"]);
        assert!(o.status.success(), "{sub} --help: {}", text(&o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_apply_creates_then_reports_ok_and_drift() {
    let mock = mock("").await;
    let prefix = format!("{}.", unique("apply"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let cfg = one_model_config(8, "")
        .replace("{PREFIX}", &prefix)
        .replace("{MOCK}", &mock.base_url())
        .replace("{BOOTSTRAP}", &bootstrap())
        .replace("{GROUP}", "g");
    std::fs::write(&path, cfg).unwrap();
    let p = path.to_str().unwrap();

    let o = baton(&["topics", "apply", "--config", p, "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{prefix}p.s")) && text(&o).contains("missing"),
        "{}",
        text(&o)
    );

    let o = baton(&["topics", "apply", "--config", p]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for t in [
        "p.s",
        "p.s.retry.30s",
        "p.s.retry.5m",
        "p.s.retry.30m",
        "p.s.dlq",
        "baton.results",
        "baton.calls",
        "baton.review",
        "baton.memory",
        "baton.status",
    ] {
        assert!(out.contains(&format!("{prefix}{t} ")), "{t} in:\n{out}");
    }
    assert_eq!(out.matches("created").count(), 10, "{out}");

    let o = baton(&["topics", "apply", "--config", p]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).matches(" ok").count(), 10, "{}", text(&o));

    // A declarations file that disagrees with the live topics: drift, exit 3.
    let decl = baton::config::topics::BUILTIN.replacen("partitions = 6", "partitions = 12", 1);
    std::fs::write(dir.path().join("topics.toml"), decl).unwrap();
    let cfg = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[topics]\n", "[topics]\ndeclarations = \"topics.toml\"\n");
    std::fs::write(&path, cfg).unwrap();
    let o = baton(&["topics", "apply", "--config", p]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("drift: partitions 6 (declared 12)"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_round_trips_with_headers() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let world = World::new("tools", &mock.base_url(), &one_model_config(8, "")).await;
    let file = world.dir.path().join("jobs.jsonl");
    let lines: Vec<String> = (0..25)
        .map(|i| format!(r#"{{"id":"c{i}","input":"question {i}"}}"#))
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n\n").unwrap();
    let b = bootstrap();
    let o = baton(&[
        "produce",
        "--topic",
        &world.input(),
        "--bootstrap",
        &b,
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("produced 25 record(s)"), "{}", text(&o));

    let _worker = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= 25));

    let o = baton(&[
        "consume",
        "--topic",
        &world.results(),
        "--bootstrap",
        &b,
        "--count",
        "25",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 25);
    for r in &rows {
        let id = r["value"]["id"].as_str().unwrap();
        assert_eq!(r["key"], id, "key is the job id");
        assert_eq!(r["headers"]["baton-job-id"], id);
        assert!(r["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-"));
    }

    // With a config, the tool connects as the config says: `BATON_BOOTSTRAP` left in the
    // shell (here, an address nothing listens on) fills in only a missing address.
    let o = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["consume", "--config", world.config_path.to_str().unwrap()])
        .args(["--topic", &world.results(), "--count", "25"])
        .env("BATON_BOOTSTRAP", "127.0.0.1:9")
        .stdin(Stdio::null())
        .output()
        .expect("run baton");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        25,
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = one_model_config(8, "").replace(
        "metrics_listen = \"off\"",
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    );
    let world = World::new("metrics", &mock.base_url(), &cfg).await;
    produce(
        &world.input(),
        (0..20)
            .map(|i| (None, job(&format!("m{i}"), "hi")))
            .collect(),
    )
    .await;
    produce(&world.input(), vec![(None, b"not json".to_vec())]).await;
    let _worker = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= 20));
    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    // Lag comes from librdkafka statistics every 5 s.
    let mut body = String::new();
    for _ in 0..100 {
        body = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lag = format!("baton_consumer_lag{{topic=\"{}\",partition=", world.input());
        if body.contains(&lag) && body.contains("baton_dead_letters_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for want in [
        "baton_jobs_consumed_total{pipeline=\"p\",step=\"s\"} 21",
        "baton_jobs_finished_total{pipeline=\"p\",step=\"s\",outcome=\"result\"} 20",
        "baton_dead_letters_total{pipeline=\"p\",step=\"s\",error_class=\"invalid_json\"} 1",
        "baton_provider_request_duration_seconds_bucket",
        "baton_jobs_in_flight",
        "# HELP baton_cost_usd_total",
        "baton_routed_total{pipeline=\"p\",step=\"s\",model=\"m\",variant=\"none\"} 20",
    ] {
        assert!(body.contains(want), "missing {want:?} in:\n{body}");
    }
    let lag = format!("baton_consumer_lag{{topic=\"{}\",partition=", world.input());
    assert!(body.contains(&lag), "missing {lag:?} in:\n{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_step_pipeline_chains_through_its_step_topic() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let cfg = one_model_config(32, "").replace(
        "[[pipelines.p.steps]]\nname = \"s\"\nmodel = \"m\"\n",
        "[[pipelines.p.steps]]\nname = \"s\"\nmodel = \"m\"\nsystem_prompt = \"Summarize.\"\n\n[[pipelines.p.steps]]\nname = \"translate\"\nmodel = \"m\"\nsystem_prompt = \"Translate.\"\n",
    );
    let world = World::new("chain", &mock.base_url(), &cfg).await;
    produce(
        &world.input(),
        (0..10)
            .map(|i| (None, job(&format!("c{i}"), &format!("original text {i}"))))
            .collect(),
    )
    .await;
    let _worker = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= 10));
    for m in &reader.records {
        let v = value(m);
        assert_eq!(v["step"], "translate");
        assert_eq!(header(m, "baton-step").as_deref(), Some("p.translate"));
    }
    // Each job made two calls: the second step's input is the first step's answer.
    assert_eq!(mock.request_log().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_jobs_reach_only_allowed_models_or_the_dlq() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n").await;
    let cfg = r#"
[kafka]
bootstrap_servers = "{BOOTSTRAP}"
group_id = "{GROUP}"
[topics]
prefix = "{PREFIX}"
[worker]
metrics_listen = "off"
[models.cloud]
base_url = "{MOCK}"
residency = "us"
[models.local]
base_url = "{MOCK}"
residency = "on_prem"
sensitivities = ["public", "internal", "confidential", "restricted"]
[[pipelines.p.steps]]
name = "s"
model = "cloud"
task_models = { hard = "cloud" }
fallbacks = ["local"]
"#;
    let world = World::new("policy", &mock.base_url(), cfg).await;
    let mk = |id: &str, sens: &str, res: Option<&str>| {
        let mut j = serde_json::json!({"id": id, "task": "hard", "input": "x", "policy": {"sensitivity": sens}});
        if let Some(r) = res {
            j["policy"]["residency"] = r.into();
        }
        (None, serde_json::to_vec(&j).unwrap())
    };
    produce(
        &world.input(),
        vec![
            mk("r1", "restricted", None),
            mk("p1", "public", None),
            mk("eu1", "internal", Some("eu")),
        ],
    )
    .await;
    let _worker = world.worker();
    let mut reader = Reader::new(&[world.results()]);
    assert!(reader.read_until(Duration::from_secs(60), |r| r.len() >= 3));
    let by_id: std::collections::HashMap<String, Value> = reader
        .records
        .iter()
        .map(|m| (value(m)["id"].as_str().unwrap().to_string(), value(m)))
        .collect();
    assert_eq!(by_id["r1"]["model"], "local");
    assert_eq!(
        by_id["r1"]["route"]["candidates"],
        serde_json::json!(["local"])
    );
    assert_eq!(by_id["p1"]["model"], "cloud");
    assert_eq!(by_id["eu1"]["model"], "local");
    let cloud_calls = mock
        .request_log()
        .iter()
        .filter(|r| r.model == "cloud")
        .count();
    assert_eq!(
        cloud_calls, 1,
        "only the public job reached the cloud model"
    );
}

#[test]
fn the_demo_runs_with_nothing_installed_and_loses_nothing() {
    let o = baton(&["demo", "--jobs", "120"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("embedded in-process Kafka-protocol cluster"),
        "{out}"
    );
    assert!(out.contains("simulated by baton mock-llm"), "{out}");
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(last.starts_with("jobs=120 results="), "{last}");
    assert!(last.ends_with("lost=0"), "{last}");
    for model in ["cheap-fast", "premium", "on-prem"] {
        assert!(out.contains(model), "{model} in summary:\n{out}");
    }
    assert!(out.contains("dead letters by class:"), "{out}");
}

#[test]
fn the_demo_also_runs_against_a_real_broker() {
    let b = bootstrap();
    let o = baton(&["demo", "--jobs", "60", "--bootstrap", &b]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&format!("kafka:     {b}")), "{out}");
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with("jobs=60 results=") && last.ends_with("lost=0"),
        "{last}"
    );
}

/// Dead letters are counted by class, and once the cause is fixed, replayed to the step's
/// input and answered; a second replay republishes them again, with the same job ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_inspect_and_replay_end_to_end() {
    let mock = mock("[default]\nlatency = { fixed_ms = 5 }\n[models.m]\nerrors = [{ status = 400, rate = 1.0 }]\n").await;
    let world = World::new("replay", &mock.base_url(), &one_model_config(8, "")).await;
    let _worker = world.worker();
    let mut records: Vec<(Option<Vec<u8>>, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                Some(format!("d{i}").into_bytes()),
                job(&format!("d{i}"), "hello"),
            )
        })
        .collect();
    records.push((Some(b"bad".to_vec()), b"{not json".to_vec()));
    produce(&world.input(), records).await;
    let mut dlq = Reader::new(&[world.dlq()]);
    assert!(dlq.read_until(Duration::from_secs(60), |r| r.len() >= 6));

    let b = bootstrap();
    let dlq_topic = world.dlq();
    let o = baton(&[
        "dlq",
        "inspect",
        "--topic",
        &dlq_topic,
        "--bootstrap",
        &b,
        "--idle-ms",
        "1500",
        "--records",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("6 dead letter(s)"), "{out}");
    assert!(out.contains("bad_request              5"), "{out}");
    assert!(out.contains("invalid_json             1"), "{out}");
    assert!(out.contains("job d3 (bad_request)"), "{out}");
    assert!(out.contains("value:   {\"id\":\"d3\""), "{out}");

    // The model is fixed; replay only what the fix concerns.
    mock.set_model(
        "m",
        baton::mock_llm::ModelBehavior::from_json_slice(b"{}", "m").unwrap(),
    )
    .unwrap();
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "dlq",
            "replay",
            "--topic",
            &dlq_topic,
            "--bootstrap",
            &b,
            "--idle-ms",
            "1500",
            "--error-class",
            "bad_request",
        ];
        args.extend_from_slice(extra);
        baton(&args)
    };
    let o = replay(&["--dry-run"]);
    assert!(
        text(&o).contains("5 record(s) would be replayed"),
        "{}",
        text(&o)
    );
    let o = replay(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("replayed 5 record(s) to {}", world.input())),
        "{}",
        text(&o)
    );
    let mut results = Reader::new(&[world.results()]);
    assert!(results.read_until(Duration::from_secs(60), |r| distinct(&result_ids(r)) >= 5));

    // Twice: the same jobs come again, recognisable by job id and origin.
    let o = replay(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(results.read_until(Duration::from_secs(60), |r| r.len() >= 10));
    let ids = result_ids(&results.records);
    assert_eq!(distinct(&ids), 5);
    let mut input = Reader::new(&[world.input()]);
    assert!(input.read_until(Duration::from_secs(30), |r| r.len() >= 16));
    let replayed: Vec<_> = input
        .records
        .iter()
        .filter_map(|m| header(m, "baton-replayed-from"))
        .collect();
    assert_eq!(replayed.len(), 10);
    assert!(replayed
        .iter()
        .all(|r| r.starts_with(&format!("{dlq_topic}/"))));
}
