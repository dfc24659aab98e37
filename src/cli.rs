//! Command-line interface: argument parsing (clap) and one function per subcommand. Each
//! subcommand maps its failure to an exit code: 2 for bad config or usage, 1 for the rest.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::kafka::admin::{AdminError, TopicStatus};
use crate::mock_llm::{MockConfigError, MockLlm, MockLlmConfig};
use crate::pipeline::StepRunner;
use crate::worker::WorkerError;

/// baton: LLM orchestration over Apache Kafka.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about, long_about = None)]
pub struct Cli {
    /// Log as JSON lines instead of text (logs go to stderr; RUST_LOG filters them).
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole flow in one process with nothing installed: an embedded Kafka-protocol
    /// cluster, simulated providers, sample support tickets, a worker, and a summary.
    Demo(crate::demo::DemoArgs),
    /// Run a worker: consume the configured pipeline topics, route, call models, publish.
    Run(RunArgs),
    /// Serve simulated providers (OpenAI wire format) on loopback, for tests and load tests.
    MockLlm(MockLlmArgs),
    /// Publish jobs from a JSON Lines file (or - for stdin) to a topic.
    Produce(ProduceArgs),
    /// Print a topic's records, with headers, as JSON lines.
    Consume(ConsumeArgs),
    /// Manage the topics a config implies.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Validate a config file and print what it defines.
    Check(CheckArgs),
    /// Show how jobs would be routed: class, rule, variant, each model kept or dropped and why,
    /// estimated tokens and cost, and the final order. Calls nothing.
    Route(RouteArgs),
    /// Look into a dead-letter topic, or put its records back to work.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Measure worker throughput, CPU per 1,000 jobs and peak RSS against a real broker.
    Bench(crate::bench::BenchArgs),
}

/// `baton run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Kafka bootstrap servers; overrides `kafka.bootstrap_servers`.
    #[arg(long, env = "BATON_BOOTSTRAP")]
    pub bootstrap: Option<String>,
}

/// `baton mock-llm`
#[derive(Debug, Args)]
pub struct MockLlmArgs {
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to bind; loopback unless you mean it.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Behaviour per model (TOML); every model echoes after a short delay when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `baton produce`
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to publish to.
    #[arg(long)]
    pub topic: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "BATON_BOOTSTRAP")]
    pub bootstrap: String,
    /// JSON Lines file, or - for stdin.
    pub input: String,
}

/// `baton consume`
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read (from the beginning).
    #[arg(long)]
    pub topic: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "BATON_BOOTSTRAP")]
    pub bootstrap: String,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<usize>,
    /// Stop after this many milliseconds without a record.
    #[arg(long, default_value_t = 5000)]
    pub idle_ms: u64,
}

/// `baton topics ...`
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the topics declared in topics/ for this config; report drift of existing ones.
    Apply(TopicsApplyArgs),
}

/// `baton topics apply`
#[derive(Debug, Args)]
pub struct TopicsApplyArgs {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Kafka bootstrap servers; overrides `kafka.bootstrap_servers`.
    #[arg(long, env = "BATON_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Report only; create nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `baton check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
}

/// `baton dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count dead letters by error class; with --records, show each one's detail.
    Inspect(DlqInspectArgs),
    /// Republish dead letters (original value and key) with a `baton-replayed-from` header.
    Replay(DlqReplayArgs),
}

/// What both `dlq` commands read.
#[derive(Debug, Args)]
pub struct DlqSelect {
    /// The dead-letter topic (`<input>.dlq`).
    #[arg(long)]
    pub topic: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "BATON_BOOTSTRAP")]
    pub bootstrap: String,
    /// Only this error class (e.g. `provider_timeout`).
    #[arg(long)]
    pub error_class: Option<String>,
    /// Only dead letters that failed within this long (e.g. `30m`, `2h`, `7d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Stop reading after this many milliseconds without a record.
    #[arg(long, default_value_t = 3000)]
    pub idle_ms: u64,
}

/// `baton dlq inspect`
#[derive(Debug, Args)]
pub struct DlqInspectArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub select: DlqSelect,
    /// Also print each record: headers, key and a readable excerpt.
    #[arg(long)]
    pub records: bool,
}

/// `baton dlq replay`
#[derive(Debug, Args)]
pub struct DlqReplayArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub select: DlqSelect,
    /// `original` (the step's input topic) or a topic name.
    #[arg(long, default_value = "original")]
    pub to: String,
    /// Show what would be replayed; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `baton route`
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Print the whole decision trace (otherwise one line per job).
    #[arg(long)]
    pub explain: bool,
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// The step, as `pipeline.step`; the first step of the job's pipeline (or of the first
    /// pipeline) when absent.
    #[arg(long)]
    pub step: Option<String>,
    /// Routing key (the record key); the job's `conversation_id`, else its `id`, when absent.
    #[arg(long)]
    pub key: Option<String>,
    /// Assume the route's classifier answers this (the classifier is not called).
    #[arg(long)]
    pub class: Option<String>,
    /// Print the decision as the result envelope's `route` object (JSON) instead.
    #[arg(long)]
    pub json: bool,
    /// A job envelope (JSON), a JSON Lines file of them, or - for stdin.
    pub job: String,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A config key is missing or wrong for this command.
    #[error("{0}")]
    ConfigKey(#[from] ConfigError),
    /// The mock-llm config is invalid.
    #[error("mock-llm config: {0}")]
    MockConfig(#[from] MockConfigError),
    /// The worker failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// Topic administration failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// A Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A file or socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The demo failed.
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    /// The benchmark failed.
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    /// Some records could not be published.
    #[error("{failed} of {total} records could not be published")]
    ProduceFailed {
        /// Failed records.
        failed: u64,
        /// All records.
        total: u64,
    },
    /// Topics the worker reads or writes do not exist.
    #[error("missing topics: {0} (create them with `baton topics apply --config FILE`)")]
    MissingTopics(String),
    /// Topics differ from their declarations.
    #[error("{0} topic(s) differ from their declarations")]
    Drift(usize),
    /// The command line names something that does not exist or cannot be read.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_)
            | CliError::ConfigKey(_)
            | CliError::MockConfig(_)
            | CliError::Usage(_) => 2,
            CliError::Drift(_) => 3,
            _ => 1,
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default: info for baton, warnings for the rest; the
/// demo and the benchmark, which print their own reports, only warnings).
pub fn init_logging(json: bool, command: &Command) {
    use tracing_subscriber::EnvFilter;
    let default = match command {
        Command::Demo(_) | Command::Bench(_) => "warn",
        _ => "warn,baton=info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        if let Err(e) = &term {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the worker");
        }
        let sigterm = async move {
            match term {
                Ok(mut s) => s.recv().await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = sigterm => tracing::info!("SIGTERM received"),
        }
        t.cancel();
    });
    token
}

/// Loads a config and applies a `--bootstrap` override.
pub fn load_config(path: &std::path::Path, bootstrap: Option<&str>) -> Result<Config, CliError> {
    let mut config = Config::load(path)?;
    if let Some(b) = bootstrap {
        config.kafka.bootstrap_servers = b.to_string();
    }
    Ok(config)
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Demo(args) => {
            crate::demo::run(args).await?;
            Ok(())
        }
        Command::Run(args) => run_worker(args).await,
        Command::MockLlm(args) => mock_llm(args).await,
        Command::Produce(args) => {
            let stats =
                crate::kafka::tools::produce_command(&args.bootstrap, &args.topic, &args.input)
                    .await?;
            eprintln!("produced {} record(s) to {}", stats.sent, args.topic);
            if stats.failed > 0 {
                return Err(CliError::ProduceFailed {
                    failed: stats.failed,
                    total: stats.sent + stats.failed,
                });
            }
            Ok(())
        }
        Command::Consume(args) => {
            let idle = std::time::Duration::from_millis(args.idle_ms);
            let records = tokio::task::spawn_blocking(move || {
                crate::kafka::tools::read_topic(
                    &args.bootstrap,
                    &args.topic,
                    args.count,
                    idle,
                    std::time::Duration::MAX,
                )
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            for r in &records {
                println!("{}", crate::kafka::tools::record_json(r));
            }
            Ok(())
        }
        Command::Topics(TopicsCommand::Apply(args)) => topics_apply(args).await,
        Command::Check(args) => {
            let config = Config::load(&args.config)?;
            println!("{}: ok", args.config.display());
            println!(
                "  models: {}",
                config
                    .models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for s in &config.steps {
                println!(
                    "  step {}.{}: consumes {} -> {} (route {})",
                    s.pipeline, s.name, s.topic, s.output_topic, config.routes[s.route].name
                );
            }
            for r in &config.routes {
                println!("  route {}:", r.name);
                for v in &r.variants {
                    let indent = match &v.name {
                        Some(n) => {
                            println!("    variant {n} (weight {}):", v.weight);
                            "      "
                        }
                        None => "    ",
                    };
                    for (c, cc) in r.classes.iter().zip(&v.classes) {
                        println!(
                            "{indent}class {c}{}: {} [{}]",
                            if r.classes[r.default_class] == *c {
                                " (default)"
                            } else {
                                ""
                            },
                            cc.models
                                .iter()
                                .map(|&m| config.models[m].name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            cc.strategy.as_str()
                        );
                    }
                }
                if !r.sensitivities.is_empty() {
                    println!(
                        "    every class can serve: {}",
                        r.sensitivities
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Ok(())
        }
        Command::Route(args) => route(args),
        Command::Dlq(DlqCommand::Inspect(args)) => dlq_inspect(args).await,
        Command::Dlq(DlqCommand::Replay(args)) => dlq_replay(args).await,
        Command::Bench(args) => {
            crate::bench::run(args).await?;
            Ok(())
        }
    }
}

/// Reads the dead letters `select` picks, with their records.
async fn read_dead_letters(
    select: &DlqSelect,
) -> Result<
    Vec<(
        crate::kafka::dlq::DeadLetter,
        rdkafka::message::OwnedMessage,
    )>,
    CliError,
> {
    let (bootstrap, topic) = (select.bootstrap.clone(), select.topic.clone());
    let idle = std::time::Duration::from_millis(select.idle_ms);
    let records = tokio::task::spawn_blocking(move || {
        crate::kafka::tools::read_topic(&bootstrap, &topic, None, idle, std::time::Duration::MAX)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    let filter = crate::kafka::dlq::Filter {
        error_class: select.error_class.clone(),
        since: select.since,
    };
    let now = std::time::SystemTime::now();
    Ok(records
        .into_iter()
        .map(|m| (crate::kafka::dlq::DeadLetter::of(&m), m))
        .filter(|(d, _)| d.matches(&filter, now))
        .collect())
}

async fn dlq_inspect(args: DlqInspectArgs) -> Result<(), CliError> {
    let letters = read_dead_letters(&args.select).await?;
    let only: Vec<_> = letters.iter().map(|(d, _)| d.clone()).collect();
    println!("{}: {} dead letter(s)", args.select.topic, only.len());
    for (class, n) in crate::kafka::dlq::by_class(&only) {
        println!("  {class:<24} {n}");
    }
    if args.records {
        for (d, m) in &letters {
            println!();
            println!(
                "{}/{} job {} ({}) failed at {}{}",
                d.partition,
                d.offset,
                d.job_id,
                d.error_class,
                d.failed_at,
                if d.last_model.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", d.last_model)
                }
            );
            println!("  error:   {}", d.error);
            println!("  key:     {}", d.key.as_deref().unwrap_or("(none)"));
            println!("  value:   {}", d.excerpt);
            println!(
                "  headers: {}",
                crate::kafka::tools::record_json(m)["headers"]
            );
        }
    }
    Ok(())
}

async fn dlq_replay(args: DlqReplayArgs) -> Result<(), CliError> {
    let target =
        crate::kafka::dlq::replay_target(&args.select.topic, &args.to).map_err(CliError::Usage)?;
    let letters = read_dead_letters(&args.select).await?;
    if args.dry_run {
        for (d, _) in &letters {
            println!(
                "would replay {}/{} job {} ({}) to {target}",
                d.partition, d.offset, d.job_id, d.error_class
            );
        }
        println!("{} record(s) would be replayed to {target}", letters.len());
        return Ok(());
    }
    let producer = crate::kafka::tools::tool_producer(&args.select.bootstrap)?;
    let mut failed = 0u64;
    for (_, m) in &letters {
        use rdkafka::Message;
        let mut record = rdkafka::producer::FutureRecord::to(&target)
            .headers(crate::kafka::dlq::replay_headers(m));
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        if producer
            .send(
                record,
                rdkafka::util::Timeout::After(std::time::Duration::from_secs(30)),
            )
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    let total = letters.len() as u64;
    println!("replayed {} record(s) to {target}", total - failed);
    if failed > 0 {
        return Err(CliError::ProduceFailed { failed, total });
    }
    Ok(())
}

fn route(args: RouteArgs) -> Result<(), CliError> {
    let config = Config::load(&args.config)?;
    let text = if args.job == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.job)?
    };
    let trimmed = text.trim();
    // One pretty-printed job, or JSON Lines.
    let jobs: Vec<&str> = if serde_json::from_str::<serde_json::Value>(trimmed).is_ok() {
        vec![trimmed]
    } else {
        trimmed.lines().filter(|l| !l.trim().is_empty()).collect()
    };
    for (n, raw) in jobs.iter().enumerate() {
        let job: crate::envelope::Job = serde_json::from_str(raw)
            .map_err(|e| CliError::Usage(format!("job {}: not a job envelope: {e}", n + 1)))?;
        let step = match &args.step {
            Some(s) => config
                .steps
                .iter()
                .find(|st| format!("{}.{}", st.pipeline, st.name) == *s)
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "unknown step {s:?} (steps: {})",
                        config
                            .steps
                            .iter()
                            .map(|st| format!("{}.{}", st.pipeline, st.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
            None => match &job.pipeline {
                Some(p) => config
                    .steps
                    .iter()
                    .find(|st| &st.pipeline == p)
                    .ok_or_else(|| {
                        CliError::Usage(format!("job {}: unknown pipeline {p:?}", job.id))
                    })?,
                None => &config.steps[0],
            },
        };
        let key = args.key.clone().unwrap_or_else(|| {
            job.conversation_id
                .clone()
                .unwrap_or_else(|| job.id.clone())
        });
        let decision =
            match crate::router::decide_offline(&config, step, &job, &key, args.class.as_deref()) {
                Ok(d) => d,
                Err(e) => *e.decision,
            };
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&decision.record).expect("decisions serialize")
            );
        } else if args.explain {
            if n > 0 {
                println!();
            }
            print!(
                "{}",
                crate::router::explain::render(&config, step, &job, &key, &decision)
            );
        } else {
            println!(
                "{}: class {} ({}){} -> {}",
                job.id,
                decision.record.class,
                decision.record.rule,
                decision
                    .record
                    .variant
                    .as_deref()
                    .map_or(String::new(), |v| format!(", variant {v}")),
                if decision.candidates.is_empty() {
                    "policy_unsatisfiable".to_string()
                } else {
                    decision.record.candidates.join(" -> ")
                }
            );
        }
    }
    Ok(())
}

async fn run_worker(args: RunArgs) -> Result<(), CliError> {
    let config = load_config(&args.config, args.bootstrap.as_deref())?;
    config.require_bootstrap()?;
    // Fail fast on missing topics: the worker would otherwise retry every output forever.
    let plan = crate::kafka::topics::plan(&config);
    let needed: Vec<_> = plan
        .into_iter()
        .filter(|t| matches!(t.kind, "input" | "retry" | "dlq" | "results"))
        .collect();
    let report = crate::kafka::admin::apply(&config.kafka.bootstrap_servers, &needed, true).await?;
    let missing: Vec<String> = report
        .into_iter()
        .filter(|r| r.status == TopicStatus::Missing)
        .map(|r| r.name)
        .collect();
    if !missing.is_empty() {
        return Err(CliError::MissingTopics(missing.join(", ")));
    }
    let config = Arc::new(config);
    let runner = StepRunner::from_config(config.clone())?;
    let shutdown = shutdown_on_signals();
    if let Some(addr) = config.worker.metrics_listen {
        let handle = crate::telemetry::install();
        let bound = crate::telemetry::serve(addr, handle, shutdown.clone()).await?;
        tracing::info!(%bound, "metrics on http://{bound}/metrics");
    }
    crate::worker::run(config, runner, shutdown).await?;
    Ok(())
}

async fn mock_llm(args: MockLlmArgs) -> Result<(), CliError> {
    let config = match &args.config {
        Some(p) => MockLlmConfig::load(p)?,
        None => MockLlmConfig::default(),
    };
    let mock = MockLlm::start(std::net::SocketAddr::new(args.host, args.port), config).await?;
    // One line on stdout so scripts and tests can find the port.
    println!("mock-llm listening on {}", mock.base_url());
    shutdown_on_signals().cancelled().await;
    mock.shutdown().await;
    Ok(())
}

async fn topics_apply(args: TopicsApplyArgs) -> Result<(), CliError> {
    let config = load_config(&args.config, args.bootstrap.as_deref())?;
    config.require_bootstrap()?;
    let plan = crate::kafka::topics::plan(&config);
    let report =
        crate::kafka::admin::apply(&config.kafka.bootstrap_servers, &plan, args.dry_run).await?;
    let mut drifted = 0;
    for r in &report {
        let status = match &r.status {
            TopicStatus::Created => "created".to_string(),
            TopicStatus::Ok => "ok".to_string(),
            TopicStatus::Missing => "missing".to_string(),
            TopicStatus::Drift(d) => {
                drifted += 1;
                format!("drift: {}", d.join(", "))
            }
        };
        println!("{:<8} {:<48} {}", r.kind, r.name, status);
    }
    if drifted > 0 {
        return Err(CliError::Drift(drifted));
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard limit: thousands of in-flight HTTP calls need
/// thousands of sockets. Best effort; failure is only logged.
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-files limit");
            }
        }
    }
}
