//! The demo's second part: the guide's document pipeline (`examples/contracts.toml`), a few
//! sample contracts through extract → classify → summarize, on the same embedded cluster and
//! simulated providers. It prints each stage's counts (from the status topic, as `baton
//! status` reads them), one contract's full trail, and one contract flagged for review.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use super::DemoError;
use crate::config::Config;
use crate::envelope::{JobResult, StatusRecord};
use crate::kafka::headers;
use crate::mock_llm::MockLlm;
use crate::pipeline::status::Board;
use crate::pipeline::StepRunner;

/// The contracts pipeline (`examples/contracts.toml`).
pub const CONFIG: &str = include_str!("../../examples/contracts.toml");
/// Sample contracts, one job per line.
pub const CONTRACTS: &str = include_str!("../../examples/contracts.jsonl");
/// The steps' JSON Schemas, as `examples/schemas/` has them.
const SCHEMAS: [(&str, &str); 3] = [
    (
        "contract-extract.json",
        include_str!("../../examples/schemas/contract-extract.json"),
    ),
    (
        "contract-classify.json",
        include_str!("../../examples/schemas/contract-classify.json"),
    ),
    (
        "contract-summary.json",
        include_str!("../../examples/schemas/contract-summary.json"),
    ),
];

/// How many sample contracts the demo sends.
pub const CONTRACTS_IN_DEMO: usize = 6;

/// What the contracts part saw.
#[derive(Debug, Clone, Default)]
pub struct ContractsReport {
    /// Final results.
    pub results: Vec<JobResult>,
    /// Review copies: (job id, reason, the step's result).
    pub flagged: Vec<(String, String, JobResult)>,
    /// The status board.
    pub counts: Vec<((String, crate::envelope::JobState), usize)>,
}

/// The contracts config pointed at `mock` and the demo's Kafka (`bootstrap`); `prefix` names
/// its topics apart on a real cluster.
pub fn config(mock: &MockLlm, bootstrap: &str, prefix: &str) -> Result<Config, DemoError> {
    let dir = schema_dir()?;
    let mut config = Config::from_toml(CONFIG, Some(&dir))?;
    for m in &mut config.models {
        m.base_url = mock.base_url();
        m.api_key_env = None;
    }
    config.worker.metrics_listen = None;
    config.worker.shutdown_timeout = Duration::from_secs(10);
    config.kafka.bootstrap_servers = bootstrap.to_string();
    config.kafka.group_id = format!("{prefix}contracts-workers");
    super::rebase_topics(&mut config, prefix);
    Ok(config)
}

/// Writes the embedded schemas where the config's `schema_file`s point.
fn schema_dir() -> Result<PathBuf, DemoError> {
    let dir = std::env::temp_dir().join(format!("baton-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("schemas"))?;
    for (name, text) in SCHEMAS {
        std::fs::write(dir.join("schemas").join(name), text)?;
    }
    Ok(dir)
}

/// Runs the contracts through `config`'s pipeline with a worker of its own.
pub async fn run(config: Config, timeout: Duration) -> Result<ContractsReport, DemoError> {
    let first = config.steps[0].topic.clone();
    let producer = crate::kafka::tools::tool_producer(&crate::kafka::client_config(&config.kafka))?;
    let lines: Vec<&str> = CONTRACTS.lines().take(CONTRACTS_IN_DEMO).collect();
    let records = lines.iter().map(|l| {
        let key = crate::kafka::tools::job_key(l).map(String::into_bytes);
        (key, l.as_bytes().to_vec())
    });
    crate::kafka::tools::produce_records(&producer, &first, records, None).await;
    println!(
        "\npublished {} contracts to {first} (extract -> classify -> summarize, answers checked against examples/schemas/)",
        lines.len()
    );
    let config = Arc::new(config);
    let runner = StepRunner::from_config(config.clone())?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(crate::worker::run(config.clone(), runner, shutdown.clone()));
    let c = config.clone();
    let report = tokio::task::spawn_blocking(move || collect(&c, lines.len(), timeout))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    shutdown.cancel();
    worker
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(report)
}

/// Reads the results (and the review copies) until every contract is finished, then the
/// status board.
fn collect(
    config: &Config,
    n: usize,
    timeout: Duration,
) -> Result<ContractsReport, rdkafka::error::KafkaError> {
    let base = crate::kafka::client_config(&config.kafka);
    let mut outputs = vec![config.topics.results.clone(), config.topics.review.clone()];
    outputs.extend(
        config
            .steps
            .iter()
            .map(|s| crate::config::TopicNames::dlq_of(&s.topic)),
    );
    let consumer = crate::kafka::tools::reader_from_beginning(&base, &outputs)?;
    let mut report = ContractsReport::default();
    let mut dead = 0;
    let deadline = Instant::now() + timeout;
    while report.results.len() + dead < n && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        let result = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<JobResult>(p).ok());
        if msg.topic().ends_with(".dlq") {
            dead += 1;
        } else if msg.topic() == config.topics.review {
            let reason = headers::get(msg.headers(), headers::REVIEW_REASON).unwrap_or_default();
            if let Some(r) = result {
                report.flagged.push((r.id.clone(), reason.to_string(), r));
            }
        } else if let Some(r) = result.filter(|r| r.pipeline == "contracts") {
            report.results.push(r);
        }
    }
    // The status topic, as `baton status --pipeline contracts` reads it.
    let mut board = Board::default();
    for m in crate::kafka::tools::read_to_end(&base, &config.topics.status, timeout)? {
        if let Some(s) = m
            .payload()
            .and_then(|p| serde_json::from_slice::<StatusRecord>(p).ok())
        {
            board.add(s);
        }
    }
    report.counts = board.counts("contracts");
    Ok(report)
}

/// Prints the stage counts, one full trail and one contract flagged for review.
pub fn print(report: &ContractsReport, config: &Config) {
    let order: Vec<&str> = config.steps.iter().map(|s| s.name.as_str()).collect();
    let mut counts = report.counts.clone();
    counts.sort_by_key(|((step, state), _)| {
        (
            order.iter().position(|s| s == step).unwrap_or(usize::MAX),
            *state,
        )
    });
    println!("stages (baton status --pipeline contracts):");
    for ((step, state), n) in &counts {
        println!("  {step:<10} {:<9} {n}", state.as_str());
    }
    if let Some(r) = report.results.first() {
        println!(
            "trail of {} (total {:.6} USD, {} steps, {} ms from first pick-up to result after {} ms queued):",
            r.id,
            r.total_cost_usd,
            r.trail.len(),
            r.total_ms,
            r.queue_ms
        );
        for t in &r.trail {
            let json = t
                .output
                .json
                .as_ref()
                .map_or(String::new(), |j| j.to_string());
            println!(
                "  {:<10} {:<8} {:>5} in {:>4} out  {:.6} USD  {:>5} ms  {} call(s)  {}",
                t.step,
                t.model,
                t.usage.input_tokens,
                t.usage.output_tokens,
                t.cost_usd,
                t.latency_ms,
                t.attempts,
                crate::util::excerpt(&json, 90)
            );
        }
    }
    match report.flagged.first() {
        Some((id, reason, r)) => println!(
            "flagged for review: {id} at step {} ({reason}): {}",
            r.step,
            r.output
                .json
                .as_ref()
                .map_or(String::new(), |j| crate::util::excerpt(&j.to_string(), 120))
        ),
        None => println!("flagged for review: none of these contracts was high-risk"),
    }
    let repaired = report
        .results
        .iter()
        .flat_map(|r| &r.trail)
        .filter(|t| t.attempts > 1)
        .count();
    println!(
        "contracts: {} results, {} flagged for review, {repaired} step answer(s) repaired after failing their schema",
        report.results.len(),
        report.flagged.len()
    );
}
