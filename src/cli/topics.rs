//! `baton topics apply`: create or check the topics a config implies.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{load_config, CliError};
use crate::kafka::admin::TopicStatus;

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
    /// Kafka bootstrap servers; overrides the config's. `BATON_BOOTSTRAP` is read only when
    /// the config sets none.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Report only; create nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Creates the missing topics and reports each one; drift fails with exit code 3.
pub(super) async fn topics_apply(args: TopicsApplyArgs) -> Result<(), CliError> {
    let config = load_config(&args.config, args.bootstrap.as_deref())?;
    config.require_bootstrap()?;
    let plan = crate::kafka::topics::plan(&config);
    let report = crate::kafka::admin::apply(
        &crate::kafka::client_config(&config.kafka),
        &plan,
        args.dry_run,
    )
    .await?;
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
