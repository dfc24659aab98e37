//! `baton run`: a worker on a config, after checking the topics it needs exist.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::{load_config, shutdown_on_signals, CliError};
use crate::kafka::admin::TopicStatus;
use crate::pipeline::StepRunner;

/// `baton run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Kafka bootstrap servers; overrides the config's. `BATON_BOOTSTRAP` is read only when
    /// the config sets none.
    #[arg(long)]
    pub bootstrap: Option<String>,
}

/// Runs a worker until SIGINT or SIGTERM, serving `/metrics` when configured.
pub(super) async fn run_worker(args: RunArgs) -> Result<(), CliError> {
    let config = load_config(&args.config, args.bootstrap.as_deref())?;
    config.require_bootstrap()?;
    // Fail fast on missing topics: the worker would otherwise retry every output forever.
    let plan = crate::kafka::topics::plan(&config);
    let status = config.worker.track_status;
    let needed: Vec<_> = plan
        .into_iter()
        .filter(|t| match t.kind {
            "input" | "retry" | "dlq" | "results" | "review" | "memory" => true,
            "status" => status,
            _ => false,
        })
        .collect();
    let report =
        crate::kafka::admin::apply(&crate::kafka::client_config(&config.kafka), &needed, true)
            .await?;
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
