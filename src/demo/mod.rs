//! `baton demo`: the whole flow in one process, with nothing installed.
//!
//! An embedded Kafka-protocol cluster (librdkafka's mock cluster), simulated providers
//! (`baton mock-llm` on loopback, `examples/mock-llm.toml`), the support-triage config
//! (`examples/support.toml`), about 200 sample tickets, and the same worker `baton run` uses.
//! It prints a summary per model, then runs the contracts pipeline ([`contracts`]) on a few
//! sample contracts, and ends with `jobs=N results=R dead_letters=D lost=L` for the tickets.
//! With `--bootstrap`, the same runs against a real cluster (topics get a unique prefix).

pub mod contracts;
pub mod tickets;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TopicNames};
use crate::envelope::JobResult;
use crate::kafka::headers;
use crate::mock_llm::{MockLlm, MockLlmConfig};
use crate::pipeline::StepRunner;

/// The support-triage config the demo runs (`examples/support.toml`).
pub const SAMPLE_CONFIG: &str = include_str!("../../examples/support.toml");
/// The simulated providers' behaviour (`examples/mock-llm.toml`).
pub const MOCK_CONFIG: &str = include_str!("../../examples/mock-llm.toml");

/// `baton demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of sample tickets.
    #[arg(long, default_value_t = 200)]
    pub jobs: usize,
    /// Use a real Kafka cluster instead of the embedded one.
    #[arg(long, env = "BATON_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Give up waiting for outputs after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout_s: u64,
    /// Seed of the sample tickets.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded cluster or a client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Creating topics on the real cluster failed.
    #[error(transparent)]
    Admin(#[from] crate::kafka::admin::AdminError),
    /// The simulated providers could not start.
    #[error("mock-llm: {0}")]
    Mock(#[from] std::io::Error),
    /// The built-in config is invalid (a bug).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigErrors),
    /// The worker failed.
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    /// Some jobs ended in neither a result nor a dead letter in time.
    #[error("{lost} of {jobs} jobs had no result or dead letter after {timeout_s}s")]
    Lost {
        /// Unaccounted jobs.
        lost: usize,
        /// All jobs.
        jobs: usize,
        /// The wait.
        timeout_s: u64,
    },
}

/// What the demo saw.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// Jobs published.
    pub jobs: usize,
    /// Results, one per job id.
    pub results: Vec<JobResult>,
    /// Dead letters: (job id, error class).
    pub dead_letters: Vec<(String, String)>,
    /// Jobs with neither.
    pub lost: usize,
}

/// The on-call view of the tickets' consumer group, from `baton lag`'s code: what is left to
/// consume, what waits in the retry tiers, what was dead-lettered.
async fn print_lag(config: &Config, step: &crate::config::StepConfig) {
    use crate::kafka::lag::{read_report, summary, OffsetReader, Topics};
    let topics = Topics {
        consumed: std::iter::once(step.topic.clone())
            .chain(step.retry_topics.iter().cloned())
            .collect(),
        retry: step.retry_topics.clone(),
        dead_letters: vec![TopicNames::dlq_of(&step.topic)],
    };
    let (client, group) = (
        crate::kafka::client_config(&config.kafka),
        config.kafka.group_id.clone(),
    );
    let report = tokio::task::spawn_blocking(move || {
        let reader = OffsetReader::new(&client, &group, Duration::from_secs(10))?;
        read_report(&reader, &group, &topics, Duration::ZERO)
    })
    .await;
    match report {
        Ok(Ok(r)) => {
            println!("on call (baton lag --config F):");
            for line in summary(&r).lines() {
                println!("  {line}");
            }
        }
        Ok(Err(e)) => println!("on call: lag not readable ({e})"),
        Err(e) => println!("on call: lag not readable ({e})"),
    }
}

/// Runs the demo and prints its summary.
pub async fn run(args: DemoArgs) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().expect("static address"),
        MockLlmConfig::from_toml_str(MOCK_CONFIG).expect("examples/mock-llm.toml is valid"),
    )
    .await?;
    let mut config = Config::from_toml(SAMPLE_CONFIG, None)?;
    // Simulated providers: every model on the local mock, no API keys needed.
    for m in &mut config.models {
        m.base_url = mock.base_url();
        m.api_key_env = None;
    }
    config.worker.metrics_listen = None;
    config.worker.shutdown_timeout = Duration::from_secs(10);
    let cluster = start_cluster(args.bootstrap.as_deref(), &mut config).await?;
    print_banner(&config, &mock, cluster.is_some());

    let step = config.steps[0].clone();
    let records = tickets::generate(args.jobs, args.seed);
    let expected: HashSet<String> = records.iter().map(|r| r.key.clone()).collect();
    let producer = crate::kafka::tools::tool_producer(&crate::kafka::client_config(&config.kafka))?;
    let tickets = records
        .iter()
        .map(|r| (Some(r.key.clone().into_bytes()), r.value.clone()));
    let sent = crate::kafka::tools::produce_records(&producer, &step.topic, tickets, None).await;
    println!("published {} tickets to {}", sent.sent, step.topic);

    let config = Arc::new(config);
    let runner = StepRunner::from_config(config.clone())?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(crate::worker::run(config.clone(), runner, shutdown.clone()));
    let outages = simulate_outages(&mock);
    let base = crate::kafka::client_config(&config.kafka);
    let outputs = vec![
        config.topics.results.clone(),
        TopicNames::dlq_of(&step.topic),
    ];
    let timeout = Duration::from_secs(args.timeout_s);
    let (results, dead_letters) =
        tokio::task::spawn_blocking(move || collect_outputs(&base, &outputs, &expected, timeout))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
    outages.abort();
    shutdown.cancel();
    let stats = worker
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let report = DemoReport::new(records.len(), results, dead_letters);
    print_summary(&report, &config, started.elapsed());
    print_lag(&config, &step).await;
    let contracts = run_contracts(&mock, &config, cluster.as_ref(), timeout).await?;
    mock.shutdown().await;
    // Clients first: a client outliving the embedded cluster logs "all brokers down".
    drop(producer);
    drop(cluster);
    tracing::debug!(?stats, "demo worker stats");
    print_tally(&report);
    let finished = contracts.results.len();
    if finished < contracts::CONTRACTS_IN_DEMO {
        return Err(DemoError::Lost {
            lost: contracts::CONTRACTS_IN_DEMO - finished,
            jobs: contracts::CONTRACTS_IN_DEMO,
            timeout_s: args.timeout_s,
        });
    }
    if report.lost > 0 {
        return Err(DemoError::Lost {
            lost: report.lost,
            jobs: report.jobs,
            timeout_s: args.timeout_s,
        });
    }
    Ok(report)
}

/// The contracts pipeline on the same Kafka and simulated providers, printed.
async fn run_contracts(
    mock: &MockLlm,
    support: &Config,
    cluster: Option<&Cluster>,
    timeout: Duration,
) -> Result<contracts::ContractsReport, DemoError> {
    let bootstrap = &support.kafka.bootstrap_servers;
    let config = contracts::config(mock, bootstrap, &support.topics.prefix)?;
    let plan = crate::kafka::topics::plan(&config);
    match cluster {
        // Topics the support part made already exist; the rest are new.
        Some(c) => {
            for t in plan {
                let _ = c.create_topic(&t.name, t.spec.partitions, 1);
            }
        }
        None => {
            crate::kafka::admin::apply(&crate::kafka::plain_config(bootstrap), &plan, false)
                .await?;
        }
    }
    let report = contracts::run(config.clone(), timeout).await?;
    contracts::print(&report, &config);
    Ok(report)
}

/// The embedded cluster.
type Cluster = rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

impl DemoReport {
    /// The report of `jobs` published jobs: a job with neither a result nor a dead letter is
    /// lost.
    fn new(jobs: usize, results: Vec<JobResult>, dead_letters: Vec<(String, String)>) -> Self {
        let accounted: HashSet<&str> = results
            .iter()
            .map(|r| r.id.as_str())
            .chain(dead_letters.iter().map(|(id, _)| id.as_str()))
            .collect();
        let lost = jobs.saturating_sub(accounted.len());
        DemoReport {
            jobs,
            results,
            dead_letters,
            lost,
        }
    }
}

/// The Kafka the demo runs on: an embedded mock cluster (returned, to keep it alive) with the
/// config's topics, or, with `bootstrap`, a real cluster with topics under a unique prefix.
async fn start_cluster(
    bootstrap: Option<&str>,
    config: &mut Config,
) -> Result<
    Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    DemoError,
> {
    match bootstrap {
        None => {
            let c = rdkafka::mocking::MockCluster::new(1)?;
            config.kafka.bootstrap_servers = c.bootstrap_servers();
            for t in crate::kafka::topics::plan(config) {
                c.create_topic(&t.name, t.spec.partitions, 1)?;
            }
            Ok(Some(c))
        }
        Some(b) => {
            let prefix = format!("demo-{}.", std::process::id());
            rebase_topics(config, &prefix);
            config.kafka.bootstrap_servers = b.to_string();
            config.kafka.group_id = format!("{prefix}workers");
            crate::kafka::admin::apply(
                &crate::kafka::plain_config(b),
                &crate::kafka::topics::plan(config),
                false,
            )
            .await?;
            Ok(None)
        }
    }
}

/// What the demo runs on, said on screen.
fn print_banner(config: &Config, mock: &MockLlm, embedded: bool) {
    println!("baton demo");
    if embedded {
        println!("  kafka:     embedded in-process Kafka-protocol cluster (librdkafka mock cluster), not a real broker");
    } else {
        println!(
            "  kafka:     {} (topics prefixed {:?})",
            config.kafka.bootstrap_servers, config.topics.prefix
        );
    }
    println!(
        "  providers: simulated by baton mock-llm at {} (latency, 5xx, 429s, a content filter)",
        mock.base_url()
    );
    println!("  config:    examples/support.toml: route \"support\" (rules, then the triage classifier): simple -> cheap-fast, complex -> premium, restricted -> on-prem; 10% A/B variant");
    println!(
        "  real run:  baton topics apply --config examples/support.toml --bootstrap HOST:PORT"
    );
    println!("             baton run --config examples/support.toml --bootstrap HOST:PORT");
    println!();
}

/// Provider outages the demo plays, in milliseconds from the first provider call: the premium
/// model answers 503 for 2 s and the on-premise model for 1 s. Their circuits open; complex and
/// restricted tickets that find no model up wait in the first retry tier and are answered after
/// it, once a probe finds the model back.
pub const OUTAGES: &[(&str, &str, u64, u64)] = &[
    ("premium", "claude-sonnet", 0, 2000),
    ("on-prem", "llama-3.1-70b", 0, 1000),
];

fn simulate_outages(mock: &MockLlm) -> tokio::task::JoinHandle<()> {
    let state = mock.state().clone();
    let config = mock.config();
    tokio::spawn(async move {
        // The clock starts with the first provider call (the worker needs a moment to join
        // its group first).
        while state.request_log().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        let mut events: Vec<(u64, &str, bool)> = OUTAGES
            .iter()
            .flat_map(|&(_, m, from, to)| [(from, m, true), (to, m, false)])
            .collect();
        events.sort();
        for (at, model, down) in events {
            let due = started + Duration::from_millis(at);
            tokio::time::sleep_until(due.into()).await;
            let mut b = config.behavior_for(model).clone();
            if down {
                b.errors = vec![crate::mock_llm::ErrorSpec {
                    status: 503,
                    rate: 1.0,
                }];
                b.rate_limited = None;
                b.hang_rate = 0.0;
                b.malformed_rate = 0.0;
            }
            if let Err(e) = state.set_model(model, b) {
                tracing::warn!(error = %e, "demo outage could not be set");
            }
        }
    })
}

/// Prefixes every topic name (used against a real cluster, so runs never collide).
fn rebase_topics(config: &mut Config, prefix: &str) {
    let add = |s: &mut String| *s = format!("{prefix}{s}");
    config.topics.prefix = prefix.to_string();
    add(&mut config.topics.results);
    add(&mut config.topics.calls);
    add(&mut config.topics.review);
    add(&mut config.topics.memory);
    add(&mut config.topics.status);
    let results = config.topics.results.clone();
    for s in &mut config.steps {
        add(&mut s.topic);
        for t in &mut s.retry_topics {
            add(t);
        }
        if s.is_last {
            s.output_topic = results.clone();
        } else {
            add(&mut s.output_topic);
        }
    }
}

type Outputs = (Vec<JobResult>, Vec<(String, String)>);

/// Reads results and dead letters until every expected job id is accounted for, or timeout.
fn collect_outputs(
    base: &rdkafka::ClientConfig,
    topics: &[String],
    expected: &HashSet<String>,
    timeout: Duration,
) -> Result<Outputs, rdkafka::error::KafkaError> {
    let consumer = crate::kafka::tools::reader_from_beginning(base, topics)?;
    let bar = ProgressBar::new(expected.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("  {bar:40} {pos}/{len} jobs finished  {elapsed}")
            .expect("static template"),
    );
    let mut results: HashMap<String, JobResult> = HashMap::new();
    let mut dead: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let done = expected
            .iter()
            .filter(|id| results.contains_key(*id) || dead.contains_key(*id))
            .count();
        bar.set_position(done as u64);
        if done == expected.len() {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        if msg.topic().ends_with(".dlq") {
            let id = headers::get(msg.headers(), headers::JOB_ID)
                .unwrap_or_default()
                .to_string();
            let class = headers::get(msg.headers(), headers::ERROR_CLASS)
                .unwrap_or_default()
                .to_string();
            dead.insert(id, class);
        } else if let Some(r) = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<JobResult>(p).ok())
        {
            results.insert(r.id.clone(), r);
        }
    }
    bar.finish_and_clear();
    let mut results: Vec<JobResult> = results.into_values().collect();
    results.sort_by(|a, b| a.id.cmp(&b.id));
    let mut dead: Vec<(String, String)> = dead.into_iter().collect();
    dead.sort();
    Ok((results, dead))
}

/// The rule column: a rule's name, `classifier`, or `default` with its reason in short.
fn short_rule(rule: &str) -> String {
    match rule.strip_prefix("default (") {
        Some(why) => {
            let why = why.trim_end_matches(')');
            let why = why.split([':', '(']).next().unwrap_or(why).trim();
            format!("default: {why}")
        }
        None => rule.to_string(),
    }
}

/// How jobs were routed: class, what decided it, variant, first choice, the model that
/// answered, and how many models a constraint removed.
fn print_routes(report: &DemoReport) {
    type Key = (String, String, String, String, String, usize);
    let mut routes: BTreeMap<Key, usize> = BTreeMap::new();
    for r in &report.results {
        let first = r.route.candidates.first().cloned().unwrap_or_default();
        let key = (
            r.route.class.clone(),
            short_rule(&r.route.rule),
            r.variant.clone().unwrap_or_else(|| "-".into()),
            first,
            r.model.clone(),
            r.route.dropped.len(),
        );
        *routes.entry(key).or_default() += 1;
    }
    println!(
        "{:<8} {:<38} {:<14} {:<12} {:<12} {:>5}  note",
        "class", "decided by", "variant", "first choice", "answered by", "jobs"
    );
    for ((class, rule, variant, first, model, dropped), n) in &routes {
        let mut notes = Vec::new();
        if dropped > &0 {
            notes.push(format!("{dropped} model(s) dropped by policy"));
        }
        if first != model {
            notes.push("fallback".to_string());
        }
        println!(
            "{class:<8} {rule:<38} {variant:<14} {first:<12} {model:<12} {n:>5}  {}",
            notes.join(", ")
        );
    }
}

/// The A/B split: jobs and cost per variant.
fn print_variants(report: &DemoReport) {
    let mut by: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for r in &report.results {
        let e = by
            .entry(r.variant.clone().unwrap_or_else(|| "-".into()))
            .or_default();
        e.0 += 1;
        e.1 += r.cost_usd;
    }
    if by.len() < 2 {
        return;
    }
    let total: usize = by.values().map(|(n, _)| n).sum();
    let list: Vec<String> = by
        .iter()
        .map(|(v, (n, cost))| {
            format!(
                "{v} {n} jobs ({:.0}%, {:.6} USD/job)",
                100.0 * *n as f64 / total as f64,
                cost / *n as f64
            )
        })
        .collect();
    println!("A/B variants (sticky per ticket key): {}", list.join("; "));
}

/// The `q` quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn print_summary(report: &DemoReport, config: &Config, elapsed: Duration) {
    println!();
    print_routes(report);
    print_variants(report);
    let classified: Vec<f64> = report
        .results
        .iter()
        .filter_map(|r| r.route.classifier.as_ref().map(|c| c.cost_usd))
        .collect();
    if !classified.is_empty() {
        println!(
            "classifier calls: {} ({:.6} USD, included in the job costs below)",
            classified.len(),
            classified.iter().sum::<f64>()
        );
    }
    println!();
    print_models(report, config);
    print_failures(report, config);
    let retried = report.results.iter().filter(|r| r.attempts > 1).count();
    println!(
        "jobs answered after a retry or fallback: {retried}; wall time {:.1}s",
        elapsed.as_secs_f64()
    );
}

/// The demo's last line: every ticket accounted for.
fn print_tally(report: &DemoReport) {
    println!();
    println!(
        "jobs={} results={} dead_letters={} lost={}",
        report.jobs,
        report.results.len(),
        report.dead_letters.len(),
        report.lost
    );
}

/// One row per model: jobs, cost, latency percentiles, fallbacks; the total, and what the
/// same answers would have cost on the premium model.
fn print_models(report: &DemoReport, config: &Config) {
    println!(
        "{:<12} {:>6} {:>12} {:>9} {:>9} {:>10}",
        "model", "jobs", "cost_usd", "p50_ms", "p99_ms", "fallbacks"
    );
    for m in &config.models {
        let rs: Vec<&JobResult> = report
            .results
            .iter()
            .filter(|r| r.model == m.name)
            .collect();
        if rs.is_empty() {
            continue;
        }
        let mut lat: Vec<u64> = rs.iter().map(|r| r.latency_ms).collect();
        lat.sort_unstable();
        let cost: f64 = rs.iter().map(|r| r.cost_usd).sum::<f64>() + 0.0;
        let fallbacks = rs
            .iter()
            .filter(|r| r.route.candidates.first() != Some(&r.model))
            .count();
        println!(
            "{:<12} {:>6} {:>12.6} {:>9} {:>9} {:>10}",
            m.name,
            rs.len(),
            cost,
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
            fallbacks
        );
    }
    let total_cost: f64 = report.results.iter().map(|r| r.cost_usd).sum();
    println!(
        "{:<12} {:>6} {:>12.6}",
        "total",
        report.results.len(),
        total_cost
    );
    let premium_only: f64 = report
        .results
        .iter()
        .map(|r| {
            config.model("premium").map_or(0.0, |p| {
                p.cost_usd(r.usage.input_tokens, r.usage.output_tokens)
            })
        })
        .sum();
    if premium_only > 0.0 {
        println!("(the same answers all on premium would have cost {premium_only:.6} USD)");
    }
}

/// Dead letters by class, the outages played, and the jobs that waited in a retry tier.
fn print_failures(report: &DemoReport, config: &Config) {
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, c) in &report.dead_letters {
        *classes.entry(c.as_str()).or_default() += 1;
    }
    if !classes.is_empty() {
        let list: Vec<String> = classes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!("dead letters by class: {}", list.join(", "));
    }
    for (name, _, from, to) in OUTAGES {
        println!(
            "simulated outage: {name} answered 503 from {:.1} s to {:.1} s after the first call",
            *from as f64 / 1000.0,
            *to as f64 / 1000.0
        );
    }
    let waited = report.results.iter().filter(|r| r.retries > 0).count();
    let first_tier = config
        .retry_tiers
        .first()
        .map_or("none".to_string(), |t| t.name.clone());
    println!("jobs answered after waiting in a retry tier: {waited} (first tier {first_tier})");
}
