//! `baton lag`: how far behind a worker group is, per topic and partition, the way Kafka's
//! consumer-groups command counts it (log end minus committed offset; from the log start where
//! the group never committed), with the current consumption rate and the time to drain, and
//! the depths of the retry tiers and dead-letter topics. Where jobs stand inside a pipeline is
//! `baton status`'s to show; what the dead letters say is `baton dlq inspect`'s.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{load_config, CliError};
use crate::kafka::lag::{self, OffsetReader, Report, Topics};

/// `baton lag`
#[derive(Debug, Args)]
pub struct LagArgs {
    /// The config file: its group, its input and retry-tier topics, its dead-letter topics.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The consumer group (overrides the config's); without a config, every topic the group
    /// has committed on is shown.
    #[arg(long)]
    pub group: Option<String>,
    /// Kafka bootstrap servers; overrides the config's. `BATON_BOOTSTRAP` is read when there
    /// is no config, or when the config sets none.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Time between the two readings the rate and time to drain come from (0: one reading,
    /// no rate).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `baton lag` reads: a group and its topics (`None`: the topics it committed on).
struct Target {
    client: rdkafka::ClientConfig,
    group: String,
    topics: Option<Topics>,
}

/// Reads the group's offsets twice, `--interval` apart, and prints lag, rate and time to drain.
pub(super) async fn lag(args: LagArgs) -> Result<(), CliError> {
    let target = target(&args)?;
    let interval = args.interval;
    let report = tokio::task::spawn_blocking(move || read(&target, interval))
        .await
        .map_err(|e| CliError::Usage(format!("reading offsets: {e}")))??;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", lag::table(&report));
    }
    Ok(())
}

/// The group and topics from the config, or the group's committed topics.
fn target(args: &LagArgs) -> Result<Target, CliError> {
    if let Some(path) = &args.config {
        let config = load_config(path, args.bootstrap.as_deref())?;
        config.require_bootstrap()?;
        return Ok(Target {
            client: crate::kafka::client_config(&config.kafka),
            group: args.group.clone().unwrap_or(config.kafka.group_id.clone()),
            topics: Some(Topics::of(&config)),
        });
    }
    let (Some(group), Some(bootstrap)) = (&args.group, super::bootstrap_or_env(&args.bootstrap))
    else {
        return Err(CliError::Usage(
            "give --config FILE, or --group GROUP with --bootstrap HOST:PORT".into(),
        ));
    };
    Ok(Target {
        client: crate::kafka::plain_config(&bootstrap),
        group: group.clone(),
        topics: None,
    })
}

/// Two readings `interval` apart (one when it is zero), made into the report.
fn read(target: &Target, interval: Duration) -> Result<Report, CliError> {
    let reader = OffsetReader::new(&target.client, &target.group, Duration::from_secs(30))?;
    let topics = match &target.topics {
        Some(t) => t.clone(),
        None => Topics::committed_by(&reader)?,
    };
    Ok(lag::read_report(&reader, &target.group, &topics, interval)?)
}
