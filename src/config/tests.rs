//! Config validation: every error names its key path (and line where known).

use super::*;

const MINIMAL: &str = r#"
[models.m]
base_url = "http://127.0.0.1:1/v1"

[pipelines.p]
steps = [{ name = "s", model = "m" }]
"#;

fn errors(text: &str) -> Vec<String> {
    Config::from_toml(text, None)
        .unwrap_err()
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::from_toml(MINIMAL, None).unwrap();
    assert_eq!(c.worker.max_in_flight, 1024);
    assert_eq!(c.steps[0].topic, "p.s");
    assert_eq!(c.steps[0].output_topic, "baton.results");
    assert_eq!(c.models[0].provider_model, "m");
    assert_eq!(c.kafka.group_id, "baton-workers");
}

#[test]
fn the_sample_config_is_valid() {
    let c = Config::from_toml(include_str!("../../examples/support.toml"), None).unwrap();
    assert_eq!(c.models.len(), 4);
    assert_eq!(c.routes[c.steps[0].route].name, "support");
    assert_eq!(c.steps[0].topic, "support.answer");
}

#[test]
fn unknown_model_names_the_key_and_line() {
    let text = MINIMAL.replace("model = \"m\"", "model = \"gpt5\"");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("pipelines.p.steps[0].model (line 6): unknown model \"gpt5\""),
        "{}",
        e[0]
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let text = format!("{MINIMAL}\n[worker]\nmax_inflight = 3\n");
    let e = errors(&text);
    assert!(e[0].starts_with("worker.max_inflight (line 9)"), "{}", e[0]);
    assert!(e[0].contains("unknown field"), "{}", e[0]);
}

#[test]
fn wrong_types_are_reported_with_their_path() {
    let text = format!("{MINIMAL}\n[worker]\nmax_in_flight = \"many\"\n");
    let e = errors(&text);
    assert!(
        e[0].starts_with("worker.max_in_flight (line 9)"),
        "{}",
        e[0]
    );
}

#[test]
fn semantic_errors_are_all_reported() {
    let text = r#"
[worker]
max_in_flight = 0
metrics_listen = "nowhere"

[models.m]
base_url = "ftp://x"
context_window = 0

[pipelines."bad name"]
steps = [{ name = "s", model = "m", fallbacks = ["nope"] }]
"#;
    let e = errors(text).join("\n");
    for want in [
        "worker.max_in_flight (line 3): must be positive",
        "worker.metrics_listen (line 4): not a socket address",
        "models.m.base_url (line 7): must start with http",
        "models.m.context_window (line 8): must be positive",
        "pipelines.bad name (line 10): pipeline names may use only",
        "pipelines.bad name.steps[0].fallbacks[0] (line 11): unknown model \"nope\"",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn multi_step_pipelines_chain_topics() {
    let text = r#"
[topics]
prefix = "x-"
[models.m]
base_url = "http://127.0.0.1:1/v1"
[[pipelines.p.steps]]
name = "a"
model = "m"
[[pipelines.p.steps]]
name = "b"
model = "m"
"#;
    let c = Config::from_toml(text, None).unwrap();
    assert_eq!(c.steps[0].topic, "x-p.a");
    assert_eq!(c.steps[0].output_topic, "x-p.b");
    assert!(!c.steps[0].is_last);
    assert_eq!(c.steps[1].output_topic, "x-baton.results");
    assert_eq!(
        c.input_topics(),
        vec![
            "x-p.a",
            "x-p.a.retry.30s",
            "x-p.a.retry.5m",
            "x-p.a.retry.30m",
            "x-p.b",
            "x-p.b.retry.30s",
            "x-p.b.retry.5m",
            "x-p.b.retry.30m"
        ]
    );
    let (step, tier) = c.step_for_topic("x-p.b.retry.5m").unwrap();
    assert_eq!((step.name.as_str(), tier), ("b", Some(1)));
    assert_eq!(c.step_for_topic("x-p.a").unwrap().1, None);
}

#[test]
fn overrides_that_would_break_delivery_guarantees_are_refused() {
    let text = format!(
        "{MINIMAL}\n[kafka]\nconsumer = {{ \"enable.auto.offset.store\" = \"true\", \"fetch.min.bytes\" = \"1\" }}\nproducer = {{ \"acks\" = \"1\" }}\n"
    );
    let e = errors(&text).join("\n");
    assert!(
        e.contains("kafka.consumer.enable.auto.offset.store (line 9): managed by baton"),
        "{e}"
    );
    assert!(
        e.contains("kafka.producer.acks (line 10): managed by baton"),
        "{e}"
    );
    assert!(!e.contains("fetch.min.bytes"), "{e}");
}

const ROUTED: &str = r#"
[models.cloud]
base_url = "http://127.0.0.1:1/v1"
residency = "us"
[models.local]
base_url = "http://127.0.0.1:1/v1"
residency = "on_prem"
sensitivities = ["public", "internal", "confidential", "restricted"]

[routes.r]
default_class = "simple"
sensitivities = ["internal", "restricted"]
[[routes.r.rules]]
name = "legal"
keywords = ["contract"]
class = "complex"
[routes.r.classes.simple]
models = ["cloud", "local"]
[routes.r.classes.complex]
models = ["local"]
[routes.r.classifier]
model = "cloud"
[[routes.r.variants]]
name = "a"
weight = 9
[[routes.r.variants]]
name = "b"
weight = 1
classes.simple.models = ["local", "cloud"]

[pipelines.p]
steps = [{ name = "s", route = "r" }]
"#;

#[test]
fn a_routed_config_is_valid_and_resolved() {
    let c = Config::from_toml(ROUTED, None).unwrap();
    let r = &c.routes[c.steps[0].route];
    assert_eq!(r.name, "r");
    assert_eq!(r.classes, vec!["simple", "complex"]);
    assert_eq!(r.variants.len(), 2);
    assert_eq!(r.variants[1].classes[0].models, vec![1, 0]);
    assert_eq!(r.variants[1].classes[1].models, vec![1]);
    assert_eq!(r.classifier.as_ref().unwrap().labels, vec![0, 1]);
}

/// Each `baton check` error names its key path.
#[test]
fn route_errors_name_their_key_path() {
    let cases: &[(&str, &str, &str)] = &[
        // unknown model, with its line
        (
            r#"models = ["local"]"#,
            r#"models = ["local", "gpt5"]"#,
            "routes.r.classes.complex.models[1] (line 20): unknown model \"gpt5\"",
        ),
        // a declared sensitivity no candidate may receive
        (
            r#"models = ["local"]"#,
            r#"models = ["cloud"]"#,
            "routes.r.classes.complex.models (line 20): class \"complex\" has no candidate allowed to receive restricted data",
        ),
        (
            r#"classes.simple.models = ["local", "cloud"]"#,
            r#"classes.simple.models = ["cloud"]"#,
            "routes.r.variants[1].classes.simple.models (line 29): class \"simple\" has no candidate allowed to receive restricted data",
        ),
        // non-positive weights
        ("weight = 1\n", "weight = 0\n", "routes.r.variants[1].weight (line 28): must be positive, got 0"),
        (
            "default_class = \"simple\"",
            "default_class = \"simple\"\nstrategy = \"weighted\"\nweights = { cloud = -1, local = 1 }",
            "routes.r.weights.cloud (line 13): must be positive, got -1",
        ),
        (
            "default_class = \"simple\"",
            "default_class = \"simple\"\nstrategy = \"weighted\"\nweights = { local = 1 }",
            "routes.r.weights (line 13): strategy \"weighted\" needs a weight for \"cloud\"",
        ),
        // duplicate names
        ("name = \"b\"", "name = \"a\"", "routes.r.variants[1].name (line 27): duplicate variant name \"a\""),
        (
            r#"models = ["cloud", "local"]"#,
            r#"models = ["cloud", "local", "cloud"]"#,
            "routes.r.classes.simple.models[2] (line 18): duplicate model \"cloud\" in the list",
        ),
        // unknown classes and tags
        ("class = \"complex\"", "class = \"hard\"", "routes.r.rules[0].class (line 16): unknown class \"hard\""),
        ("model = \"cloud\"\n[[", "model = \"cloud\"\nlabels = [\"simple\", \"urgent\"]\n[[", "routes.r.classifier.labels[1] (line 23): unknown class \"urgent\""),
        ("default_class = \"simple\"", "default_class = \"easy\"", "routes.r.default_class (line 11): unknown class \"easy\""),
        ("residency = \"us\"", "residency = \"us\"\ncapabilities = [\"vison\"]", "models.cloud.capabilities (line 5)"),
        ("keywords = [\"contract\"]", "regex = \"(unclosed\"", "routes.r.rules[0].regex (line 15): invalid regular expression"),
        // steps
        ("route = \"r\"", "route = \"q\"", "pipelines.p.steps[0].route (line 32): unknown route \"q\""),
        ("route = \"r\"", "route = \"r\", model = \"cloud\"", "pipelines.p.steps[0] (line 32): set either `route` or `model`"),
        ("route = \"r\"", "route = \"r\", fallbacks = [\"local\"]", "pipelines.p.steps[0].fallbacks (line 32): only with `model`"),
        // a later variant is checked as thoroughly as the first
        (
            "classes.simple.models = [\"local\", \"cloud\"]",
            "strategy = \"weighted\"\nclasses.simple.weights = { local = -1, cloud = 1 }\nclasses.complex.weights = { local = 1 }",
            "routes.r.variants[1].classes.simple.weights.local (line 30): must be positive, got -1",
        ),
        (
            "classes.simple.models = [\"local\", \"cloud\"]",
            "models = []",
            "routes.r.variants[1].models (line 29): class \"simple\" has no candidate models",
        ),
    ];
    for (from, to, want) in cases {
        assert!(ROUTED.contains(from), "{from}");
        let text = ROUTED.replacen(from, to, 1);
        let e = errors(&text);
        assert!(
            e.iter().any(|x| x.starts_with(want)),
            "want {want:?}, got {e:?}"
        );
        // Every key these errors name is written in the file, so every one has its line.
        assert!(e.iter().all(|x| x.contains(" (line ")), "{e:?}");
    }
}

#[test]
fn circuit_breaker_settings_are_checked() {
    let c = Config::from_toml(MINIMAL, None).unwrap();
    assert_eq!(c.circuit_breaker.consecutive_failures, 5);
    assert_eq!(c.out_of_rotation, Duration::from_secs(300));
    let e = errors(&format!(
        "{MINIMAL}\n[circuit_breaker]\nfailure_rate = 1.5\ncooldown_ms = 0\n"
    ));
    assert!(
        e.iter().any(|x| x
            .starts_with("circuit_breaker.failure_rate (line 9): must be within (0, 1], got 1.5")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|x| x.starts_with("circuit_breaker.cooldown_ms (line 10): must be positive")),
        "{e:?}"
    );
}

#[test]
fn rate_limits_must_be_positive() {
    let text = MINIMAL.replace(
        "base_url = \"http://127.0.0.1:1/v1\"",
        "base_url = \"http://127.0.0.1:1/v1\"\nrate_limit = { requests_per_minute = 0, concurrency = 4 }",
    );
    let e = errors(&text);
    assert!(
        e[0].starts_with("models.m.rate_limit.requests_per_minute (line 4): must be positive"),
        "{e:?}"
    );
    let ok = MINIMAL.replace(
        "base_url = \"http://127.0.0.1:1/v1\"",
        "base_url = \"http://127.0.0.1:1/v1\"\nrate_limit = { tokens_per_minute = 90000 }",
    );
    let c = Config::from_toml(&ok, None).unwrap();
    assert_eq!(c.models[0].rate_limit.tokens_per_minute, Some(90000));
    assert_eq!(c.worker.rate_limit_wait, Duration::from_secs(2));
}

#[test]
fn retry_tiers_are_durations_that_name_topics() {
    let c = Config::from_toml(
        &format!("{MINIMAL}\n[retry]\ntiers = [\"90s\", \"1h\"]\n"),
        None,
    )
    .unwrap();
    assert_eq!(c.retry_tiers[1].delay, Duration::from_secs(3600));
    assert_eq!(
        c.steps[0].retry_topics,
        vec!["p.s.retry.90s", "p.s.retry.1h"]
    );
    let none = Config::from_toml(&format!("{MINIMAL}\n[retry]\ntiers = []\n"), None).unwrap();
    assert!(none.steps[0].retry_topics.is_empty());
    let e = errors(&format!(
        "{MINIMAL}\n[retry]\ntiers = [\"soon\", \"1h 30m\", \"1h\", \"1h\"]\n"
    ));
    assert!(
        e.iter()
            .any(|x| x.starts_with("retry.tiers[0] (line 9): not a duration")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|x| x.starts_with("retry.tiers[1] (line 9): \"1h 30m\" names a topic")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|x| x.starts_with("retry.tiers[3] (line 9): duplicate tier")),
        "{e:?}"
    );
}

#[test]
fn step_templates_schemas_and_review_expressions_are_checked_with_key_and_line() {
    let text = r#"
[models.m]
base_url = "http://127.0.0.1:1/v1"

[[pipelines.c.steps]]
name = "extract"
model = "m"
user = "Extract from {{ input"
response_format = { schema = { type = "objekt" } }

[[pipelines.c.steps]]
name = "classify"
model = "m"
review_when = "steps.classify.json.risk =="
response_format = { schema_file = "no/such/schema.json" }
"#;
    let e = errors(text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with("pipelines.c.steps[0].user (line 8): "),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("pipelines.c.steps[0].response_format (line 9): not a valid JSON Schema"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with("pipelines.c.steps[1].review_when (line 14): "),
        "{e:#?}"
    );
    assert!(
        e[3].starts_with(
            "pipelines.c.steps[1].response_format (line 15): cannot read schema file no/such/schema.json: "
        ),
        "{e:#?}"
    );
}

#[test]
fn schema_files_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::write(
        dir.path().join("schemas/risk.json"),
        r#"{"type":"object","required":["risk"]}"#,
    )
    .unwrap();
    let text = r#"
[models.m]
base_url = "http://127.0.0.1:1/v1"

[[pipelines.c.steps]]
name = "classify"
model = "m"
system_prompt = "You classify."
response_format = { schema_file = "schemas/risk.json" }
"#;
    let c = Config::from_toml(text, Some(dir.path())).unwrap();
    let s = c.steps[0].response_schema.as_ref().unwrap();
    assert_eq!(s.name, "classify");
    assert_eq!(s.schema["required"][0], "risk");
    assert_eq!(
        c.steps[0].system_template.as_deref(),
        Some("c.classify.system")
    );
}

/// [`MINIMAL`] with its step under a `[[...]]` header, for keys to add to the step.
const STEPS: &str = r#"[models.m]
base_url = "http://127.0.0.1:1/v1"
[[pipelines.p.steps]]
name = "s"
model = "m"
"#;

/// The issue's cases: range checks of phase two name the line of the key they check, whether
/// the key sits under a table header, in an inline table or in a dotted key.
#[test]
fn range_errors_carry_the_line_of_their_key() {
    let base_url = "base_url = \"http://127.0.0.1:1/v1\"";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{MINIMAL}\n[worker]\nmax_in_flight = 0\n"),
            "worker.max_in_flight (line 9): must be positive",
        ),
        (
            format!("worker.max_in_flight = 0\n{MINIMAL}"),
            "worker.max_in_flight (line 1): must be positive",
        ),
        (
            format!("{MINIMAL}\n[circuit_breaker]\nfailure_rate = 0.0\n"),
            "circuit_breaker.failure_rate (line 9): must be within (0, 1], got 0",
        ),
        (
            format!("{MINIMAL}\n[retry]\ntiers = [\n  \"30s\",\n  \"soon\",\n]\n"),
            "retry.tiers[1] (line 11): not a duration",
        ),
        (
            MINIMAL.replace("http://127.0.0.1:1/v1", "127.0.0.1:1/v1"),
            "models.m.base_url (line 3): must start with http:// or https://",
        ),
        (
            MINIMAL.replace(base_url, &format!("{base_url}\ncontext_window = 0")),
            "models.m.context_window (line 4): must be positive",
        ),
        (
            format!("{STEPS}max_tokens = 0\n"),
            "pipelines.p.steps[0].max_tokens (line 6): must be positive",
        ),
    ];
    for (text, want) in cases {
        let e = errors(&text);
        assert!(
            e.iter().any(|x| x.starts_with(want)),
            "want {want:?}, got {e:?}"
        );
    }
}

/// A negative price says which of the three it is, on its own line.
#[test]
fn a_negative_price_names_which_price() {
    let base_url = "base_url = \"http://127.0.0.1:1/v1\"";
    let prices = "price_input_per_mtok = 0.5\nprice_output_per_mtok = -2.5\nprice_cached_input_per_mtok = -0.1";
    let e = errors(&MINIMAL.replace(base_url, &format!("{base_url}\n{prices}")));
    assert_eq!(
        e,
        vec![
            "models.m.price_output_per_mtok (line 5): must be a price in USD, zero or more, got -2.5",
            "models.m.price_cached_input_per_mtok (line 6): must be a price in USD, zero or more, got -0.1",
        ]
    );
    let e = errors(&MINIMAL.replace(base_url, &format!("{base_url}\nprice_input_per_mtok = nan")));
    assert_eq!(
        e,
        vec![
            "models.m.price_input_per_mtok (line 4): must be a price in USD, zero or more, got NaN"
        ]
    );
}

/// A key left out gets the line of the table it belongs in; a section not written at all
/// gets none.
#[test]
fn an_error_about_a_key_left_out_points_at_its_table() {
    let text = format!("{STEPS}[[pipelines.p.steps]]\nname = \"t\"\n");
    let e = errors(&text);
    assert!(
        e.iter()
            .any(|x| x.starts_with("pipelines.p.steps[1] (line 6): missing `route`")),
        "{e:?}"
    );
    let e = errors("[models.m]\nbase_url = \"http://127.0.0.1:1/v1\"\n");
    assert_eq!(e, vec!["pipelines: at least one pipeline is required"]);
}

/// An unreadable file says which file: the config itself, a topic declarations file, a schema
/// file (the last two also the key and line that name them).
#[test]
fn an_unreadable_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("baton.toml");
    let e = Config::load(&missing).unwrap_err();
    let want = format!("cannot read config file {}: ", missing.display());
    assert!(e.errors[0].to_string().starts_with(&want), "{e}");

    let text = format!("{MINIMAL}\n[topics]\ndeclarations = \"no/such/topics.toml\"\n");
    std::fs::write(&missing, &text).unwrap();
    let e = Config::load(&missing).unwrap_err();
    let want = format!(
        "topics.declarations (line 9): cannot read {}: ",
        dir.path().join("no/such/topics.toml").display()
    );
    assert!(e.errors[0].to_string().starts_with(&want), "{e}");
}

#[test]
fn classic_only_properties_need_the_classic_protocol() {
    let consumer_protocol =
        format!("[kafka]\nconsumer = {{ \"session.timeout.ms\" = \"10000\" }}\n{MINIMAL}");
    let errs = Config::from_toml(&consumer_protocol, None).unwrap_err();
    let text = errs.to_string();
    assert!(
        text.contains("kafka.consumer.session.timeout.ms") && text.contains("classic"),
        "{text}"
    );
    let classic = format!(
        "[kafka]\nconsumer = {{ \"group.protocol\" = \"classic\", \"session.timeout.ms\" = \"10000\" }}\n{MINIMAL}"
    );
    let c = Config::from_toml(&classic, None).unwrap();
    assert!(crate::kafka::classic_protocol(&c.kafka));
    let cc = crate::kafka::consumer_config(&c.kafka);
    assert_eq!(cc.get("session.timeout.ms"), Some("10000"));
    assert_eq!(cc.get("group.protocol"), Some("classic"));
    let default = Config::from_toml(MINIMAL, None).unwrap();
    let cc = crate::kafka::consumer_config(&default.kafka);
    assert_eq!(cc.get("group.protocol"), Some("consumer"));
    assert_eq!(cc.get("group.remote.assignor"), Some("range"));
    assert_eq!(cc.get("session.timeout.ms"), None);
}

#[test]
fn common_properties_reach_every_client_and_tls_finds_the_system_cas() {
    let text = format!(
        "[kafka]\ncommon = {{ \"security.protocol\" = \"SASL_SSL\", \"sasl.mechanism\" = \"PLAIN\" }}\n{MINIMAL}"
    );
    let c = Config::from_toml(&text, None).unwrap();
    for cc in [
        crate::kafka::consumer_config(&c.kafka),
        crate::kafka::producer_config(&c.kafka),
        crate::kafka::client_config(&c.kafka),
    ] {
        assert_eq!(cc.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(cc.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(cc.get("ssl.ca.location"), Some("probe"));
    }
    let plain = Config::from_toml(MINIMAL, None).unwrap();
    assert_eq!(
        crate::kafka::client_config(&plain.kafka).get("ssl.ca.location"),
        None
    );
    let managed = format!("[kafka]\ncommon = {{ \"group.id\" = \"x\" }}\n{MINIMAL}");
    let text = Config::from_toml(&managed, None).unwrap_err().to_string();
    assert!(text.contains("kafka.common.group.id"), "{text}");
}
