//! Routing decision time per job, tokenization included, for 1k- and 10k-token prompts.
//!
//! `cargo bench --bench route` (add `-- --quick` for a shorter run). Each iteration builds the
//! job's prompt from scratch (so the exact token count is paid every time, as in the worker),
//! runs the rules (keywords, a token threshold), picks the A/B variant and applies every
//! constraint and the strategy, on `examples/support.toml`.

use std::time::Instant;

use baton::config::{Config, TokenizerKind};
use baton::context::tokens;
use baton::router::decide_offline;

const PARAGRAPH: &str = "Hello team, since the update on Tuesday our mobile app keeps logging \
users out every few minutes. We have checked the session settings on our side, cleared caches, \
and reinstalled the app on three different Android phones, but the problem persists. Could you \
look into whether the new token refresh flow changed, and tell us which logs you need? ";

fn text_of(tokens_wanted: u64) -> String {
    let mut s = String::new();
    let mut n = 0;
    while tokens::count_text(TokenizerKind::O200kBase, &s) < tokens_wanted {
        s.push_str(&format!("[{n}] {PARAGRAPH}"));
        n += 1;
    }
    s
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let config = Config::from_toml(baton::demo::SAMPLE_CONFIG, None).expect("sample config");
    let step = &config.steps[0];
    println!(
        "route decision time per job (examples/support.toml, route {:?}: 2 rules, 4 models, A/B)",
        config.routes[step.route].name
    );
    println!(
        "{:>14} {:>10} {:>10} {:>10} {:>12}",
        "prompt tokens", "p50 µs", "p99 µs", "mean µs", "tokenize µs"
    );
    for target in [10u64, 1_000, 10_000] {
        let text = text_of(target);
        let job: baton::envelope::Job = serde_json::from_value(serde_json::json!({
            "id": "bench", "input": text, "policy": {"max_cost_usd": 0.5, "max_latency_ms": 2000}
        }))
        .expect("job");
        let iterations = match (quick, target) {
            (true, _) => 200,
            (false, 10 | 1_000) => 5_000,
            (false, _) => 1_000,
        };
        // Warm up the tokenizers' lazy tables.
        let prompt =
            || baton::context::Prompt::new(&config.templates, step, &job).expect("renders");
        let _ = decide_offline(&config, step, &job, &prompt(), "k", None);
        let mut samples = Vec::with_capacity(iterations);
        let mut tokenize = Vec::with_capacity(iterations);
        for i in 0..iterations {
            let key = format!("customer-{i}");
            let t = Instant::now();
            // The prompt is built inside the timing, as the worker does for each job.
            let d = decide_offline(&config, step, &job, &prompt(), &key, None).expect("routable");
            samples.push(t.elapsed().as_nanos() as f64 / 1000.0);
            std::hint::black_box(d);
            let t = Instant::now();
            std::hint::black_box(tokens::count_text(TokenizerKind::O200kBase, &text));
            tokenize.push(t.elapsed().as_nanos() as f64 / 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        tokenize.sort_by(f64::total_cmp);
        let pct = |v: &[f64], q: f64| v[((q * v.len() as f64) as usize).min(v.len() - 1)];
        let tokens = decide_offline(&config, step, &job, &prompt(), "k", None)
            .expect("routable")
            .record
            .prompt_tokens;
        println!(
            "{:>14} {:>10.1} {:>10.1} {:>10.1} {:>12.1}",
            tokens,
            pct(&samples, 0.5),
            pct(&samples, 0.99),
            samples.iter().sum::<f64>() / samples.len() as f64,
            pct(&tokenize, 0.5),
        );
    }
}
