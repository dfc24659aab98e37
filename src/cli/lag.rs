//! `baton lag`: how far behind a worker group is, per topic and partition, the way Kafka's
//! consumer-groups command counts it (log end minus committed offset; from the log start where
//! the group never committed), with the current consumption rate and the time to drain, and
//! the depths of the retry tiers and dead-letter topics. Where jobs stand inside a pipeline is
//! `baton status`'s to show; what the dead letters say is `baton dlq inspect`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::{load_config, CliError};
use crate::kafka::lag::{self, LagRow, OffsetReader, PartitionOffsets};

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
    /// Kafka bootstrap servers; overrides the config's.
    #[arg(long, env = "BATON_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// Time between the two readings the rate and time to drain come from (0: one reading,
    /// no rate).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What `baton lag` reads: a group, its topics, and the topics whose depth is shown.
struct Target {
    client: rdkafka::ClientConfig,
    group: String,
    /// Consumed by the group: input topics and retry tiers.
    consumed: Vec<String>,
    /// Retry-tier topics among `consumed`.
    retry: Vec<String>,
    /// Dead-letter topics.
    dead_letters: Vec<String>,
}

/// The report, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    group: String,
    partitions: Vec<LagRow>,
    /// Records waiting in each retry-tier topic (the group's lag on it).
    retry_tiers: BTreeMap<String, i64>,
    /// Records in each dead-letter topic.
    dead_letters: BTreeMap<String, i64>,
    total_lag: i64,
    rate_per_s: Option<f64>,
    eta_s: Option<f64>,
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
        print!("{}", table(&report));
    }
    Ok(())
}

/// The group and topics from the config, or the group's committed topics.
fn target(args: &LagArgs) -> Result<Target, CliError> {
    if let Some(path) = &args.config {
        let config = load_config(path, args.bootstrap.as_deref())?;
        config.require_bootstrap()?;
        let retry: Vec<String> = config
            .steps
            .iter()
            .flat_map(|s| s.retry_topics.iter().cloned())
            .collect();
        return Ok(Target {
            client: crate::kafka::client_config(&config.kafka),
            group: args.group.clone().unwrap_or(config.kafka.group_id.clone()),
            consumed: config.input_topics(),
            retry,
            dead_letters: config
                .steps
                .iter()
                .map(|s| crate::config::TopicNames::dlq_of(&s.topic))
                .collect(),
        });
    }
    let (Some(group), Some(bootstrap)) = (&args.group, &args.bootstrap) else {
        return Err(CliError::Usage(
            "give --config FILE, or --group GROUP with --bootstrap HOST:PORT".into(),
        ));
    };
    Ok(Target {
        client: crate::kafka::plain_config(bootstrap),
        group: group.clone(),
        consumed: Vec::new(),
        retry: Vec::new(),
        dead_letters: Vec::new(),
    })
}

/// Two readings `interval` apart (one when it is zero), made into the report.
fn read(target: &Target, interval: Duration) -> Result<Report, CliError> {
    let reader = OffsetReader::new(&target.client, &target.group, Duration::from_secs(30))?;
    let (consumed, retry, dead_letters) = if target.consumed.is_empty() {
        let existing: Vec<String> = reader.partitions()?.into_iter().map(|(t, _)| t).collect();
        let mut consumed = reader.committed_topics()?;
        // The retry tiers of the inputs it committed on, even those it never committed on.
        let tiers: Vec<String> = existing
            .iter()
            .filter(|e| {
                consumed
                    .iter()
                    .any(|c| e.starts_with(&format!("{c}.retry.")))
            })
            .cloned()
            .collect();
        for t in tiers {
            if !consumed.contains(&t) {
                consumed.push(t);
            }
        }
        let retry = consumed
            .iter()
            .filter(|t| t.contains(".retry."))
            .cloned()
            .collect();
        let dlq = consumed
            .iter()
            .map(|t| crate::config::TopicNames::dlq_of(t))
            .filter(|d| existing.contains(d))
            .collect();
        (consumed, retry, dlq)
    } else {
        let t = target;
        (t.consumed.clone(), t.retry.clone(), t.dead_letters.clone())
    };
    let started = Instant::now();
    let before = if interval.is_zero() {
        Vec::new()
    } else {
        let b = reader.read(&consumed)?;
        std::thread::sleep(interval);
        b
    };
    let secs = started.elapsed().as_secs_f64();
    let after = reader.read(&consumed)?;
    let partitions = lag::rows(&before, &after, secs);
    let dlq_depths = reader.read(&dead_letters)?;
    Ok(report(&target.group, partitions, &retry, &dlq_depths))
}

/// Totals and the retry-tier and dead-letter depths around the partition rows.
fn report(
    group: &str,
    partitions: Vec<LagRow>,
    retry: &[String],
    dead_letters: &[PartitionOffsets],
) -> Report {
    let total_lag: i64 = partitions.iter().map(|r| r.lag).sum();
    let rate_per_s = partitions.iter().map(|r| r.rate_per_s).sum::<Option<f64>>();
    let eta_s = if partitions.iter().all(|r| r.rate_per_s.is_some()) {
        // The group drains as fast as its partitions together; a growing one shows on its own row.
        let eta_max = partitions
            .iter()
            .map(|r| r.eta_s)
            .collect::<Option<Vec<f64>>>();
        eta_max.map(|v| v.into_iter().fold(0.0, f64::max))
    } else {
        None
    };
    let mut retry_tiers = BTreeMap::new();
    for r in &partitions {
        if retry.contains(&r.offsets.topic) {
            *retry_tiers.entry(r.offsets.topic.clone()).or_insert(0) += r.lag;
        }
    }
    let mut dlq = BTreeMap::new();
    for d in dead_letters {
        *dlq.entry(d.topic.clone()).or_insert(0) += d.depth();
    }
    Report {
        group: group.to_string(),
        partitions,
        retry_tiers,
        dead_letters: dlq,
        total_lag,
        rate_per_s,
        eta_s,
    }
}

/// The human form: one line per partition, then the totals and depths.
fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = format!("group {}\n", r.group);
    let width = r
        .partitions
        .iter()
        .map(|p| p.offsets.topic.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        out,
        "{:<width$}  {:>9}  {:>10}  {:>10}  {:>8}  {:>8}  {:>8}",
        "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "RATE/S", "ETA"
    );
    for p in &r.partitions {
        let o = &p.offsets;
        let committed = o.committed.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:>10}  {:>10}  {:>8}  {:>8}  {:>8}",
            o.topic,
            o.partition,
            committed,
            o.log_end,
            p.lag,
            p.rate_per_s.map_or("-".into(), |x| format!("{x:.1}")),
            duration(p.eta_s),
        );
    }
    let _ = writeln!(
        out,
        "total lag {} records, consuming {}/s, drained in {}",
        r.total_lag,
        r.rate_per_s.map_or("-".into(), |x| format!("{x:.1}")),
        duration(r.eta_s)
    );
    for (t, n) in &r.retry_tiers {
        let _ = writeln!(out, "retry tier   {t}: {n} waiting");
    }
    for (t, n) in &r.dead_letters {
        let _ = writeln!(
            out,
            "dead letters {t}: {n} (see `baton dlq inspect --topic {t}`)"
        );
    }
    out
}

/// `3m20s`, `-` when unknown (not shrinking or not measured).
fn duration(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) => humantime::format_duration(Duration::from_secs(s.ceil() as u64)).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(topic: &str, committed: i64, end: i64) -> PartitionOffsets {
        PartitionOffsets {
            topic: topic.into(),
            partition: 0,
            committed: Some(committed),
            log_start: 0,
            log_end: end,
        }
    }

    #[test]
    fn totals_and_depths_add_up_and_the_slowest_partition_sets_the_time_to_drain() {
        let before = [offsets("in", 0, 100), offsets("in.retry.30s", 0, 10)];
        let after = [offsets("in", 50, 100), offsets("in.retry.30s", 5, 10)];
        let rows = lag::rows(&before, &after, 10.0);
        let dlq = [offsets("in.dlq", 0, 7)];
        let r = report("g", rows, &["in.retry.30s".to_string()], &dlq);
        assert_eq!(r.total_lag, 55);
        assert_eq!(r.rate_per_s, Some(5.5));
        // in: 50 left at 5/s = 10 s; the retry tier: 5 left at 0.5/s = 10 s.
        assert_eq!(r.eta_s, Some(10.0));
        assert_eq!(r.retry_tiers.get("in.retry.30s"), Some(&5));
        assert_eq!(r.dead_letters.get("in.dlq"), Some(&7));
        let text = table(&r);
        assert!(
            text.contains("total lag 55 records, consuming 5.5/s, drained in 10s"),
            "{text}"
        );
    }
}
