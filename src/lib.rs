//! baton: an LLM orchestration layer that runs as a Kafka stream processor.
//!
//! Producers publish jobs to `<pipeline>.<step>` topics; workers decode each job, route it to a
//! model, call the provider, and publish the result to the next step or `baton.results`;
//! failures end as dead letters with an error class. Nothing consumed is lost: offsets are
//! stored only behind acknowledged output.
//!
//! Module map:
//! - [`config`]: the TOML config, read in two phases (raw, then validated with key paths).
//! - [`envelope`]: job and result envelopes, record decoding and the error classes.
//! - [`router`]: classify a job and order the models that may serve it, policy first.
//! - [`fallback`]: what a failed call means for its model (circuit breakers).
//! - [`providers`]: provider clients behind one error taxonomy.
//! - [`pipeline`]: one job through one step: route, call, retry, result or failure.
//! - [`worker`]: the consume loop, completion tracking, rebalance and shutdown.
//! - [`kafka`]: client settings, headers, topic declarations, admin, produce/consume tools.
//! - [`telemetry`]: metric names, `/metrics` and `/healthz`.
//! - [`mock_llm`]: the simulated provider server (`baton mock-llm`).
//! - [`demo`]: the zero-install demo (`baton demo`).
//! - [`bench`]: the throughput benchmark (`baton bench`).
//! - [`cli`]: command-line parsing and dispatch.

pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod envelope;
pub mod fallback;
pub mod kafka;
pub mod mock_llm;
pub mod pipeline;
pub mod providers;
pub mod router;
pub mod telemetry;
pub mod util;
pub mod worker;
