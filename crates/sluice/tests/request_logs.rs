//! Request logs, opt-in per tenant, over real HTTP: off by default; a tenant that asks for redacted logs
//! gets its prompts and answers (complete and streamed) with secrets replaced; a hashed tenant gets only
//! hashes and lengths; logs past the retention are purged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::time::Duration;

use common::{Capture, GatewayServer, client, json_response, sse_response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ADMIN: &str = "sk-logs-admin-0123456789abcdefghijklmnopqr";
const ANSWER: &str = "Write to alice@example.com and never paste sk-live-abcdefghijklmnopqrstuvwx again.";

fn config(upstream: &str) -> String {
    format!(
        r#"
[auth]
admin_key = "{ADMIN}"

[[providers]]
name = "up"
kind = "openai_compatible"
base_url = "{upstream}"
keys = ["sk-upstream-1"]

[[models]]
name = "m"
[[models.deployments]]
provider = "up"
model = "vendor-model"
price = {{ input = 1.0, output = 2.0 }}
"#
    )
}

fn upstream_answer(request: &Value) -> axum::response::Response {
    if request["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "vendor-model",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
        };
        let events = [
            chunk(json!({"role": "assistant", "content": "Write to alice@"}), Value::Null),
            chunk(
                json!({"content": "example.com and never paste sk-live-abcdefghijklmnopqrstuvwx again."}),
                Value::Null,
            ),
            chunk(json!({}), json!("stop")),
            "[DONE]".to_owned(),
        ];
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        sse_response(&events)
    } else {
        json_response(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "vendor-model",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}}),
        )
    }
}

async fn admin(gateway: &GatewayServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, gateway.url(path)).bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn tenant_with_key(gateway: &GatewayServer, name: &str) -> String {
    let (status, _) = admin(
        gateway,
        reqwest::Method::POST,
        "/admin/tenants",
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, key) = admin(
        gateway,
        reqwest::Method::POST,
        &format!("/admin/tenants/{name}/keys"),
        None,
    )
    .await;
    key["key"].as_str().unwrap().to_owned()
}

async fn chat(gateway: &GatewayServer, key: &str, stream: bool) {
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "m", "stream": stream, "messages": [
            {"role": "user", "content": "My card is 4111 1111 1111 1111 and my mail bob@example.org; summarise."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("alice@"), "{body}");
}

async fn logs(gateway: &GatewayServer, tenant: &str) -> Value {
    let (status, body) = admin(
        gateway,
        reqwest::Method::GET,
        &format!("/admin/tenants/{tenant}/request-logs"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_are_opt_in_redacted_or_hashed_and_expire() {
    let (_upstream, upstream_server) = Capture::start(upstream_answer).await;
    let gateway = GatewayServer::start(&config(&upstream_server.url())).await;
    let logged = tenant_with_key(&gateway, "logged").await;
    let hashed = tenant_with_key(&gateway, "hashed").await;
    let quiet = tenant_with_key(&gateway, "quiet").await;

    // Settings: checked, per tenant.
    let put = |tenant: &'static str, body: Value| {
        let gateway = &gateway;
        async move {
            admin(
                gateway,
                reqwest::Method::PUT,
                &format!("/admin/tenants/{tenant}/request-logs"),
                Some(body),
            )
            .await
        }
    };
    let (status, body) = put("logged", json!({"mode": "redacted", "retention_days": 7})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"], json!({"mode": "redacted", "retention_days": 7}));
    assert_eq!(put("hashed", json!({"mode": "hashed"})).await.0, 200);
    assert_eq!(put("logged", json!({"mode": "loud"})).await.0, 400);
    assert_eq!(
        put("logged", json!({"mode": "redacted", "retention_days": 0})).await.0,
        400
    );
    assert_eq!(put("nobody", json!({"mode": "hashed"})).await.0, 404);

    chat(&gateway, &quiet, false).await;
    chat(&gateway, &logged, false).await;
    chat(&gateway, &logged, true).await;
    chat(&gateway, &hashed, false).await;

    assert!(wait_for(&gateway, "logged", 2).await, "no logs for the logged tenant");
    let logged_logs = logs(&gateway, "logged").await;
    assert_eq!(logged_logs["settings"]["mode"], "redacted");
    let data = logged_logs["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{logged_logs}");
    for log in data {
        assert_eq!(log["mode"], "redacted");
        assert_eq!(log["model"], "m");
        assert_eq!(log["status"], 200);
        let request = log["request"].as_str().unwrap();
        let response = log["response"].as_str().unwrap();
        assert!(request.contains("summarise"), "{request}");
        assert!(
            !request.contains("4111") && !request.contains("bob@example.org"),
            "{request}"
        );
        assert_eq!(request.matches("[REDACTED]").count(), 2, "{request}");
        // The complete answer and the streamed one read the same once redacted.
        assert_eq!(
            response, "Write to [REDACTED] and never paste [REDACTED] again.",
            "{log}"
        );
        assert_eq!(log["response_sha256"], sha256_hex(ANSWER));
        assert_eq!(log["response_bytes"], ANSWER.len());
    }

    // Hashed: only hashes and lengths.
    assert!(wait_for(&gateway, "hashed", 1).await, "no hashed log");
    let hashed_logs = logs(&gateway, "hashed").await;
    let log = &hashed_logs["data"][0];
    assert_eq!(log["mode"], "hashed");
    assert!(log["request"].is_null() && log["response"].is_null(), "{log}");
    assert_eq!(log["response_sha256"], sha256_hex(ANSWER));
    assert!(log["request_bytes"].as_u64().unwrap() > 0);

    // Off by default: the quiet tenant's request left nothing.
    let quiet_logs = logs(&gateway, "quiet").await;
    assert_eq!(quiet_logs["settings"]["mode"], "off");
    assert_eq!(quiet_logs["data"], json!([]));

    // Retention: a log older than the tenant's 7 days goes at the next purge; the recent ones stay.
    let store = &gateway.gateway.tenancy.as_ref().unwrap().store;
    let mut old = store_log(&data[0]);
    old.id = "old-log".to_owned();
    old.created_at = chrono::Utc::now() - chrono::Duration::days(8);
    store.insert_request_logs(&[old]).await.unwrap();
    assert_eq!(logs(&gateway, "logged").await["data"].as_array().unwrap().len(), 3);
    let purged = gateway
        .gateway
        .request_logs
        .as_ref()
        .unwrap()
        .purge(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(purged, 1);
    let left = logs(&gateway, "logged").await;
    assert_eq!(left["data"].as_array().unwrap().len(), 2);
    assert!(left["data"].as_array().unwrap().iter().all(|l| l["id"] != "old-log"));
}

/// Logs are written off the request path: waits (5 s at most) until the tenant has `count`.
async fn wait_for(gateway: &GatewayServer, tenant: &str, count: usize) -> bool {
    for _ in 0..100 {
        if logs(gateway, tenant).await["data"].as_array().unwrap().len() >= count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn store_log(json: &Value) -> sluice_store::RequestLog {
    sluice_store::RequestLog {
        id: json["id"].as_str().unwrap().to_owned(),
        tenant: json["tenant"].as_str().unwrap().to_owned(),
        model: json["model"].as_str().unwrap().to_owned(),
        status: 200,
        mode: sluice_store::LogMode::Redacted,
        request: json["request"].as_str().map(str::to_owned),
        response: json["response"].as_str().map(str::to_owned),
        request_sha256: json["request_sha256"].as_str().unwrap().to_owned(),
        request_bytes: json["request_bytes"].as_u64().unwrap(),
        response_sha256: json["response_sha256"].as_str().unwrap().to_owned(),
        response_bytes: json["response_bytes"].as_u64().unwrap(),
        created_at: chrono::Utc::now(),
    }
}
