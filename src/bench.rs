//! `baton bench` (being written).
use clap::Args;
/// Options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {}
/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {}
/// Runs it.
pub async fn run(_args: BenchArgs) -> Result<(), BenchError> {
    todo!("bench")
}
