//! `baton check`: validate a config file and print what it defines.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::config::{Config, RouteConfig};
use crate::envelope::{decode_envelope, Job};

/// `baton check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// A job (JSON) to render every step's templates against; by default a sample job with
    /// only `id`, `input`, `tenant` and `task`.
    #[arg(long)]
    pub sample_job: Option<PathBuf>,
}

/// Loads the config (every error names its key) and lists its models, steps and routes.
pub(super) fn check(args: CheckArgs) -> Result<(), CliError> {
    let config = Config::load(&args.config)?;
    let sample = sample_job(args.sample_job.as_ref())?;
    let problems = crate::context::template::check(&config, &sample);
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|(step, what)| format!("  step {step}: {what}"))
            .collect();
        return Err(CliError::Usage(format!(
            "{}: templates fail on the sample job (pass --sample-job FILE to render a real one):\n{}",
            args.config.display(),
            lines.join("\n")
        )));
    }
    println!("{}: ok", args.config.display());
    let models: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    println!("  models: {}", models.join(", "));
    for s in &config.steps {
        println!(
            "  step {}.{}: consumes {} -> {} (route {})",
            s.pipeline, s.name, s.topic, s.output_topic, config.routes[s.route].name
        );
    }
    for r in &config.routes {
        print_route(&config, r);
    }
    for warning in silent_candidates_past_the_deadline(&config) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// Each class whose candidates could not all get their turn within a round if the earlier
/// ones went silent: their timeouts (times `provider_attempts` with `worker.retry_timeouts`)
/// add up to more than `worker.round_deadline_ms`.
fn silent_candidates_past_the_deadline(config: &Config) -> Vec<String> {
    let w = &config.worker;
    let calls = if w.retry_timeouts {
        w.provider_attempts
    } else {
        1
    };
    let mut out = Vec::new();
    for r in &config.routes {
        for v in &r.variants {
            for (c, cc) in r.classes.iter().zip(&v.classes) {
                let spent = cc.models.iter().fold(std::time::Duration::ZERO, |t, &m| {
                    t.saturating_add(config.models[m].timeout.saturating_mul(calls))
                });
                if spent > w.round_deadline {
                    let variant = v
                        .name
                        .as_deref()
                        .map(|n| format!(" variant {n}"))
                        .unwrap_or_default();
                    out.push(format!(
                        "route {}{variant} class {c}: if its candidates go silent one after another, their timeouts add up to {:?} (backoffs and rate-limit waits not counted), more than worker.round_deadline_ms ({:?}): the last to be tried would get a shortened turn or none; lower models.*.timeout_ms or raise the deadline",
                        r.name, spent, w.round_deadline
                    ));
                }
            }
        }
    }
    out
}

/// The job templates are rendered against: the file's, or a minimal sample.
fn sample_job(path: Option<&PathBuf>) -> Result<Job, CliError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            CliError::Usage(format!("--sample-job: cannot read {}: {e}", p.display()))
        })?,
        None => {
            r#"{"id":"sample-1","input":"Sample input.","tenant":"sample","task":"sample"}"#.into()
        }
    };
    // The worker's own check, so templates are never tried on a job it would dead-letter.
    decode_envelope(text.as_bytes()).map_err(|e| CliError::Usage(format!("--sample-job: {e}")))
}

/// A route's variants, each class's candidates and strategy, and the sensitivities it serves.
fn print_route(config: &Config, r: &RouteConfig) {
    println!("  route {}:", r.name);
    for v in &r.variants {
        let indent = match &v.name {
            Some(n) => {
                println!("    variant {n} (weight {}):", v.weight);
                "      "
            }
            None => "    ",
        };
        for (c, cc) in r.classes.iter().zip(&v.classes) {
            let default = if r.classes[r.default_class] == *c {
                " (default)"
            } else {
                ""
            };
            let models: Vec<&str> = cc
                .models
                .iter()
                .map(|&m| config.models[m].name.as_str())
                .collect();
            println!(
                "{indent}class {c}{default}: {} [{}]",
                models.join(", "),
                cc.strategy.as_str()
            );
        }
    }
    if !r.sensitivities.is_empty() {
        let s: Vec<&str> = r.sensitivities.iter().map(|s| s.as_str()).collect();
        println!("    every class can serve: {}", s.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[worker]
round_deadline_ms = 100000

[models.a]
base_url = "http://a.invalid/v1"
timeout_ms = 60000

[models.b]
base_url = "http://b.invalid/v1"
timeout_ms = 30000

[models.c]
base_url = "http://c.invalid/v1"
timeout_ms = 30000

[[pipelines.p.steps]]
name = "s"
model = "a"
fallbacks = ["b", "c"]
"#;

    #[test]
    fn candidates_that_could_not_all_get_a_turn_are_warned_of() {
        let c = Config::from_toml(CONFIG, None).unwrap();
        let w = silent_candidates_past_the_deadline(&c);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("120s") && w[0].contains("shortened turn or none"),
            "{w:?}"
        );
        let roomy = CONFIG.replace("round_deadline_ms = 100000", "round_deadline_ms = 120000");
        assert!(
            silent_candidates_past_the_deadline(&Config::from_toml(&roomy, None).unwrap())
                .is_empty()
        );
        let retried = CONFIG.replace("[worker]", "[worker]\nretry_timeouts = true");
        let w = silent_candidates_past_the_deadline(&Config::from_toml(&retried, None).unwrap());
        assert!(w[0].contains("360s"), "three calls each: {w:?}");
    }
}
