//! Integration-test harness: a real Kafka broker (started once per run by `./test.sh`, or by
//! this harness through `deploy/kafka/local.sh` when run bare), random topic names per test,
//! an in-process mock-llm per test, and `baton run` workers as child processes (so tests can
//! SIGKILL and SIGTERM them like an orchestrator would).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use baton::config::Config;
use baton::kafka::headers;
use baton::mock_llm::{MockLlm, MockLlmConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde_json::Value;

/// The broker's bootstrap address: `BATON_TEST_BOOTSTRAP`, or a broker this harness starts with
/// `deploy/kafka/local.sh start` (idempotent; stop it with `deploy/kafka/local.sh stop`).
pub fn bootstrap() -> String {
    static B: OnceLock<String> = OnceLock::new();
    B.get_or_init(|| {
        if let Ok(b) = std::env::var("BATON_TEST_BOOTSTRAP") {
            return b;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kafka/local.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("start")
            .output()
            .expect("run deploy/kafka/local.sh");
        assert!(
            out.status.success(),
            "deploy/kafka/local.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("bootstrap="))
            .expect("local.sh prints bootstrap=HOST:PORT")
            .trim()
            .to_string()
    })
    .clone()
}

/// A name no other test (or run) uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A mock-llm on a free loopback port with the given TOML behaviour.
pub async fn mock(toml: &str) -> MockLlm {
    MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockLlmConfig::from_toml_str(toml).unwrap(),
    )
    .await
    .unwrap()
}

/// One test's world: a temp dir, a topic prefix, a config file.
pub struct World {
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub config_path: PathBuf,
    pub config: Config,
}

impl World {
    /// Writes `config_toml` (with `{PREFIX}`, `{MOCK}`, `{BOOTSTRAP}`, `{GROUP}` filled in),
    /// loads it, and creates its topics on the broker.
    pub async fn new(name: &str, mock_url: &str, config_toml: &str) -> World {
        let prefix = format!("{}.", unique(name));
        let text = config_toml
            .replace("{PREFIX}", &prefix)
            .replace("{MOCK}", mock_url)
            .replace("{BOOTSTRAP}", &bootstrap())
            .replace("{GROUP}", &format!("{prefix}group"));
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("baton.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = Config::load(&config_path).unwrap();
        let plan = baton::kafka::topics::plan(&config);
        baton::kafka::admin::apply(&baton::kafka::plain_config(&bootstrap()), &plan, false)
            .await
            .unwrap();
        World {
            dir,
            prefix,
            config_path,
            config,
        }
    }

    /// The first step's input topic.
    pub fn input(&self) -> String {
        self.config.steps[0].topic.clone()
    }

    /// The first step's dead-letter topic.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.input())
    }

    /// The results topic.
    pub fn results(&self) -> String {
        self.config.topics.results.clone()
    }

    /// Starts a `baton run` worker on this world's config.
    pub fn worker(&self) -> Worker {
        Worker::start(&self.config_path, self.dir.path())
    }
}

/// A `baton run` child process; killed on drop.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

impl Worker {
    pub fn start(config: &Path, dir: &Path) -> Worker {
        Worker::start_with_env(config, dir, &[])
    }

    /// Starts a worker with extra environment variables (set on the child only: a test
    /// binary's threads must not see its environment change).
    pub fn start_with_env(config: &Path, dir: &Path, env: &[(&str, &str)]) -> Worker {
        let log = dir.join(format!("worker-{:08x}.log", rand::random::<u32>()));
        let child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("BATON_BOOTSTRAP")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn baton run");
        Worker { child, log }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM, then wait for the exit (up to `timeout`); returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes `(key, value)` records and waits for every acknowledgement.
pub async fn produce(topic: &str, records: Vec<(Option<Vec<u8>>, Vec<u8>)>) {
    let producer =
        baton::kafka::tools::tool_producer(&baton::kafka::plain_config(&bootstrap())).unwrap();
    let n = records.len() as u64;
    let stats = baton::kafka::tools::produce_records(&producer, topic, records, None).await;
    assert_eq!(stats.sent, n, "every record acknowledged");
}

/// A reader of one or more topics from the beginning (no consumer group).
pub struct Reader {
    consumer: BaseConsumer,
    pub records: Vec<OwnedMessage>,
}

impl Reader {
    pub fn new(topics: &[String]) -> Reader {
        let consumer = baton::kafka::tools::reader_from_beginning(
            &baton::kafka::plain_config(&bootstrap()),
            topics,
        )
        .unwrap();
        let assigned = consumer.assignment().unwrap();
        for t in topics {
            let partitions = assigned.elements_for_topic(t).len();
            assert!(partitions > 0, "topic {t} exists");
        }
        Reader {
            consumer,
            records: Vec::new(),
        }
    }

    /// Reads until `done(records)` holds or `timeout` passes; returns whether it held.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[OwnedMessage]) -> bool,
    ) -> bool {
        let start = Instant::now();
        loop {
            if done(&self.records) {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            if let Some(m) = self.consumer.poll(Duration::from_millis(100)) {
                self.records.push(m.unwrap().detach());
            }
        }
    }

    /// Keeps reading for `quiet` to catch late records (duplicates, stragglers).
    pub fn drain_for(&mut self, quiet: Duration) {
        let start = Instant::now();
        while start.elapsed() < quiet {
            if let Some(m) = self.consumer.poll(Duration::from_millis(100)) {
                self.records.push(m.unwrap().detach());
            }
        }
    }
}

/// Job ids of result records, in topic order.
pub fn result_ids(records: &[OwnedMessage]) -> Vec<String> {
    records
        .iter()
        .filter_map(|m| {
            value(m)
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// Distinct ids in records.
pub fn distinct(ids: &[String]) -> usize {
    ids.iter().collect::<std::collections::HashSet<_>>().len()
}

/// Counts per id.
pub fn counts(ids: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id.clone()).or_insert(0) += 1;
    }
    m
}

/// A record's value as JSON (Null when it is not JSON).
pub fn value(m: &OwnedMessage) -> Value {
    m.payload()
        .and_then(|p| serde_json::from_slice(p).ok())
        .unwrap_or(Value::Null)
}

/// A header of a record.
pub fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    headers::get(m.headers(), key)
}

/// All header keys of a record.
pub fn header_keys(m: &OwnedMessage) -> Vec<String> {
    m.headers()
        .map(|h| (0..h.count()).map(|i| h.get(i).key.to_string()).collect())
        .unwrap_or_default()
}

/// A job envelope.
pub fn job(id: &str, input: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "id": id, "input": input })).unwrap()
}

/// A config with one pipeline `p`, one step `s`, one model `m` on the mock.
pub fn one_model_config(max_in_flight: usize, extra_worker: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{{BOOTSTRAP}}"
group_id = "{{GROUP}}"

[topics]
prefix = "{{PREFIX}}"

[worker]
max_in_flight = {max_in_flight}
metrics_listen = "off"
shutdown_timeout_ms = 20000
{extra_worker}

[models.m]
base_url = "{{MOCK}}"
timeout_ms = 10000

[[pipelines.p.steps]]
name = "s"
model = "m"
"#
    )
}

/// The `[kafka]`, `[topics]` and `[worker]` head of a test config (with the placeholders
/// [`World::new`] fills in; metrics off), plus `worker` lines.
pub fn config_head(worker: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{{BOOTSTRAP}}"
group_id = "{{GROUP}}"

[topics]
prefix = "{{PREFIX}}"

[worker]
metrics_listen = "off"
{worker}
"#
    )
}

/// Runs `deploy/kafka/local.sh ARGS` (with `input` on its standard input) and returns its
/// standard output; a failure shows its standard error.
fn local_sh(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kafka/local.sh");
    let mut child = Command::new(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run deploy/kafka/local.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "local.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs one of Apache Kafka's own command-line tools (from the jars `deploy/kafka/` fetched)
/// and returns its standard output.
pub fn kafka_tool(class: &str, args: &[&str]) -> String {
    kafka_tool_with_input(class, args, "")
}

/// Runs one of Apache Kafka's command-line tools with `input` on its standard input.
pub fn kafka_tool_with_input(class: &str, args: &[&str], input: &str) -> String {
    let all: Vec<&str> = ["tool", class]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    local_sh(&all, input)
}

/// The broker's TLS + SASL listener (`deploy/kafka/local.sh secure`): bootstrap, CA
/// certificate (PEM path), user, password.
pub fn secure_listener() -> (String, String, String, String) {
    bootstrap();
    let line = local_sh(&["secure"], "");
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .to_string()
    };
    (
        field("bootstrap"),
        field("ca"),
        field("user"),
        field("password"),
    )
}

/// A free loopback port (for a worker's `/metrics`).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
