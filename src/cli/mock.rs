//! `baton mock-llm`: the simulated providers on loopback.

use std::path::PathBuf;

use clap::Args;

use super::{shutdown_on_signals, CliError};
use crate::mock_llm::{MockLlm, MockLlmConfig};

/// `baton mock-llm`
#[derive(Debug, Args)]
pub struct MockLlmArgs {
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to bind; loopback unless you mean it.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Behaviour per model (TOML); every model echoes after a short delay when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Serves the simulated providers until SIGINT or SIGTERM.
pub(super) async fn mock_llm(args: MockLlmArgs) -> Result<(), CliError> {
    let config = match &args.config {
        Some(p) => MockLlmConfig::load(p)?,
        None => MockLlmConfig::default(),
    };
    let mock = MockLlm::start(std::net::SocketAddr::new(args.host, args.port), config).await?;
    // One line on stdout so scripts and tests can find the port.
    println!("mock-llm listening on {}", mock.base_url());
    shutdown_on_signals().cancelled().await;
    mock.shutdown().await;
    Ok(())
}
