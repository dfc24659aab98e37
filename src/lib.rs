//! baton: an LLM orchestration layer that runs as a Kafka stream processor.
//!
//! Producers publish jobs to `<pipeline>.<step>` topics; workers decode each job, route it to a
//! model, call the provider, and publish the result to the next step or `baton.results`;
//! failures end as dead letters with an error class. Nothing consumed is lost: offsets are
//! stored only behind acknowledged output.
//!
//! Module map, ground floor first (a module imports only those above it):
//! - [`util`], [`config`]: helpers, and the TOML config with the shared vocabulary.
//! - [`envelope`]: the job and result envelopes, and record decoding.
//! - [`telemetry`]: metrics (closed vocabulary), typed events, `/metrics` and `/healthz`.
//! - The guide's five components: [`router`] (classify and route), [`context`] (prompt
//!   assembly and token counts), [`output`] (normalized answers, JSON, labels), [`fallback`]
//!   (the failure policy: fates, retries, breakers, limits, retry tiers, escalation), and
//!   [`telemetry`] (above).
//! - [`providers`]: one file per wire format behind the `Provider` trait, and a scripted fake.
//! - [`kafka`]: clients, record metadata and headers, topic plan, admin, tools.
//! - [`pipeline`]: one job through one step, using the five; the pure outcome decision.
//! - [`worker`]: the Kafka runtime: poll, track, act, commit.
//! - [`cli`], and the developer tools [`mock_llm`], [`demo`], [`bench`](mod@bench).

pub mod bench;
pub mod cli;
pub mod config;
pub mod context;
pub mod demo;
pub mod envelope;
pub mod fallback;
pub mod kafka;
pub mod mock_llm;
pub mod output;
pub mod pipeline;
pub mod providers;
pub mod router;
pub mod telemetry;
pub mod util;
pub mod worker;
