//! Prompt templates published as endpoints, end to end over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const GREETING_V1: &str = r#"
name = "greet"
version = 1
description = "Greets someone."
model = "m"
[parameters]
temperature = 0.3
max_tokens = 50
[variables.person]
type = "string"
description = "Who to greet."
[variables.times]
type = "integer"
default = 2
[[messages]]
role = "system"
content = "You greet people warmly."
[[messages]]
role = "user"
content = "Greet {{ person }} {{ times }} times."
"#;

fn prompts_dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("prompts-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn config(upstream: &str, dir: &Path) -> String {
    format!(
        "{}\n[prompts]\ndir = \"{}\"\nreload_ms = 100\n",
        config_for(upstream, ""),
        dir.display()
    )
}

fn completion() -> axum::response::Response {
    json_response(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "vendor-model",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
    )
}

async fn call(gateway: &GatewayServer, name: &str, body: Value) -> reqwest::Response {
    client()
        .post(gateway.url(&format!("/v1/prompts/{name}")))
        .bearer_auth(CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_prompt_renders_and_goes_down_the_chat_path() {
    let dir = prompts_dir("render", &[("greet.toml", GREETING_V1)]);
    let (capture, upstream) = Capture::start(|_| completion()).await;
    let gateway = GatewayServer::start(&config(&format!("{}/v1", upstream.url()), &dir)).await;
    let response = call(&gateway, "greet", json!({"variables": {"person": "Ada"}})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-provider"], "up");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello!");
    let (_, sent) = capture.last();
    assert_eq!(
        sent,
        json!({
            "model": "vendor-model",
            "messages": [
                {"role": "system", "content": "You greet people warmly."},
                {"role": "user", "content": "Greet Ada 2 times."}
            ],
            "temperature": 0.3,
            "max_tokens": 50
        }),
        "exactly the rendered messages and the prompt's parameters reach the upstream"
    );
}

#[tokio::test]
async fn bad_variables_are_400s_naming_them() {
    let dir = prompts_dir("bad", &[("greet.toml", GREETING_V1)]);
    let (capture, upstream) = Capture::start(|_| completion()).await;
    let gateway = GatewayServer::start(&config(&format!("{}/v1", upstream.url()), &dir)).await;
    for (variables, param, message) in [
        (json!({}), "variables.person", "missing required variable `person`"),
        (
            json!({"person": "Ada", "mood": "x"}),
            "variables.mood",
            "unknown variable `mood`",
        ),
        (
            json!({"person": "Ada", "times": "two"}),
            "variables.times",
            "must be of type integer",
        ),
    ] {
        let response = call(&gateway, "greet", json!({"variables": variables})).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(message), "{error}");
    }
    let response = call(
        &gateway,
        "greet",
        json!({"variables": {"person": "Ada"}, "temperature": 1}),
    )
    .await;
    assert_eq!(response.status(), 400, "unknown body fields are refused");
    let response = call(&gateway, "nope", json!({})).await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "prompt_not_found");
    assert!(error["error"]["message"].as_str().unwrap().contains("greet"));
    assert!(capture.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn versions_are_pinned_or_newest_and_listed() {
    let v2 = GREETING_V1
        .replace("version = 1", "version = 2")
        .replace("Greet {{ person }}", "Say hi to {{ person }}");
    let dir = prompts_dir("versions", &[("greet.toml", GREETING_V1), ("greet.v2.toml", &v2)]);
    let (capture, upstream) = Capture::start(|_| completion()).await;
    let gateway = GatewayServer::start(&config(&format!("{}/v1", upstream.url()), &dir)).await;
    call(&gateway, "greet", json!({"variables": {"person": "Ada"}})).await;
    assert_eq!(capture.last().1["messages"][1]["content"], "Say hi to Ada 2 times.");
    call(&gateway, "greet", json!({"variables": {"person": "Ada"}, "version": 1})).await;
    assert_eq!(capture.last().1["messages"][1]["content"], "Greet Ada 2 times.");
    let response = call(&gateway, "greet", json!({"variables": {"person": "Ada"}, "version": 7})).await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "prompt_version_not_found");

    let list: Value = get_json(&gateway, "/v1/prompts", CLIENT_KEY).await;
    assert_eq!(list["data"][0]["name"], "greet");
    assert_eq!(list["data"][0]["versions"], json!([1, 2]));
    let one: Value = get_json(&gateway, "/v1/prompts/greet", CLIENT_KEY).await;
    assert_eq!(one["version"], 2);
    assert_eq!(one["variables"]["type"], "object");
    assert_eq!(one["variables"]["required"], json!(["person"]));
    assert_eq!(one["variables"]["properties"]["times"]["default"], 2);
}

#[tokio::test]
async fn a_new_file_is_published_without_restart_and_a_broken_edit_keeps_the_last_good() {
    let dir = prompts_dir("reload", &[("greet.toml", GREETING_V1)]);
    let (_capture, upstream) = Capture::start(|_| completion()).await;
    let gateway = GatewayServer::start(&config(&format!("{}/v1", upstream.url()), &dir)).await;
    let farewell = GREETING_V1.replace("name = \"greet\"", "name = \"farewell\"");
    std::fs::write(dir.join("farewell.toml"), farewell).unwrap();
    let mut published = false;
    for _ in 0..50 {
        let openapi: Value = get_json(&gateway, "/v1/openapi.json", CLIENT_KEY).await;
        if openapi["paths"].get("/v1/prompts/farewell").is_some() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "the new prompt appeared in openapi.json");
    assert_eq!(
        call(&gateway, "farewell", json!({"variables": {"person": "Bo"}}))
            .await
            .status(),
        200
    );

    // A broken edit: the template no longer parses. The last good version keeps answering.
    std::fs::write(
        dir.join("greet.toml"),
        GREETING_V1.replace("{{ person }}", "{{ person "),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        call(&gateway, "greet", json!({"variables": {"person": "Ada"}}))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_prompt_streams_like_a_chat_completion() {
    let upstream = SimServer::start(sluice_simulate::SimConfig::default()).await;
    let dir = prompts_dir("stream", &[("greet.toml", GREETING_V1)]);
    let gateway = GatewayServer::start(&config(&upstream.base_url(), &dir)).await;
    let response = call(
        &gateway,
        "greet",
        json!({"variables": {"person": "Ada"}, "stream": true}),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(events.len() > 3);
}

#[tokio::test]
async fn the_shipped_prompts_run_against_the_demo_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("config/sluice.toml"))
        .unwrap()
        .replace(
            "dir = \"prompts\"",
            &format!("dir = \"{}\"", root.join("prompts").display()),
        )
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    let gateway = GatewayServer::start_with_env(&text, &[("SLUICE_API_KEY", CLIENT_KEY)]).await;
    let response = call(
        &gateway,
        "summarize",
        json!({"variables": {"text": "Rivers carry water to the sea."}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "sluice-demo");
    let openapi: Value = get_json(&gateway, "/v1/openapi.json", CLIENT_KEY).await;
    for name in ["summarize", "translate", "classify-sentiment", "extract-json"] {
        assert!(openapi["paths"].get(format!("/v1/prompts/{name}")).is_some(), "{name}");
    }
}
