//! The simulated Anthropic and Gemini faces against examples from the vendors' documentation
//! (`tests/fixtures/<vendor>/`): every documented request is accepted, and the face's answers, streams
//! and errors have the documented shapes (the same keys with the same JSON types).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use serde_json::Value;
use sluice_simulate::{SimConfig, Simulator};
use sluice_simulate::{WireFormat, router};
use tower::ServiceExt;

fn fixture(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_fixture(path: &str) -> Value {
    serde_json::from_str(&fixture(path)).unwrap()
}

/// A face over a fresh simulator.
fn face(vendor: WireFormat, config: SimConfig) -> (Arc<Simulator>, axum::Router) {
    let sim = Arc::new(Simulator::new(config));
    (Arc::clone(&sim), router(sim, vendor))
}

async fn post(app: &axum::Router, uri: &str, headers: &[(&str, &str)], body: &Value) -> (u16, http::HeaderMap, String) {
    let mut request = http::Request::post(uri).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

const ANTHROPIC: &[(&str, &str)] = &[("x-api-key", "sk-ant-test"), ("anthropic-version", "2023-06-01")];
const GEMINI: &[(&str, &str)] = &[("x-goog-api-key", "AIza-test")];

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `ours` has every key of `documented` with the same JSON type (a documented `null` matches anything, as
/// optional fields are `null` when unset), and no key the documentation does not show.
fn same_shape(ours: &Value, documented: &Value, at: &str) {
    let (Some(ours), Some(documented)) = (ours.as_object(), documented.as_object()) else {
        panic!("{at}: expected objects, got {ours} and {documented}");
    };
    let mut our_keys: Vec<&String> = ours.keys().collect();
    let mut their_keys: Vec<&String> = documented.keys().collect();
    our_keys.sort();
    their_keys.sort();
    assert_eq!(our_keys, their_keys, "{at}: keys differ");
    for (key, theirs) in documented {
        if !theirs.is_null() {
            assert_eq!(kind(&ours[key]), kind(theirs), "{at}.{key}: types differ");
        }
    }
}

/// The `event:` names and `data:` JSON of an SSE body.
fn sse(body: &str) -> Vec<(Option<String>, Value)> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let name = event.lines().find_map(|l| l.strip_prefix("event: ")).map(str::to_owned);
            let data = event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

/// Event names in order of first appearance.
fn event_kinds(events: &[(Option<String>, Value)]) -> Vec<String> {
    let mut kinds: Vec<String> = Vec::new();
    for (name, _) in events {
        let name = name.clone().unwrap_or_default();
        if !kinds.contains(&name) {
            kinds.push(name);
        }
    }
    kinds
}

#[tokio::test]
async fn anthropic_documented_requests_are_answered_in_documented_shapes() {
    let (sim, app) = face(WireFormat::Anthropic, SimConfig::default());

    let (status, headers, body) = post(
        &app,
        "/v1/messages",
        ANTHROPIC,
        &json_fixture("anthropic/messages_request.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let message: Value = serde_json::from_str(&body).unwrap();
    let documented = json_fixture("anthropic/message_response.json");
    same_shape_except_cache(&message, &documented);
    same_shape(&message["content"][0], &documented["content"][0], "content[0]");
    assert_eq!(message["stop_reason"], "end_turn");
    assert!(headers.contains_key("request-id"));

    let (status, _, body) = post(
        &app,
        "/v1/messages",
        ANTHROPIC,
        &json_fixture("anthropic/tool_use_request.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let tool_use: Value = serde_json::from_str(&body).unwrap();
    let documented = json_fixture("anthropic/tool_use_response.json");
    same_shape_except_cache(&tool_use, &documented);
    same_shape(&tool_use["content"][0], &documented["content"][0], "content[0]");
    assert_eq!(tool_use["stop_reason"], "tool_use");
    assert!(tool_use["content"][0]["input"]["location"].is_string(), "{tool_use}");

    let (status, _, body) = post(
        &app,
        "/v1/messages",
        ANTHROPIC,
        &json_fixture("anthropic/tool_result_request.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["content"][0]["text"], "Tool said: 15 degrees");

    let (status, _, body) = post(
        &app,
        "/v1/messages",
        ANTHROPIC,
        &json_fixture("anthropic/vision_request.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert!(
        seen["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("I see an image."),
        "{seen}"
    );

    assert_eq!(sim.stats().invalid_requests, 0);
}

/// Our usage also reports the cache counts (zero), as the live API does; the documented example omits them.
fn same_shape_except_cache(ours: &Value, documented: &Value) {
    same_shape(ours, documented, "message");
    let usage = ours["usage"].as_object().unwrap();
    for key in documented["usage"].as_object().unwrap().keys() {
        assert!(usage[key].is_u64(), "usage.{key}: {usage:?}");
    }
    assert_eq!(usage["cache_read_input_tokens"], 0);
}

#[tokio::test]
async fn anthropic_streams_follow_the_documented_event_sequence() {
    let (_, app) = face(WireFormat::Anthropic, SimConfig::default());
    for (request, transcript) in [
        ("anthropic/messages_request.json", "anthropic/stream_text.sse"),
        ("anthropic/tool_use_request.json", "anthropic/stream_tool_use.sse"),
    ] {
        let mut body = json_fixture(request);
        body["stream"] = Value::Bool(true);
        let (status, headers, text) = post(&app, "/v1/messages", ANTHROPIC, &body).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(headers["content-type"], "text/event-stream");
        let ours = sse(&text);
        let documented = sse(&fixture(transcript));
        for (name, data) in &ours {
            assert_eq!(
                Some(data["type"].as_str().unwrap()),
                name.as_deref(),
                "event name = data type"
            );
        }
        // The tool transcript opens with a text block; ours calls the tool straight away.
        assert_eq!(event_kinds(&ours), event_kinds(&documented), "{transcript}");
        for (ours, theirs) in ours.iter().zip(&documented).take(3) {
            same_shape(&ours.1, &theirs.1, transcript);
        }
        let delta = |events: &[(Option<String>, Value)]| {
            events
                .iter()
                .find(|(name, _)| name.as_deref() == Some("message_delta"))
                .map(|(_, data)| data.clone())
                .unwrap()
        };
        same_shape(&delta(&ours), &delta(&documented), "message_delta");
        same_shape(
            &delta(&ours)["delta"],
            &delta(&documented)["delta"],
            "message_delta.delta",
        );
    }
}

#[tokio::test]
async fn anthropic_errors_have_the_documented_shape() {
    let (sim, app) = face(
        WireFormat::Anthropic,
        SimConfig {
            rpm: Some(1),
            ..SimConfig::default()
        },
    );
    let documented = json_fixture("anthropic/error.json");
    let request = json_fixture("anthropic/messages_request.json");
    assert_eq!(post(&app, "/v1/messages", ANTHROPIC, &request).await.0, 200);
    let (status, headers, body) = post(&app, "/v1/messages", ANTHROPIC, &request).await;
    assert_eq!(status, 429);
    let error: Value = serde_json::from_str(&body).unwrap();
    same_shape(&error, &documented, "error");
    same_shape(&error["error"], &documented["error"], "error.error");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(headers["anthropic-ratelimit-requests-limit"], "1");
    assert_eq!(headers["anthropic-ratelimit-requests-remaining"], "0");
    let reset = headers["anthropic-ratelimit-requests-reset"].to_str().unwrap();
    assert!(
        reset.len() == 20 && reset.ends_with('Z') && reset.as_bytes()[10] == b'T',
        "{reset}"
    );

    // A documented refusal: a system role inside messages.
    let mut system = request.clone();
    system["messages"] =
        serde_json::json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    let (status, _, body) = post(&app, "/v1/messages", ANTHROPIC, &system).await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).unwrap();
    same_shape(&error, &documented, "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(sim.stats().invalid_requests, 1);

    let (status, _, body) = post(&app, "/v1/messages", &ANTHROPIC[1..], &request).await;
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["type"],
        "authentication_error"
    );
    let (status, _, _) = post(&app, "/v1/messages", &ANTHROPIC[..1], &request).await;
    assert_eq!(status, 400, "anthropic-version is required");

    let (_, overloaded) = face(
        WireFormat::Anthropic,
        SimConfig {
            error_rate: 1.0,
            ..SimConfig::default()
        },
    );
    let (status, _, body) = post(&overloaded, "/v1/messages", ANTHROPIC, &request).await;
    assert_eq!(status, 529);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["type"],
        "overloaded_error"
    );
}

const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

#[tokio::test]
async fn gemini_documented_requests_are_answered_in_documented_shapes() {
    let (sim, app) = face(WireFormat::Gemini, SimConfig::default());

    let (status, _, body) = post(
        &app,
        GENERATE,
        GEMINI,
        &json_fixture("gemini/generate_content_request.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).unwrap();
    let documented = json_fixture("gemini/generate_content_response.json");
    same_shape(&response, &documented, "response");
    same_shape(
        &response["candidates"][0],
        &documented["candidates"][0],
        "candidates[0]",
    );
    same_shape(
        &response["usageMetadata"],
        &documented["usageMetadata"],
        "usageMetadata",
    );
    assert_eq!(response["candidates"][0]["finishReason"], "STOP");

    let (status, _, body) = post(
        &app,
        GENERATE,
        GEMINI,
        &json_fixture("gemini/function_calling_request.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let call: Value = serde_json::from_str(&body).unwrap();
    let documented = json_fixture("gemini/function_call_response.json");
    same_shape(&call, &documented, "response");
    let part = &call["candidates"][0]["content"]["parts"][0];
    same_shape(
        &part["functionCall"],
        &documented["candidates"][0]["content"]["parts"][0]["functionCall"],
        "functionCall",
    );
    same_shape(
        &part["functionCall"]["args"],
        &documented["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        "args",
    );
    assert_eq!(call["candidates"][0]["finishReason"], "STOP");

    let (status, _, body) = post(
        &app,
        GENERATE,
        GEMINI,
        &json_fixture("gemini/function_response_request.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let text = answer["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("Tool said: {"), "{text}");

    let (status, _, body) = post(&app, GENERATE, GEMINI, &json_fixture("gemini/image_request.json")).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    let text = seen["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("I see an image."), "{text}");

    assert_eq!(sim.stats().invalid_requests, 0);
}

#[tokio::test]
async fn gemini_streams_are_generate_content_responses_without_done() {
    let (_, app) = face(WireFormat::Gemini, SimConfig::default());
    let uri = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let (status, headers, text) = post(&app, uri, GEMINI, &json_fixture("gemini/generate_content_request.json")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(!text.contains("[DONE]"));
    let ours = sse(&text);
    let documented = sse(&fixture("gemini/stream.sse"));
    assert!(ours.len() > 1);
    for (_, event) in &ours {
        same_shape(event, &documented[0].1, "event");
    }
    let (last, theirs) = (&ours[ours.len() - 1].1, &documented[documented.len() - 1].1);
    same_shape(&last["candidates"][0], &theirs["candidates"][0], "last candidate");
    same_shape(&last["usageMetadata"], &theirs["usageMetadata"], "last usageMetadata");
    // Only the last event finishes.
    assert_eq!(
        ours.iter()
            .filter(|(_, e)| e["candidates"][0].get("finishReason").is_some())
            .count(),
        1
    );

    // Without alt=sse the stream is one JSON array of the same responses.
    let uri = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
    let (status, _, text) = post(&app, uri, GEMINI, &json_fixture("gemini/generate_content_request.json")).await;
    assert_eq!(status, 200);
    let array: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(array.len(), ours.len());
}

#[tokio::test]
async fn gemini_errors_have_the_documented_shape() {
    let (sim, app) = face(
        WireFormat::Gemini,
        SimConfig {
            rpm: Some(1),
            ..SimConfig::default()
        },
    );
    let documented = json_fixture("gemini/error_rate_limit.json");
    let request = json_fixture("gemini/generate_content_request.json");
    assert_eq!(post(&app, GENERATE, GEMINI, &request).await.0, 200);
    let (status, _, body) = post(&app, GENERATE, GEMINI, &request).await;
    assert_eq!(status, 429);
    let error: Value = serde_json::from_str(&body).unwrap();
    same_shape(&error, &documented, "error");
    same_shape(&error["error"], &documented["error"], "error.error");
    assert_eq!(error["error"]["status"], "RESOURCE_EXHAUSTED");
    let retry = error["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
        .unwrap();
    let delay = retry["retryDelay"].as_str().unwrap();
    assert!(
        delay.ends_with('s') && delay.trim_end_matches('s').parse::<u64>().unwrap() >= 1,
        "{delay}"
    );

    // A documented refusal: role `assistant`.
    let assistant = serde_json::json!({"contents": [{"role": "assistant", "parts": [{"text": "Hi"}]}]});
    let (status, _, body) = post(&app, GENERATE, GEMINI, &assistant).await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(error["error"]["code"], 400);
    assert_eq!(sim.stats().invalid_requests, 1);

    assert_eq!(post(&app, GENERATE, &[], &request).await.0, 403);
    let (_, unavailable) = face(
        WireFormat::Gemini,
        SimConfig {
            error_rate: 1.0,
            ..SimConfig::default()
        },
    );
    let (status, _, body) = post(&unavailable, GENERATE, GEMINI, &request).await;
    assert_eq!(status, 503);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["status"],
        "UNAVAILABLE"
    );
}

#[tokio::test]
async fn every_face_serves_stats_and_health() {
    for vendor in [WireFormat::OpenAi, WireFormat::Anthropic, WireFormat::Gemini] {
        let (_, app) = face(vendor, SimConfig::default());
        for path in ["/sim/stats", "/healthz"] {
            let response = app
                .clone()
                .oneshot(http::Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{vendor:?} {path}");
        }
    }
    // The OpenAI face answers in OpenAI's format, tool calls included.
    let (_, app) = face(WireFormat::OpenAi, SimConfig::default());
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]});
    let (status, headers, text) = post(&app, "/v1/chat/completions", &[("authorization", "Bearer sk-1")], &body).await;
    assert_eq!(status, 200, "{text}");
    let completion: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(post(&app, "/v1/chat/completions", &[], &body).await.0, 401);
}
