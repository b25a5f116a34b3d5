//! `[telemetry]` over real HTTP: an OTLP/HTTP receiver in the test gets one server span per request with
//! the GenAI semantic conventions and Sluice's attributes, in the client's trace, and a client span per
//! upstream attempt, whose id the upstream got in `traceparent`; a collector that never answers costs the
//! requests nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use common::{
    CLIENT_KEY, Capture, GatewayServer, Running, client, eventually, json_response, metric_value, metrics_text, serve,
};
use serde_json::{Value, json};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start() -> (Self, Running) {
        let collector = Collector::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(collect))
            .with_state(collector.clone());
        (collector, serve(app, Duration::from_secs(1)).await)
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }
}

async fn collect(
    State(collector): State<Collector>,
    headers: http::HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> http::StatusCode {
    assert_eq!(headers["content-type"], "application/json");
    let resource = &body["resourceSpans"][0];
    assert_eq!(
        resource["resource"]["attributes"][0],
        json!({"key": "service.name", "value": {"stringValue": "sluice-test"}})
    );
    let spans = resource["scopeSpans"][0]["spans"].as_array().unwrap().clone();
    collector.spans.lock().unwrap().extend(spans);
    http::StatusCode::OK
}

/// A span's attribute, as its JSON value (`{"stringValue": ..}` or `{"intValue": ..}`) unwrapped.
fn attr(span: &Value, key: &str) -> Value {
    span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| {
            let value = &a["value"];
            value
                .get("stringValue")
                .or(value.get("intValue"))
                .or(value.get("doubleValue"))
                .cloned()
                .unwrap()
        })
        .unwrap_or(Value::Null)
}

fn config(upstream: &str, endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[auth]
keys = ["{CLIENT_KEY}"]

[upstream]
max_attempts = 3

[telemetry]
otlp_endpoint = "{endpoint}"
service_name = "sluice-test"
export_interval_ms = 50
{extra}

[[providers]]
name = "up"
kind = "openai_compatible"
base_url = "{upstream}"
keys = ["sk-upstream-1", "sk-upstream-2"]

[[models]]
name = "m"
[[models.deployments]]
provider = "up"
model = "vendor-model"
price = {{ input = 1.0, output = 2.0 }}
"#
    )
}

fn completion() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "vendor-model-2026",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Rivers run."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
                  "prompt_tokens_details": {"cached_tokens": 5},
                  "completion_tokens_details": {"reasoning_tokens": 3}}
    })
}

async fn chat(gateway: &GatewayServer, traceparent: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "Say something about rivers."}]}));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_span_per_request_in_the_clients_trace_with_a_span_per_attempt() {
    let (collector, collector_server) = Collector::start().await;
    // The upstream fails the first call with a 500: the request fails over to the second key.
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let (upstream, upstream_server) = Capture::start(move |_| {
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            json_response(500, json!({"error": {"message": "boom", "type": "server_error"}}))
        } else {
            json_response(200, completion())
        }
    })
    .await;
    let gateway = GatewayServer::start(&config(&upstream_server.url(), &collector_server.url(), "")).await;

    let response = chat(&gateway, Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-attempts"], "2");
    let response = chat(&gateway, None).await;
    assert_eq!(response.status(), 200);
    // A trace the client does not sample: carried upstream, no span recorded.
    let unsampled = format!("00-{}-{CLIENT_SPAN}-00", "ab".repeat(16));
    assert_eq!(chat(&gateway, Some(&unsampled)).await.status(), 200);

    // Two sampled requests: two server spans, and three attempts under them.
    assert!(
        eventually(Duration::from_secs(5), || collector.spans().len() >= 5).await,
        "{:#?}",
        collector.spans()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spans = collector.spans();
    let servers: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 2).collect();
    let clients: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 3).collect();
    assert_eq!((servers.len(), clients.len()), (2, 3), "{spans:#?}");

    // The first request's span: in the client's trace, under the client's span.
    let first = servers
        .iter()
        .find(|s| s["traceId"] == CLIENT_TRACE)
        .expect("a span in the client's trace");
    assert_eq!(first["parentSpanId"], CLIENT_SPAN);
    assert_eq!(first["name"], "chat m");
    assert_eq!(attr(first, "gen_ai.operation.name"), "chat");
    assert_eq!(attr(first, "gen_ai.system"), "openai_compatible");
    assert_eq!(attr(first, "gen_ai.request.model"), "m");
    assert_eq!(attr(first, "gen_ai.response.model"), "vendor-model");
    // OpenAI's prompt_tokens (cache reads included) and completion_tokens, with the details.
    assert_eq!(attr(first, "gen_ai.usage.input_tokens"), "20");
    assert_eq!(attr(first, "gen_ai.usage.output_tokens"), "7");
    assert_eq!(attr(first, "gen_ai.usage.cache_read.input_tokens"), "5");
    assert_eq!(attr(first, "gen_ai.usage.cache_creation.input_tokens"), "0");
    assert_eq!(attr(first, "gen_ai.usage.reasoning.output_tokens"), "3");
    assert_eq!(attr(first, "sluice.tenant"), "default");
    assert_eq!(attr(first, "sluice.attempts"), "2");
    assert_eq!(attr(first, "sluice.provider"), "up");
    assert_eq!(attr(first, "http.response.status_code"), "200");
    // Priced by the deployment (the failed first call, a 500, billed nothing).
    let cost = attr(first, "sluice.cost_micros")
        .as_str()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    assert!(cost > 0, "{first}");
    assert!(first["status"]["code"] == 0);
    assert!(
        first["endTimeUnixNano"].as_str().unwrap().parse::<u64>().unwrap()
            >= first["startTimeUnixNano"].as_str().unwrap().parse::<u64>().unwrap()
    );

    // Its two attempts, children of its span; the failed one says why.
    let span_id = first["spanId"].as_str().unwrap();
    let mut attempts: Vec<&&Value> = clients.iter().filter(|s| s["parentSpanId"] == span_id).collect();
    attempts.sort_by_key(|s| s["startTimeUnixNano"].as_str().unwrap().parse::<u64>().unwrap());
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert!(attempts.iter().all(|s| s["traceId"] == CLIENT_TRACE));
    assert_eq!(attr(attempts[0], "sluice.attempt.outcome"), "failed");
    assert_eq!(attempts[0]["status"]["code"], 2);
    assert!(attr(attempts[0], "error.type").is_string());
    assert_eq!(attr(attempts[1], "sluice.attempt.outcome"), "answered");
    assert_eq!(attr(attempts[1], "gen_ai.request.model"), "vendor-model");
    assert_ne!(
        attr(attempts[0], "sluice.upstream_key"),
        attr(attempts[1], "sluice.upstream_key")
    );

    // The upstream got the trace, each call naming its own attempt span as the parent.
    let sent: Vec<String> = upstream
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(headers, _)| headers["traceparent"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 4);
    assert!(
        sent[3].starts_with(&format!("00-{}-", "ab".repeat(16))) && sent[3].ends_with("-00"),
        "{}",
        sent[3]
    );
    for (header, attempt) in sent.iter().zip(&attempts) {
        assert_eq!(
            *header,
            format!("00-{CLIENT_TRACE}-{}-01", attempt["spanId"].as_str().unwrap())
        );
    }

    // The second request, without a traceparent, is the root of a trace of its own.
    let second = servers.iter().find(|s| s["traceId"] != CLIENT_TRACE).unwrap();
    assert!(second.get("parentSpanId").is_none(), "{second}");
    assert_eq!(second["traceId"].as_str().unwrap().len(), 32);
    assert!(sent[2].contains(second["traceId"].as_str().unwrap()));
    assert_eq!(attr(second, "sluice.attempts"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_requests_nothing() {
    // A collector that accepts connections and never answers: every export waits for its timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = Arc::clone(&held);
    let _black_hole = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            holder.lock().unwrap().push(socket);
        }
    });
    let (_upstream, upstream_server) = Capture::start(|_| json_response(200, completion())).await;
    let gateway = GatewayServer::start(&config(
        &upstream_server.url(),
        &endpoint,
        "queue = 4\nbatch = 2\nexport_timeout_ms = 60000",
    ))
    .await;

    let started = Instant::now();
    for _ in 0..30 {
        assert_eq!(chat(&gateway, None).await.status(), 200);
    }
    let elapsed = started.elapsed();
    // The export task is stuck on its first batch for a minute; the requests never waited for it.
    assert!(elapsed < Duration::from_secs(10), "30 requests took {elapsed:?}");
    let stats = gateway.gateway.traces.as_ref().unwrap().exporter().stats();
    assert_eq!(stats.exported.load(Ordering::Relaxed), 0);
    // 60 spans (a request and an attempt each) against a queue of 4 and a stuck batch of 2.
    assert!(stats.dropped.load(Ordering::Relaxed) >= 50, "{stats:?}");
    assert!(!held.lock().unwrap().is_empty(), "the exporter did try the collector");
    let metrics = metrics_text(&gateway.url("/metrics")).await;
    let dropped = metric_value(&metrics, "sluice_trace_spans_dropped_total").unwrap();
    assert!(dropped >= 50, "{metrics}");
    assert!(metrics.contains("sluice_trace_spans_exported_total 0"), "{metrics}");
}
