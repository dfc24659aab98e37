//! `baton dlq inspect` and `baton dlq replay`: look into a dead-letter topic, or put its
//! records back to work.

use clap::{Args, Subcommand};

use super::{CliError, ClusterArgs};

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
    /// Where the topic is.
    #[command(flatten)]
    pub cluster: ClusterArgs,
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
    let (base, topic) = (select.cluster.client()?, select.topic.clone());
    let idle = std::time::Duration::from_millis(select.idle_ms);
    let records = tokio::task::spawn_blocking(move || {
        crate::kafka::tools::read_topic(&base, &topic, None, idle, std::time::Duration::MAX)
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

/// Counts the dead letters by class; with `--records`, prints each one.
pub(super) async fn dlq_inspect(args: DlqInspectArgs) -> Result<(), CliError> {
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

/// Republishes the dead letters (original value and key) to their input topic or `--to`.
pub(super) async fn dlq_replay(args: DlqReplayArgs) -> Result<(), CliError> {
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
    let producer = crate::kafka::tools::tool_producer(&args.select.cluster.client()?)?;
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
