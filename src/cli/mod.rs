//! Command-line interface: argument parsing (clap) and one file per subcommand. Each
//! subcommand maps its failure to an exit code: 2 for bad config or usage, 3 for topic drift,
//! 1 for the rest.

mod check;
mod dlq;
mod lag;
mod mock;
mod records;
mod route;
mod run;
mod status;
mod topics;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

pub use check::CheckArgs;
pub use dlq::{DlqCommand, DlqInspectArgs, DlqReplayArgs, DlqSelect};
pub use lag::LagArgs;
pub use mock::MockLlmArgs;
pub use records::{ConsumeArgs, ProduceArgs};
pub use route::RouteArgs;
pub use run::RunArgs;
pub use status::StatusArgs;
pub use topics::{TopicsApplyArgs, TopicsCommand};

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::kafka::admin::AdminError;
use crate::mock_llm::MockConfigError;
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
    /// Where jobs are: one job's state and history, or a pipeline's jobs per step and state
    /// and those stuck longer than --stuck-for, with their last error.
    Status(StatusArgs),
    /// How far behind the workers are: per topic and partition the committed offset, the log
    /// end, the lag, the consumption rate and the time to drain, and the depths of the retry
    /// tiers and dead-letter topics (where jobs stand in a pipeline: `baton status`).
    Lag(LagArgs),
    /// Measure worker throughput, CPU per 1,000 jobs and peak RSS against a real broker.
    Bench(crate::bench::BenchArgs),
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
/// demo and the benchmark, which print their own reports, only warnings). Colours only when
/// stderr is a terminal: a file or a log collector gets plain text.
pub fn init_logging(json: bool, command: &Command) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = match command {
        Command::Demo(_) | Command::Bench(_) => "warn",
        _ => "warn,baton=info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
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

/// Where a tool connects: bare bootstrap servers, or a config's `[kafka]` settings (its
/// bootstrap servers and `[kafka.common]`: TLS, SASL), as the worker connects.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Kafka bootstrap servers; overrides the config's. `BATON_BOOTSTRAP` is read when there
    /// is no config, or when the config sets none.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// A config file: the tool connects with its `[kafka]` settings (bootstrap servers, and
    /// `[kafka.common]` for a cluster that needs TLS or SASL).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

impl ClusterArgs {
    /// The client settings to connect with.
    pub fn client(&self) -> Result<rdkafka::ClientConfig, CliError> {
        match (&self.config, &self.bootstrap) {
            (Some(path), b) => {
                let config = load_config(path, b.as_deref())?;
                config.require_bootstrap()?;
                Ok(crate::kafka::client_config(&config.kafka))
            }
            (None, b) => match bootstrap_or_env(b) {
                Some(b) => Ok(crate::kafka::plain_config(&b)),
                None => Err(CliError::Usage(
                    "give --bootstrap HOST:PORT or --config FILE".into(),
                )),
            },
        }
    }
}

/// The environment variable that stands in for `--bootstrap` where nothing else names the
/// cluster. It never overrides a config's servers: a shell left with a test cluster's address
/// must not send a production config's credentials (or a DLQ replay) there.
const BOOTSTRAP_ENV: &str = "BATON_BOOTSTRAP";

/// `--bootstrap` when given, else `BATON_BOOTSTRAP` when set and not empty.
fn bootstrap_or_env(flag: &Option<String>) -> Option<String> {
    flag.clone().or_else(|| {
        std::env::var(BOOTSTRAP_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
    })
}

/// Loads a config and applies a `--bootstrap` override; `BATON_BOOTSTRAP` only fills in
/// servers the config does not set.
pub fn load_config(path: &std::path::Path, bootstrap: Option<&str>) -> Result<Config, CliError> {
    let mut config = Config::load(path)?;
    if let Some(b) = bootstrap {
        config.kafka.bootstrap_servers = b.to_string();
    } else if config.kafka.bootstrap_servers.trim().is_empty() {
        if let Some(b) = bootstrap_or_env(&None) {
            config.kafka.bootstrap_servers = b;
        }
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
        Command::Run(args) => run::run_worker(args).await,
        Command::MockLlm(args) => mock::mock_llm(args).await,
        Command::Produce(args) => records::produce(args).await,
        Command::Consume(args) => records::consume(args).await,
        Command::Topics(TopicsCommand::Apply(args)) => topics::topics_apply(args).await,
        Command::Check(args) => check::check(args),
        Command::Route(args) => route::route(args),
        Command::Dlq(DlqCommand::Inspect(args)) => dlq::dlq_inspect(args).await,
        Command::Dlq(DlqCommand::Replay(args)) => dlq::dlq_replay(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Lag(args) => lag::lag(args).await,
        Command::Bench(args) => {
            crate::bench::run(args).await?;
            Ok(())
        }
    }
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
