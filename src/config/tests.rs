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
    let c = Config::from_toml(crate::demo::SAMPLE_CONFIG, None).unwrap();
    assert_eq!(c.models.len(), 3);
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
        "worker.max_in_flight: must be positive",
        "worker.metrics_listen: not a socket address",
        "models.m.base_url: must start with http",
        "models.m.context_window: must be positive",
        "pipelines.bad name: pipeline names may use only",
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
    assert_eq!(c.input_topics(), vec!["x-p.a", "x-p.b"]);
}

#[test]
fn missing_api_key_variable_names_the_key() {
    let text = MINIMAL.replace(
        "base_url = \"http://127.0.0.1:1/v1\"",
        "base_url = \"http://127.0.0.1:1/v1\"\napi_key_env = \"BATON_TEST_SURELY_UNSET_VAR\"",
    );
    let c = std::sync::Arc::new(Config::from_toml(&text, None).unwrap());
    let e = crate::pipeline::StepRunner::from_config(c).unwrap_err();
    assert_eq!(e.errors[0].path, "models.m.api_key_env");
    assert!(e.errors[0].message.contains("BATON_TEST_SURELY_UNSET_VAR"));
}

#[test]
fn overrides_that_would_break_delivery_guarantees_are_refused() {
    let text = format!(
        "{MINIMAL}\n[kafka]\nconsumer = {{ \"enable.auto.offset.store\" = \"true\", \"fetch.min.bytes\" = \"1\" }}\nproducer = {{ \"acks\" = \"1\" }}\n"
    );
    let e = errors(&text).join("\n");
    assert!(
        e.contains("kafka.consumer.enable.auto.offset.store: managed by baton"),
        "{e}"
    );
    assert!(e.contains("kafka.producer.acks: managed by baton"), "{e}");
    assert!(!e.contains("fetch.min.bytes"), "{e}");
}
