//! `baton status`: where jobs are, from the compacted status topic. With a job id, that job's
//! latest state and its history; with `--pipeline`, how many jobs stand where (per step and
//! state) and which have not moved for `--stuck-for`, with their last error. Consumer lag is
//! `baton lag`'s to show; dead letters are `baton dlq inspect`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use rdkafka::ClientConfig;

use super::{load_config, CliError};
use crate::envelope::StatusRecord;
use crate::pipeline::status::Board;

/// `baton status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show this job's state and history.
    pub job_id: Option<String>,
    /// Count this pipeline's jobs per step and state.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// With --pipeline: list jobs whose state has not changed for this long (e.g. `10m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stuck_for: Option<Duration>,
    /// The config file (gives the bootstrap servers, the status topic and step order).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers; overrides the config's. `BATON_BOOTSTRAP` is read when there
    /// is no config, or when the config sets none.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// The status topic, when there is no config.
    #[arg(long, default_value = "baton.status")]
    pub topic: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads the status topic to its end and prints what was asked.
pub(super) async fn status(args: StatusArgs) -> Result<(), CliError> {
    let (base, topic, steps) = source(&args)?;
    let records = tokio::task::spawn_blocking(move || {
        crate::kafka::tools::read_to_end(&base, &topic, Duration::from_secs(60))
    })
    .await
    .map_err(|e| CliError::Usage(format!("reading the status topic: {e}")))??;
    let mut board = Board::default();
    for m in &records {
        let value = rdkafka::Message::payload(m).unwrap_or_default();
        if let Ok(s) = serde_json::from_slice::<StatusRecord>(value) {
            board.add(s);
        }
    }
    match (&args.job_id, &args.pipeline) {
        (Some(id), _) => one_job(&board, id, args.json),
        (None, Some(p)) => {
            let order = steps.get(p).cloned().unwrap_or_default();
            pipeline(&board, p, &order, args.stuck_for, args.json);
            Ok(())
        }
        (None, None) => Err(CliError::Usage(
            "give a job id, or --pipeline NAME (see `baton status --help`)".into(),
        )),
    }
}

/// Each pipeline's steps, in order.
type StepOrder = BTreeMap<String, Vec<String>>;

/// The client settings (the config's, with its security settings, or bare bootstrap servers),
/// the status topic, and each pipeline's steps in order (from the config).
fn source(args: &StatusArgs) -> Result<(ClientConfig, String, StepOrder), CliError> {
    match &args.config {
        Some(path) => {
            let config = load_config(path, args.bootstrap.as_deref())?;
            config.require_bootstrap()?;
            let mut steps = StepOrder::new();
            for s in &config.steps {
                steps
                    .entry(s.pipeline.clone())
                    .or_default()
                    .push(s.name.clone());
            }
            let base = crate::kafka::client_config(&config.kafka);
            Ok((base, config.topics.status, steps))
        }
        None => {
            let b = super::bootstrap_or_env(&args.bootstrap).ok_or_else(|| {
                CliError::Usage("give --bootstrap HOST:PORT or --config FILE".into())
            })?;
            Ok((
                crate::kafka::plain_config(&b),
                args.topic.clone(),
                BTreeMap::new(),
            ))
        }
    }
}

fn one_job(board: &Board, id: &str, json: bool) -> Result<(), CliError> {
    let history = board
        .jobs
        .get(id)
        .ok_or_else(|| CliError::Usage(format!("no status for job {id:?}")))?;
    if json {
        println!(
            "{}",
            serde_json::to_string(history).expect("status records serialize")
        );
        return Ok(());
    }
    let latest = &history[history.len() - 1];
    println!(
        "job {id}: pipeline {} step {} {} since {} (attempts {})",
        latest.pipeline,
        latest.step,
        latest.state.as_str(),
        latest.at,
        latest.attempts
    );
    if !latest.steps_done.is_empty() {
        println!("  steps done: {}", latest.steps_done.join(", "));
    }
    println!("  history:");
    for s in history {
        println!("    {}", line(s));
    }
    Ok(())
}

/// One update as a line: when, step, state, and why when it failed.
fn line(s: &StatusRecord) -> String {
    let mut l = format!("{}  {:<12} {:<9}", s.at, s.step, s.state.as_str());
    if let Some(m) = &s.model {
        l.push_str(&format!(" model={m}"));
    }
    if let Some(c) = s.error_class {
        l.push_str(&format!(" error_class={}", c.as_str()));
    }
    if let Some(d) = s.due_ms {
        l.push_str(&format!(" due_ms={d}"));
    }
    if let Some(e) = &s.error {
        l.push_str(&format!(" error={e:?}"));
    }
    l
}

fn pipeline(board: &Board, p: &str, order: &[String], stuck_for: Option<Duration>, json: bool) {
    let mut counts = board.counts(p);
    let rank = |step: &str| order.iter().position(|s| s == step).unwrap_or(usize::MAX);
    counts.sort_by(|a, b| (rank(&a.0 .0), &a.0 .0, a.0 .1).cmp(&(rank(&b.0 .0), &b.0 .0, b.0 .1)));
    let now = crate::util::unix_ms();
    let stuck = stuck_for
        .map(|d| board.stuck(p, d.as_millis() as u64, now))
        .unwrap_or_default();
    if json {
        let counts: Vec<_> = counts
            .iter()
            .map(|((step, state), n)| serde_json::json!({"step": step, "state": state, "jobs": n}))
            .collect();
        let stuck: Vec<_> = stuck
            .iter()
            .map(|s| serde_json::json!({"for_ms": s.for_ms, "latest": s.latest}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"pipeline": p, "counts": counts, "stuck": stuck})
        );
        return;
    }
    println!("pipeline {p}:");
    for ((step, state), n) in &counts {
        println!("  {step:<16} {:<9} {n}", state.as_str());
    }
    if let Some(d) = stuck_for {
        println!(
            "stuck for {} or more: {}",
            humantime::format_duration(d),
            stuck.len()
        );
        for s in &stuck {
            let l = &s.latest;
            let err = l.error_class.map_or("-", |c| c.as_str());
            println!(
                "  {:<24} {:<12} {:<9} for {:>6.1}s  last error: {err}",
                l.job_id,
                l.step,
                l.state.as_str(),
                s.for_ms as f64 / 1000.0
            );
        }
    }
}
