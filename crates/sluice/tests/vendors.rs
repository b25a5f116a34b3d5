//! Each vendor adapter end to end: the gateway translates an OpenAI request to the vendor's wire format,
//! sends it to an upstream that answers as the vendor's documentation shows, and the client gets OpenAI's
//! format back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use serde_json::{Value, json};

fn gateway_config(kind: &str, base_url: &str, extra: &str) -> String {
    format!(
        r#"
[auth]
keys = ["{CLIENT_KEY}"]
[[providers]]
name = "vendor"
kind = "{kind}"
base_url = "{base_url}"
keys = ["vendor-secret"]
{extra}
[[models]]
name = "m"
[[models.deployments]]
provider = "vendor"
model = "vendor-model"
max_tokens = 321
"#
    )
}

fn conversation(stream: bool) -> Value {
    json!({
        "model": "m",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    })
}

#[tokio::test]
async fn anthropic_messages_both_ways() {
    let (capture, upstream) = Capture::start(|_| {
        json_response(
            200,
            json!({
                "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 42, "output_tokens": 17, "cache_read_input_tokens": 8}
            }),
        )
    })
    .await;
    let gateway = GatewayServer::start(&gateway_config("anthropic", &upstream.url(), "")).await;
    let response = post_chat(&gateway, &conversation(false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check.");
    assert_eq!(choice["message"]["tool_calls"][0]["id"], "toolu_01");
    assert_eq!(choice["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(
            choice["message"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(body["usage"]["completion_tokens"], 17);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 8);

    assert_eq!(capture.paths.lock().unwrap()[0], "/v1/messages");
    let (headers, sent) = capture.last();
    assert_eq!(headers["x-api-key"], "vendor-secret");
    assert!(headers.get("authorization").is_none());
    assert!(headers.contains_key("anthropic-version"));
    assert_eq!(sent["model"], "vendor-model");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(
        sent["max_tokens"], 321,
        "the deployment's default, since the client set none"
    );
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}])
    );
    assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["city"]));
}

#[tokio::test]
async fn anthropic_streams_become_openai_chunks() {
    let (_capture, upstream) = Capture::start(|_| {
        let events = [
            ("message_start", r#"{"type":"message_start","message":{"id":"msg_02","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ("ping", r#"{"type":"ping"}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}"#),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            ("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}"#),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let body: String = events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect();
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from(body))
            .unwrap()
    })
    .await;
    let gateway = GatewayServer::start(&gateway_config("anthropic", &upstream.url(), "")).await;
    let mut request = conversation(true);
    request["stream_options"] = json!({"include_usage": true});
    let text = post_chat(&gateway, &request).await.text().await.unwrap();
    let events = sse_data(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello there");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()),
        (Some(12), Some(2))
    );
}

#[tokio::test]
async fn gemini_generate_content_both_ways() {
    let (capture, upstream) = Capture::start(|_| {
        json_response(
            200,
            json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": "Sunny, 21°C."}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 6, "totalTokenCount": 36},
                "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"
            }),
        )
    })
    .await;
    let gateway = GatewayServer::start(&gateway_config("gemini", &upstream.url(), "")).await;
    let response = post_chat(&gateway, &conversation(false)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Sunny, 21°C.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 30);
    assert_eq!(body["usage"]["completion_tokens"], 6);
    assert_eq!(
        capture.paths.lock().unwrap()[0],
        "/v1beta/models/vendor-model:generateContent"
    );
    let (headers, sent) = capture.last();
    assert_eq!(headers["x-goog-api-key"], "vendor-secret");
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(sent["contents"][0]["role"], "user");
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 321);
    assert_eq!(sent["tools"][0]["functionDeclarations"][0]["name"], "get_weather");
}

#[tokio::test]
async fn azure_deployments_use_the_api_key_header() {
    let (capture, upstream) = Capture::start(|_| {
        json_response(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
        )
    })
    .await;
    let config = gateway_config("azure", &upstream.url(), r#"api_version = "2024-10-21""#);
    let gateway = GatewayServer::start(&config).await;
    let response = post_chat(&gateway, &conversation(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        capture.paths.lock().unwrap()[0],
        "/openai/deployments/vendor-model/chat/completions?api-version=2024-10-21"
    );
    let (headers, _) = capture.last();
    assert_eq!(headers["api-key"], "vendor-secret");
    assert!(headers.get("authorization").is_none());
}

#[tokio::test]
async fn a_vendor_invalid_request_reaches_the_client_in_openai_shape() {
    let (_capture, upstream) = Capture::start(|_| {
        json_response(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "messages: roles must alternate"}}),
        )
    })
    .await;
    let gateway = GatewayServer::start(&gateway_config("anthropic", &upstream.url(), "")).await;
    let response = post_chat(&gateway, &conversation(false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "messages: roles must alternate");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

async fn post_embeddings(gateway: &GatewayServer, body: Value) -> reqwest::Response {
    client()
        .post(gateway.url("/v1/embeddings"))
        .bearer_auth(CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn embeddings_pass_through_openai_format_vendors_with_the_vendor_model() {
    let answer = json!({"object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "usage": {"prompt_tokens": 3, "total_tokens": 3}});
    let vendor_answer = answer.clone();
    let (capture, upstream) = Capture::start(move |_| json_response(200, vendor_answer.clone())).await;
    for (kind, base, extra, path) in [
        (
            "openai_compatible",
            format!("{}/v1", upstream.url()),
            "",
            "/v1/embeddings",
        ),
        (
            "azure",
            upstream.url(),
            r#"api_version = "2024-10-21""#,
            "/openai/deployments/vendor-model/embeddings?api-version=2024-10-21",
        ),
    ] {
        let gateway = GatewayServer::start(&gateway_config(kind, &base, extra)).await;
        let response = post_embeddings(&gateway, json!({"model": "m", "input": ["hello"], "dimensions": 2})).await;
        assert_eq!(response.status(), 200, "{kind}");
        assert_eq!(response.headers()["x-sluice-provider"], "vendor");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, answer);
        assert_eq!(capture.paths.lock().unwrap().last().unwrap(), path);
        assert_eq!(
            capture.last().1,
            json!({"model": "vendor-model", "input": ["hello"], "dimensions": 2})
        );
    }
}

#[tokio::test]
async fn gemini_embeddings_go_through_batch_embed_contents() {
    let (capture, upstream) = Capture::start(|_| {
        json_response(
            200,
            json!({"embeddings": [{"values": [1.0, 0.0]}, {"values": [0.0, 1.0]}]}),
        )
    })
    .await;
    let gateway = GatewayServer::start(&gateway_config("gemini", &upstream.url(), "")).await;
    let response = post_embeddings(&gateway, json!({"model": "m", "input": ["a", "b"]})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"][1]["embedding"], json!([0.0, 1.0]));
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(
        capture.paths.lock().unwrap()[0],
        "/v1beta/models/vendor-model:batchEmbedContents"
    );
    assert_eq!(capture.last().1["requests"][0]["model"], "models/vendor-model");
    assert_eq!(capture.last().1["requests"][1]["content"]["parts"][0]["text"], "b");
}

#[tokio::test]
async fn embeddings_on_a_vendor_without_them_are_a_clear_400() {
    let (capture, upstream) = Capture::start(|_| json_response(500, json!({}))).await;
    let gateway = GatewayServer::start(&gateway_config("anthropic", &upstream.url(), "")).await;
    let response = post_embeddings(&gateway, json!({"model": "m", "input": "x"})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "embeddings_not_supported");
    let response = post_embeddings(&gateway, json!({"model": "m", "input": []})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "input");
    assert!(capture.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_parameter_the_vendor_cannot_honour_is_refused_or_dropped_as_the_deployment_says() {
    let (capture, upstream) = Capture::start(|_| {
        json_response(
            200,
            json!({"id": "msg_03", "type": "message", "role": "assistant", "model": "claude",
                   "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                   "usage": {"input_tokens": 3, "output_tokens": 1}}),
        )
    })
    .await;
    let mut request = conversation(false);
    request["seed"] = json!(7);

    let strict = GatewayServer::start(&gateway_config("anthropic", &upstream.url(), "")).await;
    let response = post_chat(&strict, &request).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "seed", "{body}");
    assert!(capture.requests.lock().unwrap().is_empty());

    let lenient_config = gateway_config("anthropic", &upstream.url(), "")
        .replace("max_tokens = 321", "max_tokens = 321\ndrop_unsupported = true");
    let lenient = GatewayServer::start(&lenient_config).await;
    let response = post_chat(&lenient, &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-dropped-params"], "seed");
    assert!(capture.last().1.get("seed").is_none());
}

#[tokio::test]
async fn gemini_refuses_what_it_cannot_honour_unless_the_deployment_drops_it() {
    let (capture, upstream) = Capture::start(|_| {
        json_response(
            200,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}}),
        )
    })
    .await;
    let mut request = conversation(false);
    request["logit_bias"] = json!({"1234": -100});
    request["seed"] = json!(5);
    let strict = GatewayServer::start(&gateway_config("gemini", &upstream.url(), "")).await;
    let response = post_chat(&strict, &request).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "logit_bias", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Gemini"), "{body}");
    let lenient_config = gateway_config("gemini", &upstream.url(), "")
        .replace("max_tokens = 321", "max_tokens = 321\ndrop_unsupported = true");
    let lenient = GatewayServer::start(&lenient_config).await;
    let response = post_chat(&lenient, &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-dropped-params"], "logit_bias");
    assert_eq!(
        capture.last().1["generationConfig"]["seed"],
        5,
        "seed is translated, not dropped"
    );
}
