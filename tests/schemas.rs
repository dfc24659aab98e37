//! The JSON Schemas in topics/schemas/ agree with what the worker accepts and writes: every
//! sample job the worker decodes validates, every envelope-level rejection is also rejected by
//! the schema, and a result envelope validates against the result schema.

use baton::envelope::{decode_job, DecodeError, JobResult};
use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/topics/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&v).unwrap()
}

#[test]
fn the_job_schema_matches_the_decoder() {
    let job = schema("job.schema.json");
    let pipelines = vec!["support".to_string()];
    let mut cases: Vec<Vec<u8>> = baton::demo::tickets::generate(200, 3)
        .into_iter()
        .map(|r| r.value)
        .collect();
    for extra in [
        r#"{"id":"a","messages":[{"role":"user","content":"hi"}],"params":{"max_tokens":5,"stop":["x"]}}"#,
        r#"{"id":"a","input":"x","policy":{"sensitivity":"restricted","residency":"eu","max_cost_usd":0.5}}"#,
        r#"{"id":"a","input":"x","policy":{"sensitivity":"secret"}}"#,
        r#"{"id":"a","input":"x","params":{"temperature":"hot"}}"#,
        r#"{"id":"a","messages":[]}"#,
        r#"{"id":"  ","input":"x"}"#,
        r#"{"id":"a","input":"x","unknown_field":true}"#,
        r#"{"id":"a","input":"x","trail":[{"step":"extract","model":"m","provider":"openai","usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3},"cost_usd":0.1,"latency_ms":5,"attempts":1,"output":{"text":"{}","json":{}}}]}"#,
        r#"{"id":"a","input":"x","trail":[{"step":"extract"}]}"#,
    ] {
        cases.push(extra.as_bytes().to_vec());
    }
    let mut checked = 0;
    for bytes in cases {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        match decode_job(Some(&bytes), 1 << 20, "support", &pipelines) {
            Ok(_) => assert!(
                job.is_valid(&value),
                "decoder accepts but schema rejects: {text}"
            ),
            Err(DecodeError::Envelope(why)) => assert!(
                !job.is_valid(&value),
                "schema accepts what the decoder rejects ({why}): {text}"
            ),
            Err(_) => {}
        }
        checked += 1;
    }
    assert!(checked > 190);
}

#[test]
fn a_result_envelope_validates() {
    let result: JobResult = serde_json::from_value(serde_json::json!({
        "id": "j1", "pipeline": "support", "step": "answer",
        "output": { "text": "{\"ok\":true}", "json": { "ok": true }, "finish_reason": "stop" },
        "model": "cheap-fast", "provider": "openai",
        "usage": { "input_tokens": 12, "output_tokens": 4, "total_tokens": 16 },
        "cost_usd": 0.0000042, "latency_ms": 230, "attempts": 1,
        "variant": "control",
        "route": {
            "route": "support", "class": "simple", "rule": "classifier", "variant": "control",
            "classifier": { "model": "triage", "answer": "simple", "valid": true, "cost_usd": 0.0000012 },
            "prompt_tokens": 12, "candidates": ["cheap-fast", "premium"],
            "estimated_cost_usd": [0.0000018, 0.000036],
            "dropped": [{ "model": "on-prem", "reason": "lacks capability json_schema" }]
        },
        "started_at": "2026-11-24T10:00:00.000Z", "finished_at": "2026-11-24T10:00:00.230Z",
        "metadata": { "a": 1 },
        "total_cost_usd": 0.0000096,
        "trail": [{
            "step": "extract", "model": "cheap-fast", "provider": "openai",
            "usage": { "input_tokens": 10, "output_tokens": 5, "total_tokens": 15, "reasoning_tokens": 2 },
            "cost_usd": 0.0000042, "latency_ms": 120, "attempts": 2,
            "output": { "text": "{}", "json": {}, "tool_calls": [{ "id": "c1", "name": "answer", "arguments": "{}" }] }
        }]
    }))
    .unwrap();
    let value = serde_json::to_value(&result).unwrap();
    let errors: Vec<String> = schema("result.schema.json")
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}
