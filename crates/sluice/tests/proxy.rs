//! The gateway end to end over real loopback HTTP: `sluice serve`'s app in front of `sluice simulate`'s
//! app or a recording upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice_simulate::{Fault, SimConfig};

fn sim(config: SimConfig) -> SimConfig {
    config
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "errors are JSON"
    );
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "error body lacks `{field}`: {body}");
    }
    (status, error.clone())
}

#[tokio::test]
async fn non_streaming_completion_is_proxied_with_gateway_headers() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("x-request-id", "req-from-client-1")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-sluice-provider"], "up");
    assert_eq!(headers["x-sluice-attempts"], "1");
    assert_eq!(headers["x-request-id"], "req-from-client-1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "vendor-model", "the vendor's answer is passed through");
    assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(body["usage"]["completion_tokens"], 16);
    assert_eq!(upstream.stats().requests, 1);
}

#[tokio::test]
async fn a_request_id_is_made_when_the_client_sends_none() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let response = post_chat(&gateway, &chat_body(false)).await;
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    // Errors carry it too.
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn streaming_forwards_the_first_chunk_while_the_upstream_is_still_sending() {
    let upstream = SimServer::start(sim(SimConfig {
        tokens_per_sec: Some(20.0),
        reply_tokens: 40,
        ..SimConfig::default()
    }))
    .await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let response = post_chat(&gateway, &chat_body(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"content\":\"") || !text.contains("\n\n") {
        text.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
    }
    // The first chunks are here while the upstream has two seconds of tokens still to send.
    let stats = upstream.stats();
    assert_eq!(stats.streams_started, 1);
    assert_eq!(stats.streams_completed, 0, "the upstream stream must still be running");
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks.len(), 42, "role chunk, 40 tokens, finish chunk");
    assert!(
        chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "no usage chunk unless the client asked for it"
    );
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert_eq!(upstream.stats().streams_completed, 1);
}

/// `sluice_client_writes_total` from the gateway's `/metrics`.
async fn client_writes(gateway: &GatewayServer) -> u64 {
    let text = metrics_text(&gateway.url("/metrics")).await;
    metric_value(&text, "sluice_client_writes_total").expect("the counter is exposed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_chunks_that_arrive_together_leave_in_a_few_writes() {
    // No latency: the vendor's 42 events arrive together. Each used to cost the gateway a write (a system
    // call and a wake-up of the client); they are held for a scheduler round and leave together.
    let upstream = SimServer::start(sim(SimConfig {
        reply_tokens: 40,
        ..SimConfig::default()
    }))
    .await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let mut writes = Vec::new();
    for _ in 0..5 {
        let before = client_writes(&gateway).await;
        let text = post_chat(&gateway, &chat_body(true)).await.text().await.unwrap();
        let events = sse_data(&text);
        assert_eq!(events.len(), 43, "42 chunks and [DONE]: {text}");
        assert_eq!(events.last().unwrap(), "[DONE]");
        // Less the one write of the `/metrics` answer read before.
        writes.push(client_writes(&gateway).await - before - 1);
    }
    writes.sort_unstable();
    assert!(writes[2] <= 6, "writes per stream of 43 events: {writes:?}");
}

#[tokio::test]
async fn stream_usage_is_requested_upstream_and_forwarded_only_when_asked() {
    let (capture, upstream) = Capture::start(|_| {
        sse_response(&[
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"v","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"v","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"v","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
            "[DONE]",
        ])
    })
    .await;
    let gateway = GatewayServer::start(&config_for(&format!("{}/v1", upstream.url()), "")).await;

    let text = post_chat(&gateway, &chat_body(true)).await.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.len(), 3, "{text}");
    assert!(!text.contains("\"usage\":{"), "usage chunk dropped: {text}");
    assert_eq!(capture.last().1["stream_options"], json!({"include_usage": true}));

    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = post_chat(&gateway, &body).await.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.len(), 4, "{text}");
    let usage: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 6);
    assert_eq!(events[3], "[DONE]");
}

#[tokio::test]
async fn unknown_fields_pass_through_untouched_and_the_vendor_body_comes_back() {
    let vendor_answer = json!({
        "id": "chatcmpl-xyz", "object": "chat.completion", "created": 1700000000, "model": "vendor-model-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok", "annotations": []},
                     "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        "system_fingerprint": "fp_1", "service_tier": "default"
    });
    let answer = vendor_answer.clone();
    let (capture, upstream) = Capture::start(move |_| json_response(200, answer.clone())).await;
    let gateway = GatewayServer::start(&config_for(&format!("{}/v1", upstream.url()), "")).await;
    let sent = json!({
        "model": "m",
        "messages": [
            {"role": "developer", "content": "be brief", "x_note": {"deep": [1, 2]}},
            {"role": "user", "content": [
                {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
            ]}
        ],
        "seed": 42,
        "logit_bias": {"50256": -100},
        "reasoning_effort": "low",
        "metadata": {"team": "search"},
        "parallel_tool_calls": false,
        "temperature": 0.25
    });
    let response = post_chat(&gateway, &sent).await;
    assert_eq!(response.status(), 200);
    let got: Value = response.json().await.unwrap();
    assert_eq!(got, vendor_answer, "the client gets the vendor's body");
    let (headers, upstream_body) = capture.last();
    let mut expected = sent.clone();
    expected["model"] = json!("vendor-model");
    assert_eq!(upstream_body, expected, "only the model name changes on the way");
    assert_eq!(
        headers["authorization"], "Bearer sk-upstream-1",
        "the upstream key, never the client's"
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_that_says_where() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("content-type", "application/json")
        .body("{\"model\": \"m\",\n \"messages\": [}")
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].as_str().unwrap().contains("line 2, column"), "{error}");
    assert_eq!(upstream.stats().requests, 0);
}

#[tokio::test]
async fn missing_and_mistyped_fields_are_named() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "body",
            "missing field `model`",
        ),
        (json!({"model": "m"}), "body", "missing field `messages`"),
        (
            json!({"model": "m", "messages": "hi"}),
            "messages",
            "expected a sequence",
        ),
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
            "unknown variant `robot`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            "max_tokens",
            "invalid value",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            "stream",
            "expected a boolean",
        ),
        (
            json!({"model": "m", "messages": []}),
            "messages",
            "at least one message",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 7}),
            "temperature",
            "between 0 and 2",
        ),
    ];
    for (body, param, message) in cases {
        let (status, error) = error_of(post_chat(&gateway, &body).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["param"], param, "{body} -> {error}");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{body} -> {error}"
        );
    }
    assert_eq!(upstream.stats().requests, 0);
}

#[tokio::test]
async fn unknown_model_is_a_404_listing_the_known_ones() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let mut body = chat_body(false);
    body["model"] = json!("gpt-7");
    let (status, error) = error_of(post_chat(&gateway, &body).await).await;
    assert_eq!(status, 404);
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("gpt-7") && message.contains("Available models: m."),
        "{message}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_declared_or_streamed() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let config = config_for(&upstream.base_url(), "").replace("[auth]", "[server]\nmax_body_bytes = 1024\n\n[auth]");
    let gateway = GatewayServer::start(&config).await;
    let mut body = chat_body(false);
    body["messages"][0]["content"] = json!("x".repeat(4096));
    let (status, error) = error_of(post_chat(&gateway, &body).await).await;
    assert_eq!(status, 413);
    assert!(error["message"].as_str().unwrap().contains("1024 bytes"), "{error}");
    // Without a content-length, the limit applies while reading.
    let bytes = body.to_string().into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(512).map(|c| Ok(c.to_vec())).collect();
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(response).await;
    assert_eq!(status, 413);
    assert_eq!(error["code"], "request_too_large");
    assert_eq!(upstream.stats().requests, 0);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let gateway = GatewayServer::start(&config_for(&format!("http://{addr}/v1"), "max_attempts = 1")).await;
    let (status, error) = error_of(post_chat(&gateway, &chat_body(false)).await).await;
    assert_eq!(status, 502);
    assert_eq!(error["code"], "upstream_unreachable");
    assert!(
        !error["message"].as_str().unwrap().contains(&addr.to_string()),
        "no internal address: {error}"
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_in_bounded_time() {
    let upstream = SimServer::start(sim(SimConfig {
        fault: Some(Fault::Hang),
        ..SimConfig::default()
    }))
    .await;
    let config = config_for(&upstream.base_url(), "max_attempts = 1")
        .replace("first_byte_timeout_ms = 5000", "first_byte_timeout_ms = 300");
    let gateway = GatewayServer::start(&config).await;
    let started = std::time::Instant::now();
    let (status, error) = error_of(post_chat(&gateway, &chat_body(true)).await).await;
    assert_eq!(status, 504);
    assert_eq!(error["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_vendor_4xx_reaches_the_client_with_its_message() {
    let (capture, upstream) = Capture::start(|_| {
        json_response(
            400,
            json!({"error": {"message": "Invalid value for 'top_logprobs': must be <= 20.", "type": "invalid_request_error",
                             "param": "top_logprobs", "code": "invalid_value"}}),
        )
    })
    .await;
    let gateway = GatewayServer::start(&config_for(&format!("{}/v1", upstream.url()), "")).await;
    let response = post_chat(&gateway, &chat_body(false)).await;
    assert_eq!(
        response.headers()["x-sluice-attempts"],
        "1",
        "an invalid request is not retried"
    );
    let (status, error) = error_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(error["message"], "Invalid value for 'top_logprobs': must be <= 20.");
    assert_eq!(error["param"], "top_logprobs");
    assert_eq!(error["code"], "invalid_value");
    assert_eq!(capture.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_vendor_401_is_the_gateways_problem_not_the_clients() {
    let (capture, upstream) = Capture::start(|_| {
        json_response(
            401,
            json!({"error": {"message": "Incorrect API key provided: sk-upstr**********-1.", "type": "invalid_request_error",
                             "param": null, "code": "invalid_api_key"}}),
        )
    })
    .await;
    let gateway = GatewayServer::start(&config_for(&format!("{}/v1", upstream.url()), "max_attempts = 1")).await;
    let (status, error) = error_of(post_chat(&gateway, &chat_body(false)).await).await;
    assert_eq!(status, 502);
    assert_eq!(error["code"], "upstream_authentication_failed");
    assert!(!error["message"].as_str().unwrap().contains("sk-"), "{error}");
    // The refused key is out of the pool: the next request does not reach the upstream with it.
    let (status, error) = error_of(post_chat(&gateway, &chat_body(false)).await).await;
    assert_eq!(status, 503);
    assert_eq!(error["code"], "provider_not_configured");
    // Which key was refused is the operator's to know (the log, `/admin/limits`), not the client's.
    assert!(!error["message"].as_str().unwrap().contains("up#0"), "{error}");
    let pool = gateway.gateway.router.models()[0].deployments()[0].provider();
    assert_eq!(pool.out_ids(tokio::time::Instant::now()).collect::<Vec<_>>(), ["up#0"]);
    assert_eq!(capture.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_vendor_403_about_the_request_reaches_the_client_and_the_key_stays() {
    // OpenAI's answer to a key whose project may not use the model: the request's problem, not the key's.
    let (capture, upstream) = Capture::start(|_| {
        json_response(
            403,
            json!({"error": {"message": "Project `proj_abc` does not have access to model `gpt-4o-mini`",
                             "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
        )
    })
    .await;
    let gateway = GatewayServer::start(&config_for(&format!("{}/v1", upstream.url()), "max_attempts = 3")).await;
    for sent in 1..=2 {
        let response = post_chat(&gateway, &chat_body(false)).await;
        assert_eq!(response.headers()["x-sluice-attempts"], "1", "a refusal is not retried");
        let (status, error) = error_of(response).await;
        assert_eq!(status, 403);
        assert_eq!(
            error["message"],
            "Project `proj_abc` does not have access to model `gpt-4o-mini`"
        );
        assert_eq!(error["code"], "model_not_found");
        // The key stays in the pool: every request reaches the upstream with it.
        assert_eq!(capture.requests.lock().unwrap().len(), sent);
    }
}

#[tokio::test]
async fn a_missing_or_wrong_client_key_is_a_401() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let no_key = client()
        .post(gateway.url("/v1/chat/completions"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(no_key).await;
    assert_eq!((status, error["code"].as_str()), (401, Some("missing_api_key")));
    let wrong = client()
        .get(gateway.url("/v1/models"))
        .bearer_auth("sk-nope")
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(wrong).await;
    assert_eq!((status, error["code"].as_str()), (401, Some("invalid_api_key")));
    assert_eq!(upstream.stats().requests, 0);
}

#[tokio::test]
async fn a_provider_without_keys_answers_503_and_never_falls_back() {
    const ADMIN: &str = "sk-proxy-admin-0123456789abcdefghijklmn";
    let config = format!(
        r#"
[auth]
keys = ["{CLIENT_KEY}"]
admin_key = "{ADMIN}"
[[providers]]
name = "openai"
kind = "openai"
keys = ["env:SLUICE_TEST_UNSET_KEY"]
[[providers]]
name = "demo"
kind = "simulated"
[[models]]
name = "gpt-4o"
[[models.deployments]]
provider = "openai"
model = "gpt-4o"
[[models]]
name = "sluice-demo"
[[models.deployments]]
provider = "demo"
model = "sluice-demo"
"#
    );
    let gateway = GatewayServer::start(&config).await;
    assert!(
        gateway.warnings.iter().any(|w| w.contains("SLUICE_TEST_UNSET_KEY")),
        "{:?}",
        gateway.warnings
    );
    let mut body = chat_body(false);
    body["model"] = json!("gpt-4o");
    let (status, error) = error_of(post_chat(&gateway, &body).await).await;
    assert_eq!(status, 503);
    assert_eq!(error["code"], "provider_not_configured");
    // The variable to set is the operator's to know: told on `/admin/limits`, never to a client.
    assert!(
        !error["message"].as_str().unwrap().contains("SLUICE_TEST_UNSET_KEY"),
        "{error}"
    );
    let limits = get_json(&gateway, "/admin/limits", ADMIN).await;
    let openai = limits["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "openai")
        .unwrap();
    assert_eq!(openai["missing_env"], json!(["SLUICE_TEST_UNSET_KEY"]), "{limits}");
    assert_eq!(openai["enabled"], false);
    // The simulated model still works.
    body["model"] = json!("sluice-demo");
    let response = post_chat(&gateway, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-provider"], "demo");
}

async fn broken_stream(fault: Fault, extra: &str) -> (Vec<String>, SimServer) {
    // Paced, so the chunks before the fault reach the gateway before it: a stream that fails before
    // its first chunk is not broken but failed, and fails over instead.
    let upstream = SimServer::start(sim(SimConfig {
        fault: Some(fault),
        tokens_per_sec: Some(50.0),
        ..SimConfig::default()
    }))
    .await;
    let config = config_for(&upstream.base_url(), extra);
    let gateway = GatewayServer::start(&config).await;
    let response = post_chat(&gateway, &chat_body(true)).await;
    assert_eq!(response.status(), 200, "the stream had started before it broke");
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("a broken stream must end in bounded time")
        .unwrap();
    (sse_data(&text), upstream)
}

fn assert_ends_with_error(events: &[String], code: &str) {
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "a cut answer must not end with [DONE]: {events:?}"
    );
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error", "{last}");
    assert_eq!(last["error"]["code"], code, "{last}");
    assert!(last["error"]["message"].as_str().unwrap().contains("incomplete"));
    assert!(
        events.len() >= 4,
        "the chunks before the break were forwarded: {events:?}"
    );
}

#[tokio::test]
async fn a_stream_reset_mid_way_ends_with_an_error_event_and_no_done() {
    let (events, upstream) = broken_stream(Fault::ResetAfter(4), "").await;
    assert_ends_with_error(&events, "upstream_error");
    assert_eq!(
        upstream.stats().requests,
        1,
        "a stream that already reached the client is not retried"
    );
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_chunk_fails_over() {
    let upstream = SimServer::start(sim(SimConfig {
        fault: Some(Fault::ResetAfter(0)),
        ..SimConfig::default()
    }))
    .await;
    let config = config_for(&upstream.base_url(), "").replace(
        r#"keys = ["sk-upstream-1"]"#,
        r#"keys = ["sk-upstream-1", "sk-upstream-2"]"#,
    );
    let gateway = GatewayServer::start(&config).await;
    let response = post_chat(&gateway, &chat_body(true)).await;
    assert_eq!(
        response.headers()["x-sluice-attempts"],
        "2",
        "each key is one candidate"
    );
    let (status, error) = error_of(response).await;
    assert_eq!(status, 502);
    assert_eq!(error["code"], "upstream_error");
    assert_eq!(upstream.stats().requests, 2);
}

#[tokio::test]
async fn a_stalled_stream_hits_the_idle_timeout() {
    let (events, _upstream) = broken_stream(Fault::StallAfter(4), "").await;
    // config_for sets idle_timeout_ms = 5000; the error names the timeout.
    assert_ends_with_error(&events, "upstream_timeout");
}

#[tokio::test]
async fn a_malformed_event_ends_the_stream_with_an_error_event() {
    let (events, _upstream) = broken_stream(Fault::MalformedAfter(4), "").await;
    assert_ends_with_error(&events, "upstream_error");
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_stream() {
    let upstream = SimServer::start(sim(SimConfig {
        tokens_per_sec: Some(10.0),
        reply_tokens: 100,
        ..SimConfig::default()
    }))
    .await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let response = post_chat(&gateway, &chat_body(true)).await;
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    assert_eq!(upstream.stats().streams_started, 1);
    drop(body);
    let cancelled = eventually(Duration::from_secs(3), || upstream.stats().streams_cancelled == 1).await;
    assert!(
        cancelled,
        "the upstream stream was not cancelled: {:?}",
        upstream.stats()
    );
    assert_eq!(upstream.stats().streams_completed, 0);
}

#[tokio::test]
async fn a_rate_limited_deployment_fails_over_to_the_next() {
    let (limited, limited_server) = Capture::start(|_| {
        let mut response = json_response(
            429,
            json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        );
        response.headers_mut().insert("retry-after", http::HeaderValue::from_static("20"));
        response
    })
    .await;
    let good = SimServer::start(SimConfig::default()).await;
    let config = format!(
        r#"
[auth]
keys = ["{CLIENT_KEY}"]
[[providers]]
name = "first"
kind = "openai_compatible"
base_url = "{}/v1"
keys = ["k1"]
[[providers]]
name = "second"
kind = "openai_compatible"
base_url = "{}"
keys = ["k2"]
[[models]]
name = "m"
[[models.deployments]]
provider = "first"
model = "a"
priority = 0
[[models.deployments]]
provider = "second"
model = "b"
priority = 1
"#,
        limited_server.url(),
        good.base_url()
    );
    let gateway = GatewayServer::start(&config).await;
    let response = post_chat(&gateway, &chat_body(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-provider"], "second");
    assert_eq!(response.headers()["x-sluice-attempts"], "2");
    assert!(response.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    assert_eq!(limited.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn when_every_key_is_rate_limited_the_client_gets_429_with_retry_after() {
    let upstream = SimServer::start(sim(SimConfig {
        rpm: Some(1),
        ..SimConfig::default()
    }))
    .await;
    let config = config_for(&upstream.base_url(), "").replace(
        r#"keys = ["sk-upstream-1"]"#,
        r#"keys = ["sk-upstream-1", "sk-upstream-2"]"#,
    );
    let gateway = GatewayServer::start(&config).await;
    for _ in 0..2 {
        assert_eq!(post_chat(&gateway, &chat_body(false)).await.status(), 200);
    }
    let response = post_chat(&gateway, &chat_body(false)).await;
    assert_eq!(response.headers()["x-sluice-attempts"], "2", "both keys were tried");
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, error) = error_of(response).await;
    assert_eq!(status, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");
    // The simulator refused, so no key went over its limit.
    assert!(upstream.stats().keys.values().all(|k| k.requests <= 1));
}

#[tokio::test]
async fn models_health_and_readiness() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let models: Value = get_json(&gateway, "/v1/models", CLIENT_KEY).await;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "m");
    assert_eq!(models["data"][0]["object"], "model");
    for path in ["/healthz", "/readyz"] {
        let response = client().get(gateway.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} is public");
    }
    let (status, _) = error_of(
        client()
            .get(gateway.url("/v1/nothing"))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = error_of(
        client()
            .get(gateway.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish() {
    let upstream = SimServer::start(sim(SimConfig {
        tokens_per_sec: Some(40.0),
        reply_tokens: 20,
        ..SimConfig::default()
    }))
    .await;
    let gateway = GatewayServer::start(&config_for(&upstream.base_url(), "")).await;
    let response = post_chat(&gateway, &chat_body(true)).await;
    let mut body = response.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    let addr = gateway.server.addr;
    let shutdown = tokio::spawn(gateway.server.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // New connections are refused while the stream drains.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .unwrap()
        .unwrap();
}
