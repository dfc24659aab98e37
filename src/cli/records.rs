//! `baton produce` and `baton consume`: publish JSON Lines jobs, read records with headers.

use clap::Args;

use super::{CliError, ClusterArgs};

/// `baton produce`
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to publish to.
    #[arg(long)]
    pub topic: String,
    /// Where the topic is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// JSON Lines file, or - for stdin.
    pub input: String,
}

/// `baton consume`
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read (from the beginning).
    #[arg(long)]
    pub topic: String,
    /// Where the topic is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<usize>,
    /// Stop after this many milliseconds without a record.
    #[arg(long, default_value_t = 5000)]
    pub idle_ms: u64,
}

/// Publishes every line of `args.input` to `args.topic`.
pub(super) async fn produce(args: ProduceArgs) -> Result<(), CliError> {
    let stats =
        crate::kafka::tools::produce_command(&args.cluster.client()?, &args.topic, &args.input)
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

/// Prints `args.topic`'s records, from the beginning, as JSON lines.
pub(super) async fn consume(args: ConsumeArgs) -> Result<(), CliError> {
    let idle = std::time::Duration::from_millis(args.idle_ms);
    let base = args.cluster.client()?;
    let records = tokio::task::spawn_blocking(move || {
        crate::kafka::tools::read_topic(
            &base,
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
