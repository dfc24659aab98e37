//! `baton check`: validate a config file and print what it defines.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::config::{Config, RouteConfig};

/// `baton check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
}

/// Loads the config (every error names its key) and lists its models, steps and routes.
pub(super) fn check(args: CheckArgs) -> Result<(), CliError> {
    let config = Config::load(&args.config)?;
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
    Ok(())
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
