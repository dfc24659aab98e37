//! `baton bench`: the throughput benchmark of one worker against a real Kafka broker.
//!
//! What it measures, per `worker.max_in_flight` level: jobs per second (steady: between the
//! first and the last result; end to end: from the worker's start, so start-up and the group
//! join count), the worker's CPU seconds per 1,000 jobs (utime + stime from `/proc`), its peak
//! RSS (`VmHWM`), and for context the mock provider's CPU and how busy the whole host was.
//!
//! How: `baton mock-llm` runs as a child process (fixed latency, echo answers), so its CPU is
//! not the worker's. For each level the benchmark writes a config with its own topic prefix
//! and consumer group, creates the topics, publishes every job up front, starts `baton run` as
//! a child process, and reads the results and dead-letter topics until every job id arrived.
//! It reads `/proc/<pid>` before it stops the worker with SIGTERM (the worker drains and
//! exits 0; anything else is reported). Timings come from the records' timestamps, which the
//! worker's producer sets when it publishes a result.
//!
//! The ceiling of one worker is `max_in_flight / latency`: the partition count does not bound
//! it, since jobs with different keys run concurrently far beyond the partitions.
//!
//! Children are killed if the benchmark fails (a guard's `Drop`); the temporary directory
//! (configs, logs) is removed after a successful run and kept after a failed one, for its logs.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use serde_json::json;

use crate::config::{Config, ConfigErrors, TopicNames};
use crate::kafka::headers;

/// `baton bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Kafka bootstrap servers of the broker to measure against.
    #[arg(long, env = "BATON_BOOTSTRAP")]
    pub bootstrap: String,
    /// Jobs per in-flight level.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: u64,
    /// `worker.max_in_flight` levels to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,1024,4096", value_parser = clap::value_parser!(u64).range(1..))]
    pub in_flight: Vec<u64>,
    /// Fixed latency of every simulated provider call, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub latency_ms: u64,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Give up on a level when its results have not all arrived after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Also print one JSON line per level (after the table).
    #[arg(long)]
    pub json: bool,
    /// Keep the temporary directory (configs, logs) and the benchmark's topics.
    #[arg(long)]
    pub keep_temp: bool,
    /// Steps of the benchmark pipeline: each job makes one call per step, handed from step to
    /// step through Kafka with its trail.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10))]
    pub steps: u64,
    /// Turn stage tracking off (`worker.track_status = false`), to measure what it costs.
    #[arg(long)]
    pub no_status: bool,
    /// Spread the jobs over this many conversations (0: none), so every job restores and
    /// appends conversation memory.
    #[arg(long, default_value_t = 0)]
    pub conversations: u64,
    /// Size of each job's input text, in KiB (0: a short sentence), to measure memory with large
    /// prompts.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=900))]
    pub payload_kib: u64,
    /// Extra librdkafka consumer property of the worker (`[kafka.consumer]`), as KEY=VALUE;
    /// repeatable. For tuning experiments; the default measures the shipped settings.
    #[arg(long = "consumer-prop", value_name = "KEY=VALUE", value_parser = parse_prop)]
    pub consumer_props: Vec<(String, String)>,
    /// Extra librdkafka producer property of the worker (`[kafka.producer]`), as KEY=VALUE;
    /// repeatable, for tuning experiments like `--consumer-prop`.
    #[arg(long = "producer-prop", value_name = "KEY=VALUE", value_parser = parse_prop)]
    pub producer_props: Vec<(String, String)>,
}

fn parse_prop(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Why the benchmark failed. None is retried here: each names what to look at.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A local file, process or `/proc` read failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A Kafka client failed: check that the broker at `--bootstrap` is up.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Creating the benchmark's topics failed.
    #[error(transparent)]
    Admin(#[from] crate::kafka::admin::AdminError),
    /// The generated worker config is invalid (a bug in the benchmark).
    #[error("generated config: {0}")]
    Config(#[from] ConfigErrors),
    /// The mock provider did not announce its address; its log says why.
    #[error("mock-llm did not start; see {log}")]
    MockNotReady {
        /// The mock's stderr.
        log: PathBuf,
    },
    /// Some jobs could not be published.
    #[error("{failed} of {total} jobs could not be published")]
    Produce {
        /// Failed records.
        failed: u64,
        /// All records.
        total: u64,
    },
    /// The worker exited before every result arrived; its log says why.
    #[error(
        "in_flight {level}: the worker exited ({status}) after {seen} of {jobs} jobs; see {log}"
    )]
    WorkerExited {
        /// The in-flight level.
        level: u64,
        /// How it exited.
        status: ExitStatus,
        /// Jobs finished by then.
        seen: u64,
        /// Jobs published.
        jobs: u64,
        /// The worker's stderr.
        log: PathBuf,
    },
    /// Not every result arrived in time; the worker log may say why.
    #[error("in_flight {level}: {seen} of {jobs} jobs finished within {timeout_s}s; see {log}")]
    Timeout {
        /// The in-flight level.
        level: u64,
        /// Jobs finished.
        seen: u64,
        /// Jobs published.
        jobs: u64,
        /// The wait.
        timeout_s: u64,
        /// The worker's stderr.
        log: PathBuf,
    },
    /// A blocking part of the benchmark panicked.
    #[error("benchmark thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// The figures of one in-flight level.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LevelReport {
    /// `worker.max_in_flight`.
    pub in_flight: u64,
    /// Jobs published (and finished).
    pub jobs: u64,
    /// Jobs per second between the first and the last result.
    pub jobs_per_s_steady: f64,
    /// Jobs per second from the worker's start to the last result.
    pub jobs_per_s_end_to_end: f64,
    /// `in_flight / latency`: what one worker could do if nothing but latency bounded it.
    pub ceiling_jobs_per_s: f64,
    /// Worker CPU (user + system) seconds per 1,000 jobs, start-up included.
    pub worker_cpu_s_per_1k: f64,
    /// Worker peak resident memory, MiB.
    pub worker_peak_rss_mib: f64,
    /// Worker resident memory 5 s after its last result (idle, backlog drained), MiB.
    pub worker_idle_rss_mib: f64,
    /// Mock provider CPU seconds per 1,000 jobs during the level.
    pub mock_cpu_s_per_1k: f64,
    /// Share of all cores busy (any process) while the worker ran, percent.
    pub host_busy_pct: f64,
    /// Jobs that ended as dead letters instead of results.
    pub dead_letters: u64,
    /// Whether the worker exited 0 within its drain deadline after SIGTERM.
    pub worker_exit_ok: bool,
    /// Warning or error lines in the worker's log.
    pub worker_log_lines: usize,
}

/// Runs the benchmark and prints its table.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let exe = std::env::current_exe().map_err(io_err("locating the baton binary"))?;
    let dir = std::env::temp_dir().join(format!("baton-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    let mock = start_mock(&exe, &dir, args.latency_ms)?;
    println!("baton bench");
    println!("  host:     {cores} core(s)");
    println!("  kafka:    {}", args.bootstrap);
    println!(
        "  provider: baton mock-llm (pid {}) at {}, fixed {} ms, echo answers",
        mock.child.pid(),
        mock.base_url,
        args.latency_ms
    );
    println!(
        "  jobs:     {} per level, input topic with {} partition(s), one worker process per level",
        args.jobs, args.partitions
    );
    for (what, props) in [
        ("consumer", &args.consumer_props),
        ("producer", &args.producer_props),
    ] {
        if !props.is_empty() {
            let props: Vec<String> = props.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("  {what}: {} (not the shipped settings)", props.join(", "));
        }
    }
    println!("  files:    {}", dir.display());
    println!();

    let mut reports = Vec::new();
    for &level in &args.in_flight {
        let report = run_level(&args, &exe, &dir, &mock, level).await?;
        if reports.is_empty() {
            print_header();
        }
        print_row(&report);
        reports.push(report);
    }
    if args.json {
        for r in &reports {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["cores"] = json!(cores);
            v["latency_ms"] = json!(args.latency_ms);
            v["partitions"] = json!(args.partitions);
            println!("{v}");
        }
    }

    let mut mock = mock;
    let status = tokio::task::spawn_blocking(move || mock.child.terminate(Duration::from_secs(10)))
        .await?
        .map_err(io_err("stopping mock-llm"))?;
    if !status.is_some_and(|s| s.success()) {
        tracing::warn!(?status, "mock-llm did not exit cleanly");
    }
    if args.keep_temp {
        println!("kept {}", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(error = %e, dir = %dir.display(), "could not remove the temporary directory");
    }
    Ok(())
}

/// The running mock provider.
struct Mock {
    child: ChildGuard,
    base_url: String,
}

/// Starts `baton mock-llm` on a free port and reads the address it prints.
fn start_mock(exe: &Path, dir: &Path, latency_ms: u64) -> Result<Mock, BenchError> {
    let config = dir.join("mock-llm.toml");
    // No request log: it would only cost the mock CPU and memory.
    let text = format!("request_log_capacity = 0\n\n[default]\nlatency = {{ fixed_ms = {latency_ms} }}\nanswer = {{ echo = true }}\n");
    std::fs::write(&config, text).map_err(io_err(format!("writing {}", config.display())))?;
    let log = dir.join("mock-llm.log");
    let mut cmd = Command::new(exe);
    cmd.args(["mock-llm", "--port", "0", "--config"])
        .arg(&config);
    let mut child = ChildGuard::spawn("mock-llm", cmd, &log, Stdio::piped())?;
    let stdout = child
        .child
        .stdout
        .take()
        .ok_or_else(|| BenchError::MockNotReady { log: log.clone() })?;

    // Read its stdout on a thread (until EOF, so a later line never meets a closed pipe) and
    // wait for the address line with a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.strip_prefix("mock-llm listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(base_url) => Ok(Mock { child, base_url }),
        Err(_) => Err(BenchError::MockNotReady { log }),
    }
}

/// One in-flight level: topics, jobs, worker, results, readings, stop.
async fn run_level(
    args: &BenchArgs,
    exe: &Path,
    dir: &Path,
    mock: &Mock,
    level: u64,
) -> Result<LevelReport, BenchError> {
    let prefix = format!("bench-{}-{level}-", std::process::id());
    let config_path = dir.join(format!("worker-{level}.toml"));
    let config_text = worker_config(args, &mock.base_url, &prefix, level)?;
    std::fs::write(&config_path, config_text)
        .map_err(io_err(format!("writing {}", config_path.display())))?;
    let mut config = Config::load(&config_path)?;
    config.declarations.input.partitions = args.partitions;
    let plan = crate::kafka::topics::plan(&config);
    crate::kafka::admin::apply(&crate::kafka::plain_config(&args.bootstrap), &plan, false).await?;
    let step = config.steps[0].clone();
    publish_jobs(args, &prefix, &step.topic, level).await?;
    let mut topics = vec![config.topics.results.clone()];
    topics.extend(config.steps.iter().map(|s| TopicNames::dlq_of(&s.topic)));

    let log = dir.join(format!("worker-{level}.log"));
    let ctx = LevelRun {
        bootstrap: args.bootstrap.clone(),
        topics,
        jobs: args.jobs,
        level,
        timeout: Duration::from_secs(args.timeout_s),
        drain: config.worker.shutdown_timeout + Duration::from_secs(15),
        log: log.clone(),
        mock_pid: mock.child.pid(),
    };
    let mut cmd = Command::new(exe);
    cmd.args(["run", "--bootstrap", &args.bootstrap, "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn");
    let outcome = tokio::task::spawn_blocking(move || ctx.measure(cmd)).await??;
    let report = level_report(args, level, &outcome, &log);
    if !args.keep_temp {
        delete_topics(
            &args.bootstrap,
            &plan.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        )
        .await;
    }
    Ok(report)
}

/// Publishes the level's jobs up front, each with its own key.
async fn publish_jobs(
    args: &BenchArgs,
    prefix: &str,
    topic: &str,
    level: u64,
) -> Result<(), BenchError> {
    let bar = ProgressBar::new(args.jobs);
    bar.set_style(style(&format!(
        "  in_flight {level:>5}: publishing {{bar:30}} {{pos}}/{{len}}  {{per_sec}}"
    )));
    let producer =
        crate::kafka::tools::tool_producer(&crate::kafka::plain_config(&args.bootstrap))?;
    let conversations = args.conversations;
    let padding = "lorem ipsum ".repeat((args.payload_kib as usize * 1024).div_ceil(12));
    let records = (0..args.jobs).map(|i| {
        let id = format!("{prefix}{i:07}");
        let input = if padding.is_empty() {
            format!("benchmark job {i}")
        } else {
            format!(
                "benchmark job {i} {}",
                &padding[..args.payload_kib as usize * 1024]
            )
        };
        let mut value = json!({ "id": id, "input": input });
        let key = if conversations > 0 {
            let conv = format!("{prefix}c{}", i % conversations);
            value["conversation_id"] = json!(conv);
            conv
        } else {
            id
        };
        (Some(key.into_bytes()), value.to_string().into_bytes())
    });
    let sent = crate::kafka::tools::produce_records(&producer, topic, records, Some(&bar)).await;
    bar.finish_and_clear();
    if sent.failed > 0 {
        return Err(BenchError::Produce {
            failed: sent.failed,
            total: sent.sent + sent.failed,
        });
    }
    Ok(())
}

/// The level's figures from what was measured; warns when the worker did not exit cleanly or
/// logged warnings.
fn level_report(args: &BenchArgs, level: u64, outcome: &Outcome, log: &Path) -> LevelReport {
    let secs = |ms: i64| (ms.max(1)) as f64 / 1000.0;
    let n = args.jobs as f64;
    let (log_lines, excerpt) = log_warnings(log);
    let report = LevelReport {
        in_flight: level,
        jobs: args.jobs,
        jobs_per_s_steady: n / secs(outcome.last_ms - outcome.first_ms),
        jobs_per_s_end_to_end: n / secs(outcome.last_ms - outcome.started_ms),
        ceiling_jobs_per_s: level as f64 * 1000.0 / args.latency_ms as f64,
        worker_cpu_s_per_1k: outcome.worker_cpu_s * 1000.0 / n,
        worker_peak_rss_mib: outcome.worker_peak_rss_kib as f64 / 1024.0,
        worker_idle_rss_mib: outcome.worker_idle_rss_kib as f64 / 1024.0,
        mock_cpu_s_per_1k: outcome.mock_cpu_s * 1000.0 / n,
        host_busy_pct: outcome.host_busy_pct,
        dead_letters: outcome.dead_letters,
        worker_exit_ok: outcome.exit.is_some_and(|s| s.success()),
        worker_log_lines: log_lines,
    };
    if !report.worker_exit_ok {
        let how = outcome
            .exit
            .map_or("killed after the drain deadline".to_string(), |s| {
                s.to_string()
            });
        tracing::warn!(level, exit = %how, log = %log.display(), "the worker did not exit 0 after SIGTERM");
    }
    if log_lines > 0 {
        tracing::warn!(level, lines = log_lines, log = %log.display(), first = %excerpt.join(" | "), "the worker logged warnings or errors");
    }
    report
}

/// The worker config of one level: one model on the mock, a pipeline of `--steps` steps.
fn worker_config(
    args: &BenchArgs,
    base_url: &str,
    prefix: &str,
    level: u64,
) -> Result<String, BenchError> {
    let props = |props: &[(String, String)]| -> serde_json::Map<String, serde_json::Value> {
        props.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
    };
    let steps: Vec<serde_json::Value> = (0..args.steps)
        .map(|i| json!({ "name": format!("s{i}"), "model": "echo" }))
        .collect();
    let value = json!({
        "kafka": {
            "bootstrap_servers": args.bootstrap,
            "group_id": format!("{prefix}workers"),
            "consumer": props(&args.consumer_props),
            "producer": props(&args.producer_props),
        },
        "topics": { "prefix": prefix },
        "worker": {
            "max_in_flight": level,
            "metrics_listen": "off",
            "track_status": !args.no_status,
        },
        "models": { "echo": { "base_url": base_url, "timeout_ms": 60_000 + args.latency_ms } },
        "pipelines": { "bench": { "steps": steps } },
    });
    toml::to_string(&value).map_err(|e| BenchError::Io {
        what: "writing the worker config".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// What the blocking part of a level needs.
struct LevelRun {
    bootstrap: String,
    topics: Vec<String>,
    jobs: u64,
    level: u64,
    timeout: Duration,
    drain: Duration,
    log: PathBuf,
    mock_pid: i32,
}

/// What the blocking part of a level measured.
struct Outcome {
    started_ms: i64,
    first_ms: i64,
    last_ms: i64,
    dead_letters: u64,
    worker_cpu_s: f64,
    worker_peak_rss_kib: u64,
    worker_idle_rss_kib: u64,
    mock_cpu_s: f64,
    host_busy_pct: f64,
    exit: Option<ExitStatus>,
}

/// When the level's terminal records arrived (their timestamps) and how many were dead letters.
struct Arrivals {
    first_ms: i64,
    last_ms: i64,
    dead_letters: u64,
}

impl LevelRun {
    /// Starts the worker, waits for every job's terminal record, reads `/proc`, stops it.
    fn measure(self, cmd: Command) -> Result<Outcome, BenchError> {
        let consumer = crate::kafka::tools::reader_from_beginning(
            &crate::kafka::plain_config(&self.bootstrap),
            &self.topics,
        )?;
        let mock_cpu_before = cpu_seconds(self.mock_pid)?;
        let host_before = host_cpu_ticks()?;
        let started_ms = now_ms();
        let mut worker = ChildGuard::spawn("worker", cmd, &self.log, Stdio::null())?;
        let arrivals = self.await_all(&consumer, &mut worker)?;

        // Read before stopping: the process's figures vanish with it.
        let pid = worker.pid();
        let worker_cpu_s = cpu_seconds(pid)?;
        let worker_peak_rss_kib = status_kib(pid, "VmHWM:")?;
        let host_after = host_cpu_ticks()?;
        let mock_cpu_s = cpu_seconds(self.mock_pid)? - mock_cpu_before;
        // Does the memory go back down once the backlog is done?
        std::thread::sleep(Duration::from_secs(5));
        let worker_idle_rss_kib = status_kib(pid, "VmRSS:")?;
        let (busy, total) = (host_after.0 - host_before.0, host_after.1 - host_before.1);
        let host_busy_pct = if total > 0 {
            busy as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let exit = worker
            .terminate(self.drain)
            .map_err(io_err("stopping the worker"))?;
        Ok(Outcome {
            started_ms,
            first_ms: arrivals.first_ms,
            last_ms: arrivals.last_ms,
            dead_letters: arrivals.dead_letters,
            worker_cpu_s,
            worker_peak_rss_kib,
            worker_idle_rss_kib,
            mock_cpu_s,
            host_busy_pct,
            exit,
        })
    }

    /// Reads results and dead letters until every job id arrived once; fails when the worker
    /// exits or the level's time is up first.
    fn await_all(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer,
        worker: &mut ChildGuard,
    ) -> Result<Arrivals, BenchError> {
        let bar = ProgressBar::new(self.jobs);
        bar.set_style(style(&format!(
            "  in_flight {:>5}: finished   {{bar:30}} {{pos}}/{{len}}  {{per_sec}}  {{elapsed}}",
            self.level
        )));
        let mut seen: HashSet<String> = HashSet::with_capacity(self.jobs as usize);
        let mut a = Arrivals {
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            dead_letters: 0,
        };
        let deadline = Instant::now() + self.timeout;
        let mut next_check = Instant::now();
        while (seen.len() as u64) < self.jobs {
            if Instant::now() >= next_check {
                next_check = Instant::now() + Duration::from_secs(1);
                if let Err(e) = self.still_running(worker, seen.len() as u64, deadline) {
                    bar.finish_and_clear();
                    return Err(e);
                }
            }
            let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let msg = msg?;
            let id = headers::get(msg.headers(), headers::JOB_ID)
                .or_else(|| msg.key().map(|k| String::from_utf8_lossy(k).into_owned()))
                .unwrap_or_default();
            if !seen.insert(id) {
                continue; // a duplicate (at-least-once): the first copy counted
            }
            if msg.topic().ends_with(".dlq") {
                a.dead_letters += 1;
            }
            let ts = msg.timestamp().to_millis().unwrap_or_else(now_ms);
            a.first_ms = a.first_ms.min(ts);
            a.last_ms = a.last_ms.max(ts);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(a)
    }

    /// An error when the worker has exited or the level's time is up, with `seen` jobs done.
    fn still_running(
        &self,
        worker: &mut ChildGuard,
        seen: u64,
        deadline: Instant,
    ) -> Result<(), BenchError> {
        if let Some(status) = worker
            .child
            .try_wait()
            .map_err(io_err("waiting for the worker"))?
        {
            return Err(BenchError::WorkerExited {
                level: self.level,
                status,
                seen,
                jobs: self.jobs,
                log: self.log.clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout {
                level: self.level,
                seen,
                jobs: self.jobs,
                timeout_s: self.timeout.as_secs(),
                log: self.log.clone(),
            });
        }
        Ok(())
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing benchmark
/// leaves no worker or mock behind.
struct ChildGuard {
    name: &'static str,
    child: std::process::Child,
}

impl ChildGuard {
    /// Spawns `cmd` with stderr appended to `log`.
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        log: &Path,
        stdout: Stdio,
    ) -> Result<ChildGuard, BenchError> {
        let stderr = File::create(log).map_err(io_err(format!("creating {}", log.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(io_err(format!("starting {name}")))?;
        Ok(ChildGuard { name, child })
    }

    fn pid(&self) -> i32 {
        // Linux pids fit in i32 (pid_max is at most 2^22).
        self.child.id() as i32
    }

    /// SIGTERM, then waits up to `grace`; SIGKILL after that. Returns the exit status, or
    /// `None` when it had to be killed.
    fn terminate(&mut self, grace: Duration) -> std::io::Result<Option<ExitStatus>> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(Some(status));
        }
        // SAFETY: kill(2) with the pid of our own, not yet reaped, child.
        if unsafe { libc::kill(self.pid(), libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(name = self.name, "did not exit after SIGTERM; killing it");
        self.child.kill()?;
        self.child.wait()?;
        Ok(None)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: i32) -> Result<f64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(io_err(format!("reading {path}")))?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    // There, index 0 is field 3 (state), so utime (field 14) is index 11 and stime index 12.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (field(11), field(12)) else {
        return Err(unparsable(&path));
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok((utime + stime) as f64 / ticks.max(1) as f64)
}

/// Peak resident set size of a process in KiB (`VmHWM` in `/proc/<pid>/status`).
/// A memory figure (`VmHWM:` peak, `VmRSS:` now) of a process, KiB.
fn status_kib(pid: i32, field: &str) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(io_err(format!("reading {path}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| unparsable(&path))
}

/// Busy and total CPU ticks of the whole host, from the first line of `/proc/stat`.
fn host_cpu_ticks() -> Result<(u64, u64), BenchError> {
    let text = std::fs::read_to_string("/proc/stat").map_err(io_err("reading /proc/stat"))?;
    let ticks: Vec<u64> = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if ticks.len() < 5 {
        return Err(unparsable("/proc/stat"));
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = ticks.iter().take(8).sum();
    Ok((total - ticks[3] - ticks[4], total))
}

fn unparsable(path: &str) -> BenchError {
    BenchError::Io {
        what: format!("reading {path}"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected format"),
    }
}

/// Deletes the benchmark's topics; failure is only logged.
async fn delete_topics(bootstrap: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> =
        match crate::kafka::plain_config(bootstrap).create() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "could not delete the benchmark topics");
                return;
            }
        };
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    match admin.delete_topics(names, &opts).await {
        Ok(results) => {
            for (topic, code) in results.into_iter().filter_map(Result::err) {
                tracing::warn!(topic, %code, "could not delete a benchmark topic");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not delete the benchmark topics"),
    }
}

/// The number of warning or error lines in a worker log and the first three distinct ones.
fn log_warnings(log: &Path) -> (usize, Vec<String>) {
    let Ok(file) = File::open(log) else {
        return (0, Vec::new());
    };
    let mut count = 0;
    let mut first: Vec<String> = Vec::new();
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if !(line.contains("WARN") || line.contains("ERROR")) {
            continue;
        }
        count += 1;
        // Drop the timestamp so repeats of one message are recognized.
        let msg = line
            .split_once("WARN")
            .or_else(|| line.split_once("ERROR"))
            .map_or(line.as_str(), |(_, m)| m)
            .trim()
            .to_string();
        if first.len() < 3 && !first.contains(&msg) {
            first.push(msg);
        }
    }
    (count, first)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn print_header() {
    println!(
        "{:>9} {:>7} {:>10} {:>10} {:>10} {:>6} {:>11} {:>9} {:>9} {:>10} {:>6} {:>5}",
        "in_flight",
        "jobs",
        "steady/s",
        "e2e/s",
        "ceiling/s",
        "%ceil",
        "cpu_s/1k",
        "rss_MiB",
        "idle_MiB",
        "mock_s/1k",
        "host%",
        "dlq"
    );
}

fn print_row(r: &LevelReport) {
    println!(
        "{:>9} {:>7} {:>10.0} {:>10.0} {:>10.0} {:>5.0}% {:>11.3} {:>9.1} {:>9.1} {:>10.3} {:>5.0}% {:>5}{}",
        r.in_flight,
        r.jobs,
        r.jobs_per_s_steady,
        r.jobs_per_s_end_to_end,
        r.ceiling_jobs_per_s,
        r.jobs_per_s_steady * 100.0 / r.ceiling_jobs_per_s,
        r.worker_cpu_s_per_1k,
        r.worker_peak_rss_mib,
        r.worker_idle_rss_mib,
        r.mock_cpu_s_per_1k,
        r.host_busy_pct,
        r.dead_letters,
        if r.worker_exit_ok { "" } else { "  (worker did not exit 0)" },
    );
}
