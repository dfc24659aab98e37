//! `baton route`: how jobs would be routed, without calling anything.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::config::{Config, StepConfig};
use crate::context::Prompt;
use crate::envelope::{decode_envelope, Job};
use crate::router::{decide_offline, Decision};

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

/// Prints the decision for each job of `args.job`.
pub(super) fn route(args: RouteArgs) -> Result<(), CliError> {
    let config = Config::load(&args.config)?;
    let text = if args.job == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.job)
            .map_err(|e| CliError::Usage(format!("cannot read job file {}: {e}", args.job)))?
    };
    for (n, job) in jobs(&text)?.iter().enumerate() {
        let step = step_of(&config, args.step.as_deref(), job)?;
        let key = args.key.clone().unwrap_or_else(|| {
            job.conversation_id
                .clone()
                .unwrap_or_else(|| job.id.clone())
        });
        let prompt = match Prompt::new(&config.templates, step, job) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("job {}: template_error: {e}", job.id);
                continue;
            }
        };
        let class = args.class.as_deref();
        let decision = match decide_offline(&config, step, job, &prompt, &key, class) {
            Ok(d) => d,
            Err(e) => *e.decision,
        };
        if args.json {
            let json = serde_json::to_string(&decision.record).expect("decisions serialize");
            println!("{json}");
        } else if args.explain {
            if n > 0 {
                println!();
            }
            let trace =
                crate::router::explain::render(&config, step, job, &prompt, &key, &decision);
            print!("{trace}");
        } else {
            println!("{}", one_line(job, &decision));
        }
    }
    Ok(())
}

/// The jobs of `text`: one (pretty-printed) job, or JSON Lines.
fn jobs(text: &str) -> Result<Vec<Job>, CliError> {
    let trimmed = text.trim();
    let lines: Vec<&str> = if serde_json::from_str::<serde_json::Value>(trimmed).is_ok() {
        vec![trimmed]
    } else {
        trimmed.lines().filter(|l| !l.trim().is_empty()).collect()
    };
    lines
        .iter()
        .enumerate()
        .map(|(n, raw)| {
            // The worker's own check, so a job it would dead-letter is refused here too.
            decode_envelope(raw.as_bytes())
                .map_err(|e| CliError::Usage(format!("job {}: {e}", n + 1)))
        })
        .collect()
}

/// The step a job is routed on: `--step`, else the first step of the job's pipeline, else the
/// first step of the config.
fn step_of<'a>(
    config: &'a Config,
    step: Option<&str>,
    job: &Job,
) -> Result<&'a StepConfig, CliError> {
    match (step, &job.pipeline) {
        (Some(s), _) => config
            .steps
            .iter()
            .find(|st| st.label() == s)
            .ok_or_else(|| {
                let steps: Vec<String> = config.steps.iter().map(StepConfig::label).collect();
                CliError::Usage(format!("unknown step {s:?} (steps: {})", steps.join(", ")))
            }),
        (None, Some(p)) => config
            .steps
            .iter()
            .find(|st| &st.pipeline == p)
            .ok_or_else(|| CliError::Usage(format!("job {}: unknown pipeline {p:?}", job.id))),
        (None, None) => Ok(&config.steps[0]),
    }
}

/// `id: class C (rule), variant V -> first -> second`.
fn one_line(job: &Job, d: &Decision) -> String {
    let variant = d
        .record
        .variant
        .as_deref()
        .map_or(String::new(), |v| format!(", variant {v}"));
    let order = if d.candidates.is_empty() {
        "policy_unsatisfiable".to_string()
    } else {
        d.record.candidates.join(" -> ")
    };
    format!(
        "{}: class {} ({}){variant} -> {order}",
        job.id, d.record.class, d.record.rule
    )
}
