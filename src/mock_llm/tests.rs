//! End-to-end tests of the mock over real loopback HTTP, with reqwest as the client.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use super::*;

async fn start(toml: &str) -> MockLlm {
    let config = MockLlmConfig::from_toml_str(toml).expect("valid test config");
    MockLlm::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("mock starts")
}

fn chat(model: &str, text: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": text }] })
}

async fn post(client: &Client, mock: &MockLlm, body: &Value) -> reqwest::Response {
    client
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

fn admin(mock: &MockLlm, path: &str) -> String {
    format!("http://{}{path}", mock.local_addr())
}

/// `GET /mock/config` as JSON.
async fn get_config(client: &Client, mock: &MockLlm) -> Value {
    client
        .get(admin(mock, "/mock/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn normal_answer_with_usage() {
    let mock = start("").await;
    let client = Client::new();
    assert!(mock.base_url().starts_with("http://127.0.0.1:"));
    assert!(mock.base_url().ends_with("/v1"));

    let resp = post(&client, &mock, &chat("gpt-x", "hello there")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-x");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "You said: hello there");
    assert_eq!(choice["finish_reason"], "stop");
    // 3 priming + 4 per message + ceil(11 / 4); answer: ceil(21 / 4).
    assert_eq!(v["usage"]["prompt_tokens"], 3 + 4 + 3);
    assert_eq!(v["usage"]["completion_tokens"], 6);
    assert_eq!(v["usage"]["total_tokens"], 16);

    let health = client.get(admin(&mock, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");
    mock.shutdown().await;
}

#[tokio::test]
async fn json_mode_and_max_tokens() {
    let mock = start("[models.c]\nanswer = { canned = \"one two three four five six\" }").await;
    let client = Client::new();
    let mut body = chat("c", "x");
    body["response_format"] = json!({ "type": "json_object" });
    let v: Value = post(&client, &mock, &body).await.json().await.unwrap();
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["answer"], "one two three four five six");

    let mut body = chat("c", "x");
    body["max_tokens"] = json!(2);
    let v: Value = post(&client, &mock, &body).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "one two ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    mock.shutdown().await;
}

#[tokio::test]
async fn full_outage_model_returns_503_and_others_still_work() {
    let mock = start("[models.down]\nerrors = [{ status = 503, rate = 1.0 }]").await;
    let client = Client::new();
    for _ in 0..5 {
        let resp = post(&client, &mock, &chat("down", "hi")).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "server_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overloaded"));
    }
    let resp = post(&client, &mock, &chat("other", "hi")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    mock.shutdown().await;
}

#[tokio::test]
async fn rate_limited_with_and_without_retry_after() {
    let mock = start(
        "[models.limited]\nrate_limited = { rate = 1.0, retry_after_s = 7 }\n\
         [models.bare]\nrate_limited = { rate = 1.0 }",
    )
    .await;
    let client = Client::new();
    let resp = post(&client, &mock, &chat("limited", "hi")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    let resp = post(&client, &mock, &chat("bare", "hi")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    mock.shutdown().await;
}

#[tokio::test]
async fn malformed_body_is_not_valid_json() {
    let mock = start("[models.broken]\nmalformed_rate = 1.0").await;
    let client = Client::new();
    let resp = post(&client, &mock, &chat("broken", "hello")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    assert!(text.starts_with('{'), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    mock.shutdown().await;
}

#[tokio::test]
async fn context_window_and_content_filter() {
    let mock =
        start("[models.small]\ncontext_window = 50\ncontent_filter = [\"forbidden-word\"]").await;
    let client = Client::new();
    let resp = post(&client, &mock, &chat("small", &"x".repeat(400))).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("50 tokens"));

    let resp = post(&client, &mock, &chat("small", "say the FORBIDDEN-WORD")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "content_filter");

    let resp = post(&client, &mock, &chat("small", "short and clean")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    mock.shutdown().await;
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let mock = start("[default]\napi_key = \"sk-test\"").await;
    let client = Client::new();
    let resp = post(&client, &mock, &chat("m", "hi")).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let resp = client
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth("sk-wrong")
        .json(&chat("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = client
        .post(format!("{}/chat/completions", mock.base_url()))
        .bearer_auth("sk-test")
        .json(&chat("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    mock.shutdown().await;
}

#[tokio::test]
async fn put_model_changes_behaviour_at_runtime() {
    let mock = start("").await;
    let client = Client::new();
    let url = admin(&mock, "/mock/models/flaky");
    assert_eq!(
        post(&client, &mock, &chat("flaky", "hi")).await.status(),
        StatusCode::OK
    );

    let resp = client
        .put(&url)
        .json(&json!({ "errors": [{ "status": 503, "rate": 1.0 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        post(&client, &mock, &chat("flaky", "hi")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let config = get_config(&client, &mock).await;
    assert_eq!(config["models"]["flaky"]["errors"][0]["status"], 503);

    // Invalid behaviour: 400 naming the key; the old behaviour stays.
    let resp = client
        .put(&url)
        .json(&json!({ "errors": [{ "status": 503, "rate": 2.0 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("models.flaky.errors[0].rate"), "{msg}");
    let resp = client.put(&url).body("{\"bogus\":1}").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Back to normal, by PUT and by DELETE.
    let resp = client.put(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        post(&client, &mock, &chat("flaky", "hi")).await.status(),
        StatusCode::OK
    );
    let v: Value = client
        .delete(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["removed"], true);

    // In-process API does the same.
    mock.set_model(
        "default",
        ModelBehavior {
            errors: vec![ErrorSpec {
                status: 500,
                rate: 1.0,
            }],
            ..ModelBehavior::default()
        },
    )
    .unwrap();
    assert_eq!(
        post(&client, &mock, &chat("anything", "hi")).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn request_log_records_outcomes() {
    let mock = start(
        "[default]\nlatency = { fixed_ms = 30 }\n\
         [models.bad]\nerrors = [{ status = 500, rate = 1.0 }]\n\
         [models.limited]\nrate_limited = { rate = 1.0, retry_after_s = 1 }\n\
         [models.locked]\napi_key = \"k\"",
    )
    .await;
    let client = Client::new();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    post(&client, &mock, &chat("good", "hello there")).await;
    post(&client, &mock, &chat("bad", "hi")).await;
    post(&client, &mock, &chat("limited", "hi")).await;
    post(&client, &mock, &chat("locked", "hi")).await;
    client
        .post(format!("{}/chat/completions", mock.base_url()))
        .body("not json")
        .send()
        .await
        .unwrap();

    let all: Vec<RequestRecord> = client
        .get(admin(&mock, "/mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<(&str, Outcome, u16)> = all
        .iter()
        .map(|r| (r.model.as_str(), r.outcome, r.status))
        .collect();
    assert_eq!(
        got,
        [
            ("good", Outcome::Ok, 200),
            ("bad", Outcome::Error, 500),
            ("limited", Outcome::RateLimited, 429),
            ("locked", Outcome::Unauthorized, 401),
            ("", Outcome::InvalidRequest, 400),
        ]
    );
    let good = &all[0];
    assert!(good.at_ms >= before, "{good:?}");
    assert!(good.latency_ms >= 30, "{good:?}");
    assert_eq!((good.prompt_tokens, good.completion_tokens), (10, 6));
    assert_eq!(all, mock.request_log());

    let only_bad: Vec<RequestRecord> = client
        .get(admin(&mock, "/mock/requests?model=bad"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(only_bad.len(), 1);
    assert_eq!(only_bad[0].outcome, Outcome::Error);

    let v: Value = client
        .delete(admin(&mock, "/mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["cleared"], 5);
    assert!(mock.request_log().is_empty());
    mock.shutdown().await;
}

#[tokio::test]
async fn hung_request_ends_when_client_gives_up() {
    let mock = start("[models.stuck]\nhang_rate = 1.0").await;
    let client = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&chat("stuck", "hi"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let log = mock.request_log();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].outcome, log[0].status), (Outcome::Hang, 0));

    // The server notices the disconnect and drops the hung handler.
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.state().hanging() > 0 {
        assert!(Instant::now() < deadline, "hung request not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_hung_and_sleeping_requests() {
    let mock =
        start("[models.stuck]\nhang_rate = 1.0\n[models.slow]\nlatency = { fixed_ms = 60000 }")
            .await;
    let client = Client::new();
    let url = format!("{}/chat/completions", mock.base_url());
    let hung = tokio::spawn(client.post(&url).json(&chat("stuck", "hi")).send());
    let slow = tokio::spawn(client.post(&url).json(&chat("slow", "hi")).send());
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.state().hanging() == 0 {
        assert!(Instant::now() < deadline, "request never started hanging");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = mock.state().clone();
    let started = Instant::now();
    mock.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for task in [hung, slow] {
        let resp = task.await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(state.hanging(), 0);
}

#[tokio::test]
async fn client_leaving_during_latency_is_logged_as_cancelled() {
    let mock = start("[default]\nlatency = { fixed_ms = 5000 }").await;
    let client = Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let _ = post_result(&client, &mock, &chat("m", "hi")).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.request_log().is_empty() {
        assert!(Instant::now() < deadline, "cancellation not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = mock.request_log();
    assert_eq!((log[0].outcome, log[0].status), (Outcome::Cancelled, 0));
    mock.shutdown().await;
}

async fn post_result(
    client: &Client,
    mock: &MockLlm,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(body)
        .send()
        .await
}

#[tokio::test]
async fn same_seed_same_outcomes() {
    let toml = "seed = 42\n[default]\nerrors = [{ status = 500, rate = 0.5 }]";
    let client = Client::new();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mock = start(toml).await;
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(post(&client, &mock, &chat("m", "hi")).await.status());
        }
        mock.shutdown().await;
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&StatusCode::OK));
    assert!(runs[0].contains(&StatusCode::INTERNAL_SERVER_ERROR));
}

#[tokio::test]
async fn invalid_requests_get_openai_errors() {
    let mock = start("").await;
    let client = Client::new();
    let resp = post(&client, &mock, &json!({ "messages": [] })).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("model"));

    let mut body = chat("m", "hi");
    body["stream"] = json!(true);
    assert_eq!(
        post(&client, &mock, &body).await.status(),
        StatusCode::BAD_REQUEST
    );

    let resp = client
        .get(admin(&mock, "/v2/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string());
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_requests_do_not_queue() {
    let mock = start("request_log_capacity = 500\n[default]\nlatency = { fixed_ms = 200 }").await;
    let client = Client::builder()
        .pool_max_idle_per_host(2_000)
        .build()
        .unwrap();
    let started = Instant::now();
    let requests = (0..2_000).map(|i| {
        let client = client.clone();
        let url = format!("{}/chat/completions", mock.base_url());
        async move {
            client
                .post(url)
                .json(&chat("m", &format!("request {i}")))
                .send()
                .await
                .map(|r| r.status())
        }
    });
    let statuses = futures::future::join_all(requests).await;
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| matches!(s, Ok(StatusCode::OK))));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(mock.request_log().len(), 500, "log stays bounded");
    eprintln!("2000 concurrent requests at 200 ms took {elapsed:?}");
    mock.shutdown().await;
}

const CLASSIFIER: &str = r#"
seed = 7
[models."gpt-4.1-nano"]
answer = { classify = { rules = [ { contains = ["MSA", "indemnity", "invoice"], answer = "complex" } ], otherwise = "simple", noise_rate = 0.3 } }
output_tokens = [50, 100]
"#;

#[tokio::test]
async fn classifier_labels_are_exact_seeded_and_counted() {
    let client = Client::new();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mock = start(CLASSIFIER).await;
        let mut answers = Vec::new();
        for i in 0..40 {
            let text = if i % 2 == 0 { "Review the msa" } else { "hi" };
            let v: Value = post(&client, &mock, &chat("gpt-4.1-nano", text))
                .await
                .json()
                .await
                .unwrap();
            let content = v["choices"][0]["message"]["content"].as_str().unwrap();
            let expected = if i % 2 == 0 { "complex" } else { "simple" };
            assert!(
                content == expected || content == behavior::classify_noise_text(expected),
                "{content}"
            );
            // Usage counts the label as sent, unpadded despite output_tokens = [50, 100].
            assert_eq!(
                v["usage"]["completion_tokens"],
                behavior::estimate_tokens(content)
            );
            assert_eq!(
                v["usage"]["prompt_tokens"],
                3 + 4 + behavior::estimate_tokens(text)
            );
            answers.push(content.to_string());
        }
        mock.shutdown().await;
        runs.push(answers);
    }
    assert_eq!(runs[0], runs[1], "same seed, same noise");
    let noisy = runs[0].iter().filter(|a| a.len() > "complex".len()).count();
    assert!((1..40).contains(&noisy), "noise_rate 0.3 gave {noisy}/40");
}

#[tokio::test]
async fn classifier_round_trips_through_admin_endpoints() {
    let mock = start("").await;
    let client = Client::new();
    let behavior = json!({ "answer": { "classify": {
        "rules": [{ "contains": ["invoice"], "answer": "complex" }],
        "otherwise": "simple",
        "noise_rate": 0.0
    } } });
    let url = admin(&mock, "/mock/models/gpt-4.1-nano");
    let resp = client.put(&url).json(&behavior).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["answer"], behavior["answer"]);
    let config = get_config(&client, &mock).await;
    let got = &config["models"]["gpt-4.1-nano"];
    assert_eq!(got["answer"], behavior["answer"]);
    // What GET returns can be PUT back unchanged.
    let resp = client.put(&url).json(got).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = post(&client, &mock, &chat("gpt-4.1-nano", "INVOICE due"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "complex");

    let bad = json!({ "answer": { "classify": { "otherwise": "simple", "noise_rate": 2.0 } } });
    let resp = client.put(&url).json(&bad).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("models.\"gpt-4.1-nano\".answer.classify.noise_rate"),
        "{msg}"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn json_modes_answer_for_the_requests_schema_and_the_log_keeps_messages() {
    let mock = start(
        r#"
request_log_messages = true
[models.valid]
answer = { json = "valid" }
[models.fix]
answer = { json = "invalid_then_valid" }
[models.never]
answer = { json = "invalid" }
"#,
    )
    .await;
    let schema = json!({"type": "object", "required": ["risk"], "properties": {"risk": {"enum": ["low", "high"]}}});
    let validator = jsonschema::validator_for(&schema).unwrap();
    let client = Client::new();
    let ask = |model: &str, repair: bool| {
        let mut messages = vec![json!({"role": "user", "content": "a contract"})];
        if repair {
            messages.push(json!({"role": "assistant", "content": "{}"}));
            messages.push(json!({"role": "user", "content": "fix it"}));
        }
        json!({
            "model": model, "messages": messages,
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
        })
    };
    let answer = |model: &'static str, repair: bool| {
        let body = ask(model, repair);
        let client = client.clone();
        let mock = &mock;
        async move {
            let v: Value = post(&client, mock, &body).await.json().await.unwrap();
            let text = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            serde_json::from_str::<Value>(&text).unwrap()
        }
    };
    assert!(validator.is_valid(&answer("valid", false).await));
    assert!(!validator.is_valid(&answer("fix", false).await));
    assert!(validator.is_valid(&answer("fix", true).await));
    assert!(!validator.is_valid(&answer("never", true).await));
    let log = mock.state().request_log();
    assert_eq!(log[2].messages.len(), 3);
    assert_eq!(log[2].messages[1].role, "assistant");
    assert_eq!(log[2].messages[2].content, "fix it");
}

#[tokio::test]
async fn truncated_empty_and_refusal_modes() {
    let mock = start(
        r#"
[models.cut]
answer = { truncated = true }
[models.blank]
answer = { empty = true }
[models.no]
answer = { refusal = "I can't help with that." }
"#,
    )
    .await;
    let client = Client::new();
    let first = |v: Value| v["choices"][0].clone();
    let cut = first(
        post(&client, &mock, &chat("cut", "tell me a long story"))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(cut["finish_reason"], "length");
    assert!(
        cut["message"]["content"].as_str().unwrap().len() < "You said: tell me a long story".len()
    );
    let blank = first(
        post(&client, &mock, &chat("blank", "hi"))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(blank["message"]["content"], "");
    let no = first(
        post(&client, &mock, &chat("no", "hi"))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(no["message"]["content"], Value::Null);
    assert_eq!(no["message"]["refusal"], "I can't help with that.");
    assert!(
        mock.state().request_log()[0].messages.is_empty(),
        "messages are logged only when asked"
    );
}
