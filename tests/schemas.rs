//! The JSON Schemas in topics/schemas/ agree with what the worker accepts and writes: the job
//! decoder accepts exactly the payloads the job schema accepts (a corpus of valid and invalid
//! envelopes, and the demo's mix, fed to both), and a result envelope validates against the
//! result schema.

use baton::config::ErrorClass;
use baton::envelope::{decode_job, DecodeError, JobResult};
use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!("{}/topics/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&v).unwrap()
}

/// Whether the job schema accepts `bytes`: they must be a JSON text (RFC 8259: UTF-8, no byte
/// order mark) whose value validates.
fn schema_accepts(job: &jsonschema::Validator, bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .is_some_and(|v| job.is_valid(&v))
}

/// Feeds every payload to the decoder and the schema; panics on the first disagreement, and
/// when a payload that is JSON is rejected under another class than `invalid_envelope`.
/// Returns how many both accepted.
fn agree(payloads: &[Vec<u8>]) -> usize {
    let job = schema("job.schema.json");
    let pipelines = vec!["support".to_string()];
    let mut accepted = 0;
    for bytes in payloads {
        let shown = String::from_utf8_lossy(bytes);
        let decoded = decode_job(Some(bytes), 1 << 20, "support", &pipelines);
        let by_schema = schema_accepts(&job, bytes);
        // Which pipeline a job names is the config's business, not the schema's.
        let envelope_ok = matches!(decoded, Ok(_) | Err(DecodeError::UnknownPipeline(_)));
        match &decoded {
            _ if envelope_ok => assert!(by_schema, "decoder accepts, schema rejects: {shown}"),
            Err(e) => assert!(!by_schema, "schema accepts, decoder rejects ({e}): {shown}"),
            Ok(_) => unreachable!(),
        }
        let is_json =
            std::str::from_utf8(bytes).is_ok_and(|t| serde_json::from_str::<Value>(t).is_ok());
        if let (false, Err(e), true) = (envelope_ok, &decoded, is_json) {
            assert_eq!(e.class(), ErrorClass::InvalidEnvelope, "{shown}: {e}");
        }
        accepted += usize::from(envelope_ok);
    }
    accepted
}

#[test]
fn the_job_schema_matches_the_decoder_on_the_demo_mix() {
    let cases: Vec<Vec<u8>> = baton::demo::tickets::generate(200, 3)
        .into_iter()
        .map(|r| r.value)
        .collect();
    let accepted = agree(&cases);
    assert!(accepted > 190 && accepted < 200, "{accepted}");
}

/// Valid envelopes, each an edge the schema allows.
const VALID: &[&str] = &[
    r#"{"id":"a","input":"x"}"#,
    r#"{"id":"a","input":""}"#,
    "  {\"id\":\"a\",\"input\":\"x\"}\n",
    r#"{"id":"é","input":"x"}"#,
    r#"{"id":"a","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"},{"role":"tool","content":"t"}]}"#,
    r#"{"id":"a","messages":[{"role":"tool","content":"42","tool_call_id":"c1"}]}"#,
    r#"{"id":"a","input":"x","messages":[{"role":"user","content":"hi"}]}"#,
    r#"{"id":"a","pipeline":"support","task":"simple","tenant":"t1","conversation_id":"c1","input":"x"}"#,
    r#"{"id":"a","messages":[{"role":"user","content":"hi"}],"params":{"temperature":0.2,"max_tokens":5,"top_p":1,"seed":-3,"stop":["x"]}}"#,
    r#"{"id":"a","input":"x","params":{},"policy":{}}"#,
    r#"{"id":"a","input":"x","params":{"max_tokens":64.0}}"#,
    r#"{"id":"a","input":"x","params":{"max_tokens":4294967295,"seed":-9223372036854775808}}"#,
    r#"{"id":"a","input":"x","policy":{"sensitivity":"restricted","residency":"eu","max_cost_usd":0,"max_latency_ms":18446744073709551615}}"#,
    r#"{"id":"a","input":"x","response_format":{"type":"json_object"},"metadata":{"a":[1,null]}}"#,
    r#"{"id":"a","input":"x","metadata":null,"response_format":null}"#,
    r#"{"id":"a","input":"x","unknown_field":true}"#,
    r#"{"id":"a","input":"x","trail":[]}"#,
    r#"{"id":"a","input":"x","trail":[{"step":"extract","model":"m","provider":"openai","usage":{"input_tokens":1,"output_tokens":2.0,"total_tokens":3},"cost_usd":0.1,"latency_ms":5,"attempts":1,"output":{"text":"{}","json":{}}}]}"#,
];

/// Invalid envelopes and payloads: each is one way a producer gets it wrong.
const INVALID: &[&[u8]] = &[
    // not JSON, or not a JSON text
    b"",
    b" ",
    b"{not json",
    b"\xff\xfe{}",
    b"\xEF\xBB\xBF{\"id\":\"a\",\"input\":\"x\"}",
    br#"{"id":"a","input":"x"} trailing"#,
    // JSON, but not an object
    br#"[{"id":"a","input":"x"}]"#,
    br#"["a", null, null, null, [{"role":"user","content":"hi"}]]"#,
    b"[]",
    br#""a job""#,
    b"42",
    b"null",
    // id
    br#"{"input":"x"}"#,
    br#"{"id":42,"input":"x"}"#,
    br#"{"id":"","input":"x"}"#,
    br#"{"id":"  ","input":"x"}"#,
    br#"{"id":null,"input":"x"}"#,
    "{\"id\":\"\u{a0}\",\"input\":\"x\"}".as_bytes(),
    // messages or input
    br#"{"id":"a"}"#,
    br#"{"id":"a","messages":[]}"#,
    br#"{"id":"a","messages":[["user","hi"]]}"#,
    br#"{"id":"a","messages":"hi"}"#,
    br#"{"id":"a","messages":null}"#,
    br#"{"id":"a","messages":[{"role":"admin","content":"hi"}]}"#,
    br#"{"id":"a","messages":[{"role":"User","content":"hi"}]}"#,
    br#"{"id":"a","messages":[{"role":7,"content":"hi"}]}"#,
    br#"{"id":"a","messages":[{"role":{"user":null},"content":"hi"}]}"#,
    br#"{"id":"a","messages":[{"role":"user"}]}"#,
    br#"{"id":"a","messages":[{"content":"hi"}]}"#,
    br#"{"id":"a","messages":[{"role":"user","content":["hi"]}]}"#,
    br#"{"id":"a","messages":[{"role":"user","content":null}]}"#,
    br#"{"id":"a","input":42}"#,
    br#"{"id":"a","input":null}"#,
    // params
    br#"{"id":"a","input":"x","params":[0.2, 5]}"#,
    br#"{"id":"a","input":"x","params":null}"#,
    br#"{"id":"a","input":"x","params":{"temperature":"hot"}}"#,
    br#"{"id":"a","input":"x","params":{"max_tokens":-1}}"#,
    br#"{"id":"a","input":"x","params":{"max_tokens":1.5}}"#,
    br#"{"id":"a","input":"x","params":{"max_tokens":4294967296}}"#,
    br#"{"id":"a","input":"x","params":{"max_tokens":null}}"#,
    br#"{"id":"a","input":"x","params":{"seed":9223372036854775808}}"#,
    br#"{"id":"a","input":"x","params":{"seed":9223372036854775807.0}}"#,
    br#"{"id":"a","input":"x","params":{"stop":"x"}}"#,
    br#"{"id":"a","input":"x","params":{"top_k":5}}"#,
    // policy
    br#"{"id":"a","input":"x","policy":{"sensitivity":17}}"#,
    br#"{"id":"a","input":"x","policy":{"sensitivity":"secret"}}"#,
    br#"{"id":"a","input":"x","policy":{"sensitivity":{"public":null}}}"#,
    br#"{"id":"a","input":"x","policy":{"sensitivity":null}}"#,
    br#"{"id":"a","input":"x","policy":{"max_cost_usd":-0.5}}"#,
    br#"{"id":"a","input":"x","policy":{"max_latency_ms":-5}}"#,
    br#"{"id":"a","input":"x","policy":{"max_latency_ms":1e20}}"#,
    br#"{"id":"a","input":"x","policy":{"max_latency_ms":18446744073709551616}}"#,
    br#"{"id":"a","input":"x","policy":{"region":"eu"}}"#,
    br#"{"id":"a","input":"x","policy":["public"]}"#,
    // the other typed fields
    br#"{"id":"a","input":"x","pipeline":null}"#,
    br#"{"id":"a","input":"x","task":5}"#,
    br#"{"id":"a","input":"x","tenant":["t"]}"#,
    br#"{"id":"a","input":"x","conversation_id":7}"#,
    br#"{"id":"a","input":"x","trail":null}"#,
    br#"{"id":"a","input":"x","trail":{}}"#,
    br#"{"id":"a","input":"x","trail":[{"step":"extract"}]}"#,
    br#"{"id":"a","input":"x","trail":[["extract","m","openai"]]}"#,
];

#[test]
fn the_decoder_accepts_exactly_what_the_job_schema_accepts() {
    let mut payloads: Vec<Vec<u8>> = VALID.iter().map(|s| s.as_bytes().to_vec()).collect();
    payloads.extend(INVALID.iter().map(|b| b.to_vec()));
    let accepted = agree(&payloads);
    // Both sides of the corpus are what they claim: the comparison is not vacuous.
    assert_eq!(accepted, VALID.len());
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
