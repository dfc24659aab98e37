//! The step runner's failure paths, with scripted in-process providers on a paused clock: no
//! network, no broker, no mock server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::fallback::{Admission, CircuitState, Fate};
use crate::output::Completion;
use crate::providers::fake::{Script, ScriptedProvider};
use crate::providers::ProviderError;

/// Three models: `a` and `b` with small windows, `big` with a large one; the step tries them
/// in that order.
const CONFIG: &str = r#"
[worker]
provider_attempts = 3
rate_limit_wait_ms = 100
round_deadline_ms = 60000

[circuit_breaker]
consecutive_failures = 5
cooldown_ms = 1000

[models.a]
base_url = "http://a.invalid/v1"
context_window = 8000
timeout_ms = 1000

[models.b]
base_url = "http://b.invalid/v1"
context_window = 8000
timeout_ms = 1000

[models.big]
base_url = "http://big.invalid/v1"
context_window = 200000
timeout_ms = 1000

[[pipelines.p.steps]]
name = "s"
model = "a"
fallbacks = ["b", "big"]
"#;

/// A runner over `config` whose models play `scripts` (a model without one answers "ok"), and
/// each model's provider, to count its calls.
fn runner(
    config: &str,
    scripts: Vec<(&str, Vec<Script>)>,
) -> (StepRunner, HashMap<String, Arc<ScriptedProvider>>) {
    let config = Arc::new(Config::from_toml(config, None).unwrap());
    let mut scripts: HashMap<&str, Vec<Script>> = scripts.into_iter().collect();
    let mut fakes = HashMap::new();
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    for m in &config.models {
        let script = scripts
            .remove(m.name.as_str())
            .unwrap_or_else(|| vec![Script::answer("ok")]);
        let fake = Arc::new(ScriptedProvider::new(script));
        fakes.insert(m.name.clone(), fake.clone());
        providers.push(fake);
    }
    (StepRunner::new(config, providers), fakes)
}

fn job() -> Job {
    serde_json::from_str(r#"{"id":"j1","input":"hello"}"#).unwrap()
}

async fn run(r: &StepRunner) -> StepOutcome {
    let step = r.config().steps[0].clone();
    r.run(&step, &job(), "j1", 0.0).await
}

fn answered(o: StepOutcome) -> JobResult {
    match o {
        StepOutcome::Done(r) => *r,
        StepOutcome::Failed(f) => panic!("expected an answer, got {f:?}"),
    }
}

fn failed(o: StepOutcome) -> StepFailure {
    match o {
        StepOutcome::Failed(f) => f,
        StepOutcome::Done(r) => panic!("expected a failure, got an answer from {}", r.model),
    }
}

fn server_error() -> ProviderError {
    ProviderError::Server {
        status: 503,
        message: "down".into(),
    }
}

fn throttled(after: Option<u64>) -> ProviderError {
    ProviderError::RateLimited {
        retry_after: after.map(Duration::from_secs),
    }
}

#[tokio::test(start_paused = true)]
async fn a_5xx_is_retried_on_the_same_model_then_answered() {
    let (r, fakes) = runner(
        CONFIG,
        vec![(
            "a",
            vec![Script::fail(server_error()), Script::answer("hi")],
        )],
    );
    let result = answered(run(&r).await);
    assert_eq!((result.model.as_str(), result.attempts), ("a", 2));
    assert_eq!(result.output.text, "hi");
    assert_eq!(fakes["b"].calls(), 0);
}

/// Seen: a silent provider was called again at the full timeout, three times, before the
/// fallback got a turn (with the defaults, never within the round).
#[tokio::test(start_paused = true)]
async fn after_a_timeout_the_next_candidate_gets_the_next_attempt() {
    let (r, fakes) = runner(
        CONFIG,
        vec![("a", vec![Script::Hang, Script::answer("hi")])],
    );
    let t0 = Instant::now();
    let result = answered(run(&r).await);
    assert_eq!((result.model.as_str(), result.attempts), ("b", 2));
    assert_eq!(
        fakes["a"].calls(),
        1,
        "the silent model is not called again"
    );
    // The model's 1 s timeout ended the silent call, and no second wait followed.
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // A model that times out is at least that slow, for the router's latency preference.
    assert_eq!(r.latency().p50(0), Some(Duration::from_secs(1)));
}

/// With no candidate after it, leaving a silent model gains nothing: it gets its attempts.
#[tokio::test(start_paused = true)]
async fn the_last_candidate_is_called_again_after_a_timeout() {
    let config = CONFIG.replace("fallbacks = [\"b\", \"big\"]\n", "");
    let (r, fakes) = runner(
        &config,
        vec![("a", vec![Script::Hang, Script::answer("hi")])],
    );
    let result = answered(run(&r).await);
    assert_eq!((result.model.as_str(), result.attempts), ("a", 2));
    assert_eq!(fakes["a"].calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn with_retry_timeouts_a_silent_model_is_called_again_first() {
    let config = CONFIG.replace(
        "provider_attempts = 3",
        "provider_attempts = 3\nretry_timeouts = true",
    );
    let (r, fakes) = runner(&config, vec![("a", vec![Script::Hang])]);
    let result = answered(run(&r).await);
    assert_eq!(result.model, "b");
    assert_eq!(fakes["a"].calls(), 3, "every attempt on a");
    assert_eq!(result.attempts, 4);
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_the_retry_after_it_asks_for() {
    let (r, _) = runner(
        CONFIG,
        vec![(
            "a",
            vec![Script::fail(throttled(Some(3))), Script::answer("hi")],
        )],
    );
    let t0 = Instant::now();
    let result = answered(run(&r).await);
    assert_eq!((result.model.as_str(), result.attempts), ("a", 2));
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_backs_off_briefly() {
    let (r, _) = runner(
        CONFIG,
        vec![(
            "a",
            vec![Script::fail(throttled(None)), Script::answer("hi")],
        )],
    );
    let t0 = Instant::now();
    let result = answered(run(&r).await);
    assert_eq!((result.model.as_str(), result.attempts), ("a", 2));
    // The first full-jitter backoff is at most 2 × 100 ms.
    assert!(
        t0.elapsed() <= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
}

/// Seen: 20 concurrent jobs against a model that keeps answering 429 made 60 calls in 0.41 s.
/// Its first 429 cools it for every job: the others move on to the next candidate, and at
/// most a probe reaches it while it cools.
#[tokio::test(start_paused = true)]
async fn a_429_cools_the_model_for_every_job_of_the_worker() {
    let (r, fakes) = runner(CONFIG, vec![("a", vec![Script::fail(throttled(None))])]);
    let step = r.config().steps[0].clone();
    let jobs: Vec<Job> = (0..20)
        .map(|i| serde_json::from_str(&format!(r#"{{"id":"j{i}","input":"hello"}}"#)).unwrap())
        .collect();
    let runs = jobs.iter().map(|j| r.run(&step, j, &j.id, 0.0));
    let outcomes = futures::future::join_all(runs).await;
    for o in outcomes {
        assert_eq!(answered(o).model, "b");
    }
    assert!(
        fakes["a"].calls() <= 3,
        "{} calls to the throttled model",
        fakes["a"].calls()
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_asking_for_too_long_moves_on_and_holds_the_retry_tier_back() {
    let everyone_throttles = vec![
        ("a", vec![Script::fail(throttled(Some(30)))]),
        ("b", vec![Script::fail(throttled(Some(45)))]),
        ("big", vec![Script::fail(throttled(Some(20)))]),
    ];
    let (r, fakes) = runner(CONFIG, everyone_throttles);
    let t0 = Instant::now();
    let f = failed(run(&r).await);
    assert_eq!(f.class, ErrorClass::RateLimited);
    // One call each: nobody waited in process...
    assert_eq!((f.attempts, fakes["a"].calls()), (3, 1));
    assert!(t0.elapsed() < Duration::from_secs(1));
    // ...and the retry tier is due no sooner than the longest wait asked for.
    assert_eq!(f.retry_after, Some(Duration::from_secs(45)));
}

#[tokio::test(start_paused = true)]
async fn bad_credentials_fall_back_and_take_the_model_out_of_rotation() {
    let auth = ProviderError::Auth {
        status: 401,
        message: "bad key".into(),
    };
    let (r, fakes) = runner(CONFIG, vec![("a", vec![Script::fail(auth)])]);
    let result = answered(run(&r).await);
    assert_eq!(result.model, "b");
    assert_eq!(fakes["a"].calls(), 1, "no retry on bad credentials");
    assert_eq!(r.circuits.state(0, now()), CircuitState::Open);
    // The next job does not even try it.
    answered(run(&r).await);
    assert_eq!(fakes["a"].calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_context_overflow_goes_to_a_larger_window() {
    let too_long = ProviderError::ContextLength("maximum context length is 8000".into());
    let (r, fakes) = runner(CONFIG, vec![("a", vec![Script::fail(too_long)])]);
    let result = answered(run(&r).await);
    assert_eq!(result.model, "big");
    // b's window is no larger than a's: not tried.
    assert_eq!((fakes["a"].calls(), fakes["b"].calls()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_content_filter_refusal_ends_the_round() {
    let filtered = ProviderError::ContentFilter("refused".into());
    let (r, fakes) = runner(CONFIG, vec![("a", vec![Script::fail(filtered)])]);
    let f = failed(run(&r).await);
    assert_eq!((f.class, f.attempts), (ErrorClass::ContentFilter, 1));
    assert_eq!(f.last_model.as_deref(), Some("a"));
    assert_eq!(fakes["b"].calls() + fakes["big"].calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_route_may_let_another_provider_try_what_a_filter_refused() {
    // a and b share an endpoint; big is another provider.
    let config = CONFIG
        .replace("http://b.invalid/v1", "http://a.invalid/v1")
        .replace(
            "fallbacks = [\"b\", \"big\"]",
            "fallbacks = [\"b\", \"big\"]\ncontent_filter = \"other_provider\"",
        );
    let filtered = ProviderError::ContentFilter("refused".into());
    let (r, fakes) = runner(&config, vec![("a", vec![Script::fail(filtered)])]);
    let result = answered(run(&r).await);
    assert_eq!(result.model, "big");
    assert_eq!(
        fakes["b"].calls(),
        0,
        "same endpoint as the one that refused"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_skipped() {
    let (r, fakes) = runner(CONFIG, vec![]);
    r.circuits
        .record(0, now(), Admission::Call, Some(Fate::Misconfigured));
    let result = answered(run(&r).await);
    assert_eq!((result.model.as_str(), result.attempts), ("b", 1));
    assert_eq!(fakes["a"].calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn open_circuits_everywhere_mean_provider_unavailable() {
    let (r, fakes) = runner(CONFIG, vec![]);
    for m in 0..3 {
        r.circuits
            .record(m, now(), Admission::Call, Some(Fate::Misconfigured));
    }
    let f = failed(run(&r).await);
    assert_eq!((f.class, f.attempts), (ErrorClass::ProviderUnavailable, 0));
    assert!(f.message.contains("circuits"), "{}", f.message);
    assert_eq!(fakes.values().map(|p| p.calls()).sum::<usize>(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_job_stuck_on_open_circuits_waits_for_a_probe() {
    let config = CONFIG.replace("fallbacks = [\"b\", \"big\"]", "");
    let (r, fakes) = runner(&config, vec![]);
    // a's circuit opened a cooldown ago and another job's probe is out.
    for _ in 0..5 {
        r.circuits
            .record(0, now(), Admission::Call, Some(Fate::Transient));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let probe = r.circuits.admit(0, now());
    assert_eq!(probe, Admission::Probe);
    let circuits = r.circuits.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        circuits.record(0, now(), probe, None);
    });
    let t0 = Instant::now();
    let result = answered(run(&r).await);
    assert_eq!(result.model, "a");
    assert_eq!(fakes["a"].calls(), 1, "only the job's own call");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < PROBE_WAIT,
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_rate_limit_capacity_moves_on_then_fails_as_rate_limited() {
    let limited = CONFIG.replace(
        "timeout_ms = 1000\n",
        "timeout_ms = 1000\nrate_limit = { requests_per_minute = 1 }\n",
    );
    let (r, fakes) = runner(&limited, vec![]);
    assert_eq!(answered(run(&r).await).model, "a");
    // a's minute is used up: the next job waits its 100 ms, then goes to b.
    assert_eq!(answered(run(&r).await).model, "b");
    assert_eq!(answered(run(&r).await).model, "big");
    let f = failed(run(&r).await);
    assert_eq!((f.class, f.attempts), (ErrorClass::RateLimited, 0));
    assert!(
        f.message.contains("no rate-limit capacity"),
        "{}",
        f.message
    );
    assert_eq!(fakes["a"].calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_round_deadline_ends_the_round() {
    // The deadline is shorter than the models' timeout: the silent call ends at the deadline.
    let config = CONFIG
        .replace("round_deadline_ms = 60000", "round_deadline_ms = 1500")
        .replace("timeout_ms = 1000", "timeout_ms = 5000");
    let (r, fakes) = runner(&config, vec![("a", vec![Script::Hang])]);
    let t0 = Instant::now();
    let f = failed(run(&r).await);
    assert_eq!(f.class, ErrorClass::ProviderTimeout);
    assert!(f.message.contains("deadline"), "{}", f.message);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(1600),
        "{took:?}"
    );
    assert_eq!(fakes["b"].calls(), 0, "no call after the deadline");
}

#[tokio::test(start_paused = true)]
async fn answers_failing_everywhere_keep_the_last_error() {
    let (r, fakes) = runner(
        CONFIG,
        vec![
            ("a", vec![Script::fail(server_error())]),
            ("b", vec![Script::fail(server_error())]),
            (
                "big",
                vec![Script::fail(ProviderError::Malformed("empty".into()))],
            ),
        ],
    );
    let f = failed(run(&r).await);
    assert_eq!(f.class, ErrorClass::MalformedResponse);
    assert_eq!(f.last_model.as_deref(), Some("big"));
    assert_eq!(f.attempts, 9);
    assert_eq!(fakes["big"].calls(), 3);
}

/// A step whose answers must match a schema; `a` then `big` may serve it; $1 per million
/// tokens either way, so each scripted call (10 + 5 tokens) costs $0.000015.
const SCHEMA_CONFIG: &str = r#"
[models.a]
base_url = "http://a.invalid/v1"
price_input_per_mtok = 1.0
price_output_per_mtok = 1.0

[models.big]
base_url = "http://big.invalid/v1"
price_input_per_mtok = 1.0
price_output_per_mtok = 1.0

[[pipelines.p.steps]]
name = "classify"
model = "a"
fallbacks = ["big"]
response_format = { schema = { type = "object", required = ["risk"], properties = { risk = { enum = ["low", "high"] } } } }
"#;

const CALL_USD: f64 = 0.000015;

#[tokio::test(start_paused = true)]
async fn an_answer_off_its_schema_is_repaired_once_by_the_same_model() {
    let (r, fakes) = runner(
        SCHEMA_CONFIG,
        vec![(
            "a",
            vec![
                Script::answer(r#"{"risk": "extreme"}"#),
                Script::answer(r#"Fixed: {"risk": "high"}"#),
            ],
        )],
    );
    let res = answered(run(&r).await);
    assert_eq!(res.output.json, Some(serde_json::json!({"risk": "high"})));
    assert_eq!((res.model.as_str(), res.attempts), ("a", 2));
    assert!(
        (res.cost_usd - 2.0 * CALL_USD).abs() < 1e-12,
        "both calls billed"
    );
    let requests = fakes["a"].requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(
        first.response_format.as_ref().unwrap()["type"],
        "json_schema"
    );
    let repair = &requests[1].messages;
    assert_eq!(repair.len(), first.messages.len() + 2);
    assert_eq!(repair[repair.len() - 2].content, r#"{"risk": "extreme"}"#);
    assert!(
        repair.last().unwrap().content.contains("/risk"),
        "{repair:?}"
    );
    assert_eq!(fakes["big"].calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_answer_still_off_its_schema_moves_on_then_fails_as_invalid_output() {
    let (r, fakes) = runner(
        SCHEMA_CONFIG,
        vec![
            ("a", vec![Script::answer("no json at all")]),
            ("big", vec![Script::answer(r#"{"risk": 3}"#)]),
        ],
    );
    let f = failed(run(&r).await);
    assert_eq!(f.class, ErrorClass::InvalidOutput);
    assert_eq!(f.last_model.as_deref(), Some("big"));
    assert!(f.message.contains("/risk"), "{}", f.message);
    assert_eq!((fakes["a"].calls(), fakes["big"].calls()), (2, 2));
    assert_eq!(f.attempts, 4);
    assert!(
        (f.cost_usd - 4.0 * CALL_USD).abs() < 1e-12,
        "every call billed"
    );
    // A later round would get the same answers: a person decides.
    assert!(!crate::fallback::plan::may_succeed_later(f.class));
}

#[tokio::test(start_paused = true)]
async fn truncated_empty_and_refused_answers_are_never_results() {
    let truncated = Completion {
        text: r#"{"risk": "hi"#.into(),
        finish_reason: Some("length".into()),
        ..Completion::default()
    };
    let refused = Completion {
        refusal: Some("I can't help with that.".into()),
        finish_reason: Some("stop".into()),
        ..Completion::default()
    };
    let cases = [
        (truncated, ErrorClass::OutputTruncated),
        (refused, ErrorClass::ModelRefusal),
        (Completion::default(), ErrorClass::EmptyOutput),
    ];
    for (answer, class) in cases {
        let (r, fakes) = runner(
            SCHEMA_CONFIG,
            vec![
                ("a", vec![Script::Complete(answer.clone())]),
                ("big", vec![Script::Complete(answer)]),
            ],
        );
        let f = failed(run(&r).await);
        assert_eq!(f.class, class);
        // Not repairable: one call each, then the next candidate.
        assert_eq!(
            (fakes["a"].calls(), fakes["big"].calls()),
            (1, 1),
            "{class:?}"
        );
    }
    // A truncated answer from one model, a whole one from the next: the whole one is the result.
    let cut = Completion {
        text: "{".into(),
        finish_reason: Some("length".into()),
        ..Completion::default()
    };
    let (r, _) = runner(
        SCHEMA_CONFIG,
        vec![
            ("a", vec![Script::Complete(cut)]),
            ("big", vec![Script::answer(r#"{"risk":"low"}"#)]),
        ],
    );
    assert_eq!(answered(run(&r).await).model, "big");
}

#[tokio::test(start_paused = true)]
async fn a_template_referencing_what_the_job_lacks_fails_with_template_error() {
    let config = SCHEMA_CONFIG.replace(
        "fallbacks = [\"big\"]",
        "fallbacks = [\"big\"]\nuser = \"Classify for {{ metadata.customer }}: {{ input }}\"",
    );
    let (r, fakes) = runner(&config, vec![]);
    let f = failed(run(&r).await);
    assert_eq!(f.class, ErrorClass::TemplateError);
    assert!(f.message.contains("undefined"), "{}", f.message);
    assert_eq!(fakes["a"].calls(), 0);
    assert!(!crate::fallback::plan::may_succeed_later(f.class));
}

/// A step whose first model (`a`, a large window) is down, and whose fallback (`tiny`) has a
/// window of 700 tokens; `sum` summarizes. `OVERFLOW` is replaced by the strategy under test.
const FIT_CONFIG: &str = r#"
[worker]
provider_attempts = 1

[models.a]
base_url = "http://a.invalid/v1"
context_window = 100000
sensitivities = ["public", "internal", "confidential"]

[models.tiny]
base_url = "http://tiny.invalid/v1"
context_window = 700
price_input_per_mtok = 1.0
sensitivities = ["public", "internal", "confidential"]

[models.sum]
base_url = "http://sum.invalid/v1"
context_window = 100000
price_input_per_mtok = 1.0
price_output_per_mtok = 1.0
sensitivities = ["public", "internal"]

[[pipelines.p.steps]]
name = "s"
model = "a"
fallbacks = ["tiny"]
max_tokens = 100
system = "You answer questions about the conversation."
context = OVERFLOW
"#;

fn long_conversation() -> Job {
    let messages: Vec<serde_json::Value> = (0..30)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            serde_json::json!({"role": role, "content": format!("turn {i}: {}", "more words here ".repeat(12))})
        })
        .collect();
    serde_json::from_value(serde_json::json!({"id": "j1", "messages": messages})).unwrap()
}

fn fit_runner(overflow: &str) -> (StepRunner, HashMap<String, Arc<ScriptedProvider>>) {
    runner(
        &FIT_CONFIG.replace("OVERFLOW", overflow),
        vec![
            ("a", vec![Script::fail(server_error())]),
            (
                "sum",
                vec![Script::answer("EARLIER: they discussed turns 0 to 20")],
            ),
        ],
    )
}

async fn run_job(r: &StepRunner, job: &Job) -> StepOutcome {
    let step = r.config().steps[0].clone();
    r.run(&step, job, "j1", 0.0).await
}

#[tokio::test(start_paused = true)]
async fn a_fallback_with_a_smaller_window_gets_a_truncated_prompt() {
    let (r, fakes) = fit_runner(r#"{ overflow = "truncate" }"#);
    let job = long_conversation();
    let res = answered(run_job(&r, &job).await);
    assert_eq!(res.model, "tiny");
    let sent = &fakes["tiny"].requests()[0];
    let tokens =
        crate::context::fit::prompt_tokens(&sent.messages, crate::config::TokenizerKind::O200kBase);
    assert!(
        tokens + 100 <= 700,
        "{tokens} prompt tokens + 100 reserved exceed the window"
    );
    assert_eq!(
        sent.messages[0].content,
        "You answer questions about the conversation."
    );
    let newest = job.messages.as_ref().unwrap().last().unwrap();
    assert_eq!(
        sent.messages.last().unwrap(),
        newest,
        "the newest turn is kept"
    );
    assert!(sent.messages.len() < 31, "older turns were dropped");
    assert_eq!(fakes["sum"].calls(), 0);
    // The large model got the whole prompt.
    assert_eq!(fakes["a"].requests()[0].messages.len(), 31);
}

#[tokio::test(start_paused = true)]
async fn summarize_condenses_what_would_be_dropped_and_bills_it() {
    let (r, fakes) = fit_runner(r#"{ overflow = "summarize", summarize_model = "sum" }"#);
    let res = answered(run_job(&r, &long_conversation()).await);
    assert_eq!(res.model, "tiny");
    let sent = &fakes["tiny"].requests()[0];
    assert!(
        sent.messages[1].content.contains("EARLIER: they discussed"),
        "{:?}",
        sent.messages[1]
    );
    let tokens =
        crate::context::fit::prompt_tokens(&sent.messages, crate::config::TokenizerKind::O200kBase);
    assert!(tokens + 100 <= 700);
    assert_eq!(fakes["sum"].calls(), 1);
    let summarized = &fakes["sum"].requests()[0].messages[1].content;
    assert!(summarized.starts_with("user: turn 0"), "{summarized}");
    // The summary call is billed to the job: 10 input + 5 output tokens at $1/M each, plus
    // tiny's 10 input tokens.
    assert!((res.cost_usd - 0.000025).abs() < 1e-12, "{}", res.cost_usd);
}

#[tokio::test(start_paused = true)]
async fn a_summarizer_the_jobs_policy_forbids_is_not_called() {
    let (r, fakes) = fit_runner(r#"{ overflow = "summarize", summarize_model = "sum" }"#);
    let mut job = long_conversation();
    job.policy = Some(crate::envelope::Policy {
        sensitivity: Some(crate::config::Sensitivity::Confidential),
        ..Default::default()
    });
    let res = answered(run_job(&r, &job).await);
    assert_eq!(res.model, "tiny");
    assert_eq!(
        fakes["sum"].calls(),
        0,
        "a confidential job's text never reaches it"
    );
    assert!(!fakes["tiny"].requests()[0].messages[1]
        .content
        .contains("EARLIER"));
}

#[tokio::test(start_paused = true)]
async fn reject_never_cuts_or_moves_a_prompt() {
    let config = FIT_CONFIG
        .replace("OVERFLOW", r#"{ overflow = "reject" }"#)
        .replace(
            "model = \"a\"\nfallbacks = [\"tiny\"]",
            "model = \"tiny\"\nfallbacks = [\"a\"]",
        );
    let (r, fakes) = runner(&config, vec![]);
    let f = failed(run_job(&r, &long_conversation()).await);
    assert_eq!(f.class, ErrorClass::ContextLengthExceeded);
    assert!(f.message.contains("context window of 700"), "{}", f.message);
    assert_eq!((fakes["tiny"].calls(), fakes["a"].calls()), (0, 0));
    assert!(!crate::fallback::plan::may_succeed_later(f.class));
}
