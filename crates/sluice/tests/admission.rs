//! Cheap checks before expensive ones (issue 13): a request the gateway will refuse anyway is refused
//! before its tokens are counted, and large inputs are counted off the executor, so `/healthz` answers
//! while big requests are being counted. The counts are read from `/metrics`
//! (`sluice_token_counts_total`), which counts every input counted, inline or on the bounded pool, and
//! `sluice_token_count_cache_total`, long texts found in the count cache or counted; the counters are the
//! process's, so this file holds one test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::time::Duration;

use axum::response::Response;
use common::*;
use serde_json::{Value, json};

const ADMIN: &str = "sk-admission-admin-0123456789abcdefghijkl";

fn answer(request: &Value) -> Response {
    if request.get("input").is_some() {
        return json_response(
            200,
            json!({"object": "list", "model": "vendor-emb",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.25, 0.5]}],
                   "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
        );
    }
    json_response(
        200,
        json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "vendor-chat",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}),
    )
}

fn config(upstream: &str, dir: &std::path::Path, port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{db}"
spool = "{spool}"
refresh_ms = 200
[auth]
admin_key = "{ADMIN}"
[[providers]]
name = "up"
kind = "openai_compatible"
base_url = "{upstream}"
keys = ["k"]
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{upstream}"
keys = ["k"]
[[models]]
name = "emb"
[[models.deployments]]
provider = "up"
model = "vendor-emb"
[[models]]
name = "chat"
max_queue_ms = 0
[[models.deployments]]
provider = "up"
model = "vendor-chat"
[[models]]
name = "claude-only"
[[models.deployments]]
provider = "claude"
model = "claude-vendor"
max_tokens = 64
"#,
        db = dir.join("sluice.db").display(),
        spool = dir.join("usage.spool").display(),
    )
}

/// The gateway under test: the real binary, so that what the test process does (building big bodies,
/// the test upstream parsing them) does not share its threads.
struct Gateway {
    process: BinProcess,
    base: String,
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// `(inline, offloaded)` from the gateway's `/metrics`.
async fn counts(gateway: &Gateway) -> (u64, u64) {
    let text = metrics_text(&gateway.url("/metrics")).await;
    (
        metric(&text, "sluice_token_counts_total{where=\"inline\"}"),
        metric(&text, "sluice_token_counts_total{where=\"offloaded\"}"),
    )
}

/// `(hits, misses)` of the count cache of long texts, from the gateway's `/metrics`.
async fn cache(gateway: &Gateway) -> (u64, u64) {
    let text = metrics_text(&gateway.url("/metrics")).await;
    (
        metric(&text, "sluice_token_count_cache_total{result=\"hit\"}"),
        metric(&text, "sluice_token_count_cache_total{result=\"miss\"}"),
    )
}

fn metric(text: &str, series: &str) -> u64 {
    metric_value(text, series).unwrap_or_else(|| panic!("no {series} in {text}"))
}

async fn post(gateway: &Gateway, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(gateway.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET /healthz` on an open connection, answered 200; how long it took.
async fn healthz(tcp: &mut tokio::net::TcpStream) -> Duration {
    let (status, took) = healthz_on(tcp).await;
    assert_eq!(status, 200);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_before_counting_and_big_inputs_leave_the_executor_free() {
    let (_capture, upstream) = Capture::start(answer).await;
    let dir = scratch_dir("admission");
    let port = free_port();
    let path = dir.join("sluice.toml");
    std::fs::write(&path, config(&upstream.url(), &dir, port)).unwrap();
    let mut process = BinProcess::spawn(&["serve", "--config", path.to_str().unwrap()], "warn");
    process.wait_healthy(port).await;
    let gateway = Gateway {
        process,
        base: format!("http://127.0.0.1:{port}"),
    };
    let auth = |path: &str, body: Value| client().post(gateway.url(path)).bearer_auth(ADMIN).json(&body).send();
    assert_eq!(
        auth("/admin/tenants", json!({"name": "slow", "rpm": 1}))
            .await
            .unwrap()
            .status(),
        201
    );
    let key: Value = auth("/admin/tenants/slow/keys", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    // 1.5 MB: far past what is counted inline, and under the test upstream's own 2 MB body limit.
    let big = "lorem ipsum dolor sit amet ".repeat(55_000);

    // A model none of whose providers embeds: refused before its input is counted.
    let before = counts(&gateway).await;
    let (status, body) = post(
        &gateway,
        ADMIN,
        "/v1/embeddings",
        &json!({"model": "claude-only", "input": big}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("embeddings_not_supported")),
        "{body}"
    );
    assert_eq!(counts(&gateway).await, before, "nothing was counted");

    // A tenant over its request rate: refused before its big prompt is counted.
    let small = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&gateway, &key, "/v1/chat/completions", &small).await.0, 200);
    let before = counts(&gateway).await;
    let huge = json!({"model": "chat", "messages": [{"role": "user", "content": big}]});
    let (status, body) = post(&gateway, &key, "/v1/chat/completions", &huge).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limit_exceeded")),
        "{body}"
    );
    assert_eq!(counts(&gateway).await, before, "nothing was counted");

    // Eight big embeddings at once are counted on the bounded pool while /healthz keeps answering on the
    // executor.
    let mut probe = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    healthz(&mut probe).await;
    let before = counts(&gateway).await;
    let cache_before = cache(&gateway).await;
    // Serialized before the clock starts, so that the probe measures the gateway, not this process. Eight
    // different inputs: the same one again would be counted once and then found in the count cache.
    let bodies: Vec<_> = (0..8)
        .map(|i| {
            bytes::Bytes::from(serde_json::to_vec(&json!({"model": "emb", "input": format!("{i} {big}")})).unwrap())
        })
        .collect();
    let load: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let url = gateway.url("/v1/embeddings");
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth(ADMIN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut waits = Vec::new();
    while !load.iter().all(tokio::task::JoinHandle::is_finished) {
        waits.push(healthz(&mut probe).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for request in load {
        assert_eq!(request.await.unwrap(), 200);
    }
    let after = counts(&gateway).await;
    assert_eq!(after.1 - before.1, 8, "every big input was counted off the executor");
    let cache_after = cache(&gateway).await;
    assert_eq!(
        (cache_after.0 - cache_before.0, cache_after.1 - cache_before.1),
        (0, 8),
        "eight new texts: counted, not found"
    );
    waits.sort();
    let median = waits[waits.len() / 2];
    let p90 = waits[waits.len() * 9 / 10];
    eprintln!(
        "healthz: {} probes while counting, median {median:?}, p90 {p90:?}, slowest {:?}",
        waits.len(),
        waits[waits.len() - 1]
    );
    assert!(waits.len() >= 10, "the probes ran while the inputs were counted");
    // Counted on the executor, each of these inputs held a worker thread for about 0.1 s and probes waited
    // behind them (measured: p90 117 to 205 ms); off the executor a probe waits only for the OS to give the
    // executor a core (p90 1 to 32 ms on a machine loaded 12 deep; a busy scheduler still makes the odd one
    // wait, hence the 90th percentile rather than the slowest).
    assert!(
        median < Duration::from_millis(5) && p90 < Duration::from_millis(50),
        "healthz took a median {median:?}, p90 {p90:?}, while big inputs were counted"
    );

    // The same input again is found in the count cache; its size still sends it to the pool. Sent twice in a
    // row: the cache is direct-mapped, so a text counted between the two could take the first one's slot.
    let again =
        bytes::Bytes::from(serde_json::to_vec(&json!({"model": "emb", "input": format!("again {big}")})).unwrap());
    let mut cache_then = cache(&gateway).await;
    let mut counted_then = counts(&gateway).await.1;
    for (expected, what) in [
        ((0, 1), "a new text is counted"),
        ((1, 0), "a text seen before is found, not counted again"),
    ] {
        let status = client()
            .post(gateway.url("/v1/embeddings"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(again.clone())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        let cache_now = cache(&gateway).await;
        assert_eq!(
            (cache_now.0 - cache_then.0, cache_now.1 - cache_then.1),
            expected,
            "{what}"
        );
        let counted_now = counts(&gateway).await.1;
        assert_eq!(counted_now - counted_then, 1, "counted on the pool either way");
        (cache_then, counted_then) = (cache_now, counted_now);
    }
    drop(gateway.process);
}
