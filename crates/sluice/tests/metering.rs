//! Issue 12's nine findings, each tried over HTTP the way its reporter tried it: as a client, as a
//! careless or hostile tenant, and as a hostile upstream. Each test failed on the main of the report and
//! holds the fix in place.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice_api::UsageSource;
use sluice_simulate::{SimConfig, Simulator, WireFormat};
use sluice_store::{AttemptOutcome, ExportFilter, UsageRow};

const ADMIN: &str = "sk-metering-admin-0123456789abcdefghijkl";

/// A gateway configuration with an admin key, `[upstream]` settings `upstream`, the `providers` tables
/// and one model `m` whose deployments are `deployments` (TOML of `[[models.deployments]]` tables).
fn config(upstream: &str, providers: &str, model: &str, deployments: &str) -> String {
    format!(
        r#"
[auth]
keys = ["{CLIENT_KEY}"]
admin_key = "{ADMIN}"
[upstream]
connect_timeout_ms = 1000
first_byte_timeout_ms = 5000
idle_timeout_ms = 5000
{upstream}
{providers}
[[models]]
name = "m"
{model}
{deployments}
"#
    )
}

/// One provider table named `name` of `kind` at `base_url` with `keys`.
fn provider(name: &str, kind: &str, base_url: &str, keys: &[&str]) -> String {
    format!("[[providers]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\nkeys = {keys:?}\n")
}

/// One deployment table of `provider`'s `model`, with extra settings.
fn deployment(provider: &str, model: &str, extra: &str) -> String {
    format!("[[models.deployments]]\nprovider = \"{provider}\"\nmodel = \"{model}\"\n{extra}\n")
}

async fn admin(gateway: &GatewayServer, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, gateway.url(path)).bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates `tenant` (its JSON) and a virtual key for it; returns the key.
async fn tenant_key(gateway: &GatewayServer, tenant: Value) -> String {
    let name = tenant["name"].as_str().unwrap().to_owned();
    let (status, body) = admin(gateway, reqwest::Method::POST, "/admin/tenants", Some(tenant)).await;
    assert_eq!(status, 201, "{body}");
    let (status, key) = admin(
        gateway,
        reqwest::Method::POST,
        &format!("/admin/tenants/{name}/keys"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

/// What the gateway enforces as `tenant`'s spend this period, in micro-dollars.
async fn spent(gateway: &GatewayServer, tenant: &str) -> i64 {
    let (status, body) = admin(gateway, reqwest::Method::GET, &format!("/admin/tenants/{tenant}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["budget"]["spent_micros"].as_i64().unwrap()
}

/// Waits until the writer has written `rows` rows and holds nothing, then returns every ledger row of
/// `tenant` (all tenants with `None`), oldest first.
async fn ledger_rows(gateway: &GatewayServer, tenant: Option<&str>, rows: u64) -> Vec<UsageRow> {
    let drained = eventually(Duration::from_secs(10), || {
        let s = gateway.writer_stats();
        s.written + s.duplicates >= rows && s.queue_depth == 0 && s.spool_pending == 0
    })
    .await;
    assert!(
        drained,
        "the writer did not write {rows} rows: {:?}",
        gateway.writer_stats()
    );
    let mut export = gateway
        .store()
        .export(ExportFilter {
            tenant: tenant.map(str::to_owned),
            ..ExportFilter::default()
        })
        .page_size(1000);
    let mut out = Vec::new();
    while let Some(page) = export.next_page().await.unwrap() {
        out.extend(page);
    }
    out
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

async fn send(gateway: &GatewayServer, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// An OpenAI chat completion with `usage`.
fn completion(usage: Value) -> axum::response::Response {
    json_response(
        200,
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "v",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
               "usage": usage}),
    )
}

/// A vendor 429 with `retry-after: after`.
fn rate_limited(after: &str) -> axum::response::Response {
    let mut response = json_response(
        429,
        json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
    );
    response
        .headers_mut()
        .insert("retry-after", http::HeaderValue::from_str(after).unwrap());
    response
}

/// Which upstream key a captured request came with.
fn bearer(headers: &http::HeaderMap) -> String {
    headers["authorization"]
        .to_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_owned()
}

/// A simulated vendor speaking `wire`, served over loopback.
async fn sim_face(config: SimConfig, wire: WireFormat) -> (Arc<Simulator>, Running) {
    let sim = Arc::new(Simulator::new(config));
    let server = serve(sluice_simulate::router(Arc::clone(&sim), wire), Duration::from_secs(1)).await;
    (sim, server)
}

// === Finding 1: a client-chosen x-request-id erases rows ===

#[tokio::test]
async fn five_requests_with_one_request_id_are_five_rows() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config(
        "",
        &provider("sim", "openai_compatible", &upstream.base_url(), &["k"]),
        "",
        &deployment("sim", "vendor-m", "price = { input = 1.0, output = 1.0 }"),
    ))
    .await;
    let key = tenant_key(&gateway, json!({"name": "repeater"})).await;
    let other = tenant_key(&gateway, json!({"name": "bystander"})).await;
    for i in 0..5 {
        let response = client()
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("x-request-id", "same-1")
            .json(&chat("m", &format!("question {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["x-request-id"],
            "same-1",
            "the client's id is echoed"
        );
    }
    // Another tenant guessing the id suppresses nothing either.
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(&other)
        .header("x-request-id", "same-1")
        .json(&chat("m", "mine"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let rows = ledger_rows(&gateway, None, 6).await;
    assert_eq!(rows.len(), 6, "{rows:?}");
    let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each row has its own gateway-made id");
    assert!(rows.iter().all(|r| r.client_request_id.as_deref() == Some("same-1")));
    let usage = get_json(&gateway, "/v1/usage?group_by=model", &key).await;
    assert_eq!(usage["data"][0]["requests"], 5, "{usage}");
    assert_eq!(upstream.stats().requests, 6);
}

/// A usage row of `tenant` costing `micros`, as a gateway spools it.
fn spooled_row(id: &str, tenant: &str, model: &str, micros: i64) -> UsageRow {
    UsageRow {
        id: id.to_owned(),
        client_request_id: None,
        tenant: tenant.into(),
        key_id: None,
        model: model.to_owned(),
        provider: "sim".into(),
        vendor_model: "vendor-m".into(),
        upstream_key: Some("sim#0".into()),
        usage: sluice_api::TokenUsage::new(10, 2),
        usage_source: UsageSource::Vendor,
        cost_micros: Some(micros),
        price_source: sluice_store::PriceSource::Override,
        price_date: None,
        latency_ms: 1,
        status: 200,
        attempts: 1,
        attempt_log: Vec::new(),
        prompt_name: None,
        prompt_version: None,
        created_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn a_restart_seeds_spend_from_the_whole_ledger_spool_included() {
    // What a gateway stopped during a database outage leaves: rows charged to a tenant, in the spool.
    let upstream = SimServer::start(SimConfig::default()).await;
    let dir = scratch_dir("metering-restart");
    let toml = format!(
        "{}{}",
        store_table(
            Some(&format!("sqlite://{}", dir.join("ledger.db").display())),
            "restart"
        ),
        config(
            "",
            &provider("sim", "openai_compatible", &upstream.base_url(), &["k"]),
            "",
            &deployment("sim", "vendor-m", "price = { input = 1.0, output = 1.0 }"),
        )
    );
    let first = GatewayServer::start(&toml).await;
    tenant_key(
        &first,
        json!({"name": "acme", "budget_usd": 1.0, "budget_period": "month"}),
    )
    .await;
    first.stop(Duration::from_secs(5)).await;
    let spool_path = toml
        .lines()
        .find_map(|l| l.strip_prefix("spool = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let lines: String = (0..3)
        .map(|i| serde_json::to_string(&spooled_row(&format!("left-{i}"), "acme", "m", 250_000)).unwrap() + "\n")
        .collect();
    std::fs::write(&spool_path, lines).unwrap();

    let second = GatewayServer::start(&toml).await;
    assert_eq!(
        spent(&second, "acme").await,
        750_000,
        "the spool's rows count in the seed"
    );
    assert_eq!(second.writer_stats().replayed, 3);
}

// === Finding 2: an abandoned stream is recorded as free ===

#[tokio::test]
async fn a_stream_read_for_a_few_chunks_then_dropped_is_billed_as_estimated() {
    let upstream = SimServer::start(SimConfig {
        tokens_per_sec: Some(40.0),
        reply_tokens: 400,
        ..SimConfig::default()
    })
    .await;
    let gateway = GatewayServer::start(&config(
        "",
        &provider("sim", "openai_compatible", &upstream.base_url(), &["k"]),
        "",
        &deployment("sim", "vendor-m", "price = { input = 100.0, output = 400.0 }"),
    ))
    .await;
    let key = tenant_key(
        &gateway,
        json!({"name": "leaver", "budget_usd": 10.0, "budget_period": "day"}),
    )
    .await;
    let before = spent(&gateway, "leaver").await;
    let mut body = chat("m", "Tell me a long story about rivers.");
    body["stream"] = json!(true);
    let response = send(&gateway, &key, &body).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut read = String::new();
    while read.matches("data: ").count() < 4 {
        read.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }
    drop(stream);

    let rows = ledger_rows(&gateway, Some("leaver"), 1).await;
    let row = &rows[0];
    assert_eq!(row.status, 499, "{row:?}");
    assert_eq!(row.usage_source, UsageSource::Estimated, "{row:?}");
    assert!(row.prompt_tokens() > 0 && row.completion_tokens() > 0, "{row:?}");
    assert_eq!(row.attempt_log.len(), 1);
    assert_eq!(row.attempt_log[0].outcome, AttemptOutcome::Abandoned);
    let cost = row.cost_micros.expect("priced");
    assert!(cost > 0, "{row:?}");
    assert_eq!(
        spent(&gateway, "leaver").await - before,
        cost,
        "the tenant's spend rose by the row's cost"
    );
    // The vendor billed what passed through (within README's bound for estimates: a quarter for the
    // tokenizers' disagreement, 4 tokens in transit), far less than the whole answer.
    assert!(eventually(Duration::from_secs(5), || upstream.stats().streams_cancelled == 1).await);
    let billed = upstream.stats().bill().output;
    let recorded = row.completion_tokens();
    assert!(
        billed.abs_diff(recorded) <= billed / 4 + 4 && billed < 100,
        "billed {billed}, recorded {recorded}"
    );
}

// === Finding 3: dollar budgets are overrun under concurrency ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_requests_never_overspend_a_one_cent_budget() {
    let upstream = SimServer::start(SimConfig {
        latency: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    let gateway = GatewayServer::start(&config(
        "",
        &provider("sim", "openai_compatible", &upstream.base_url(), &["k"]),
        "",
        // 100 micro-dollars a token: an answer of about 30 tokens costs about $0.003.
        &format!(
            "{}[[models]]\nname = \"unpriced\"\n{}",
            deployment("sim", "vendor-m", "price = { input = 100.0, output = 100.0 }"),
            deployment("sim", "vendor-without-a-price", "")
        ),
    ))
    .await;
    let key = tenant_key(
        &gateway,
        json!({"name": "thrifty", "budget_usd": 0.01, "budget_period": "day"}),
    )
    .await;
    let answers = futures_util::future::join_all((0..40).map(|i| {
        let (gateway, key) = (&gateway, &key);
        async move {
            let mut body = chat("m", &format!("Question {i} about rivers."));
            body["max_tokens"] = json!(20);
            let response = send(gateway, key, &body).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    }))
    .await;
    let served = answers.iter().filter(|(s, _)| *s == 200).count();
    assert!(served >= 1, "{answers:?}");
    for (status, body) in &answers {
        assert!(
            *status == 200 || (*status == 429 && body["error"]["code"] == "insufficient_quota"),
            "{status} {body}"
        );
    }
    // Requests refused at admission reached no vendor and cost nothing: the ledger has the served ones.
    let rows = ledger_rows(&gateway, Some("thrifty"), served as u64).await;
    assert_eq!(rows.len(), served);
    let ledger: i64 = rows.iter().map(|r| r.cost_micros.unwrap()).sum();
    assert!(
        ledger <= 10_000,
        "the ledger shows {ledger} micro-dollars spent of 10000"
    );
    assert_eq!(
        spent(&gateway, "thrifty").await,
        ledger,
        "the enforced spend is the ledger's"
    );
    assert_eq!(
        upstream.stats().requests as usize,
        served,
        "refused requests cost nothing"
    );
    eprintln!("{served} of 40 served, {ledger} micro-dollars of 10000");

    // `n` counts: one answer's worst case fits this budget, two do not.
    let key = tenant_key(
        &gateway,
        json!({"name": "plural", "budget_usd": 0.005, "budget_period": "day"}),
    )
    .await;
    let mut body = chat("m", "Question about rivers.");
    body["max_tokens"] = json!(20);
    body["n"] = json!(2);
    let response = send(&gateway, &key, &body).await;
    assert_eq!(response.status(), 429, "{:?}", response.text().await);
    body["n"] = json!(1);
    assert_eq!(send(&gateway, &key, &body).await.status(), 200);

    // A tenant with a dollar budget calling a model without a price is refused, saying why.
    let response = send(&gateway, &key, &chat("unpriced", "hi")).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("price"), "{body}");
    assert_eq!(upstream.stats().requests as usize, served + 1);
}

// === Finding 4: cache writes are not billed as the vendors bill them ===

#[tokio::test]
async fn anthropic_cache_writes_are_priced_apart_by_lifetime() {
    let (sim, server) = sim_face(SimConfig::default(), WireFormat::Anthropic).await;
    let gateway = GatewayServer::start(&config(
        "",
        &provider("claude", "anthropic", &server.url(), &["sk-ant"]),
        "",
        &deployment(
            "claude",
            "claude-sonnet-4-5",
            "price = { input = 3.0, output = 15.0, cached_input = 0.3, cache_write_5m = 3.75, cache_write_1h = 6.0 }",
        ),
    ))
    .await;
    let manual = "The gate keeper's manual, chapter one. ".repeat(60);
    let appendix = "Appendix on weirs and sluices. ".repeat(40);
    // A 1-hour breakpoint after the system prompt, a 5-minute one after the first user turn.
    let body = json!({
        "model": "m",
        "max_tokens": 30,
        "messages": [
            {"role": "system", "content": [
                {"type": "text", "text": manual, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
            ]},
            {"role": "user", "content": [
                {"type": "text", "text": appendix, "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "When do the gates open?"}
        ]
    });
    for _ in 0..2 {
        let response = send(&gateway, CLIENT_KEY, &body).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }
    let rows = ledger_rows(&gateway, None, 2).await;
    let (first, second) = (&rows[0].usage, &rows[1].usage);
    assert!(first.cache_write_1h > 0 && first.cache_write_5m > 0, "{first:?}");
    assert!(second.cache_read > 0 && second.cache_write() == 0, "{second:?}");
    // The ledger has exactly the vendor's bill, by category.
    assert_eq!(first.plus(second), sim.stats().bill());
    for row in &rows {
        let u = &row.usage;
        let pico = u.input * 3_000_000
            + u.cache_read * 300_000
            + u.cache_write_5m * 3_750_000
            + u.cache_write_1h * 6_000_000
            + u.output * 15_000_000;
        assert_eq!(row.cost_micros, Some(((pico + 500_000) / 1_000_000) as i64), "{row:?}");
    }
    let as_plain_input = (first.prompt_tokens() * 3 + first.output * 15) as i64;
    assert!(
        rows[0].cost_micros.unwrap() > as_plain_input,
        "writes cost more than input"
    );
}

// === Finding 5: a transient 429 on the last healthy key fails the request ===

/// Deployment A always answers 429 with `retry-after: 7`; B answers `b_first` once, then 200s.
async fn a_and_b(b_first: &'static str, b_always: bool) -> (GatewayServer, Capture, Capture, Running, Running) {
    let (a, a_server) = Capture::start(|_| rate_limited("7")).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let (b, b_server) = Capture::start(move |_| {
        if b_always || answered.fetch_add(1, Ordering::SeqCst) == 0 {
            rate_limited(b_first)
        } else {
            completion(json!({"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}))
        }
    })
    .await;
    let gateway = GatewayServer::start(&config(
        "max_attempts = 4",
        &format!(
            "{}{}",
            provider("a", "openai_compatible", &format!("{}/v1", a_server.url()), &["key-a"]),
            provider("b", "openai_compatible", &format!("{}/v1", b_server.url()), &["key-b"])
        ),
        "max_queue_ms = 5000",
        &format!(
            "{}{}",
            deployment("a", "va", "priority = 0"),
            deployment("b", "vb", "priority = 1")
        ),
    ))
    .await;
    (gateway, a, b, a_server, b_server)
}

#[tokio::test]
async fn a_transient_429_on_the_last_healthy_key_is_waited_out() {
    let (gateway, a, b, _a, _b) = a_and_b("2", false).await;
    let started = Instant::now();
    let response = post_chat(&gateway, &chat("m", "hello")).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(response.headers()["x-sluice-provider"], "b");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        (a.requests.lock().unwrap().len(), b.requests.lock().unwrap().len()),
        (1, 2)
    );
}

#[tokio::test]
async fn the_final_retry_after_is_the_earliest_over_every_candidate() {
    // B is back in 9 s, past the queue time; A in 7 s, also past it: the client is told 7, not 9.
    let (gateway, _a, _b, _as, _bs) = a_and_b("9", true).await;
    let started = Instant::now();
    let response = post_chat(&gateway, &chat("m", "hello")).await;
    assert!(started.elapsed() < Duration::from_secs(2), "nothing to wait for");
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((6..=7).contains(&retry_after), "retry-after {retry_after}");
}

// === Finding 6: any vendor 401 or 403 removes a key until restart ===

#[tokio::test]
async fn a_single_403_removes_no_key_and_a_401_removes_only_its_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let (capture, upstream) = Capture::start(move |body| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let text = body["messages"][0]["content"].as_str().unwrap_or_default();
        if n == 0 {
            // What Gemini answers for a file the project does not own: the request's problem.
            json_response(
                403,
                json!({"error": {"message": "You do not have permission to access the File abc or it may not exist.",
                                 "type": "permission_denied", "param": null, "code": "PERMISSION_DENIED"}}),
            )
        } else if text == "revoked" {
            json_response(
                401,
                json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                 "param": null, "code": "invalid_api_key"}}),
            )
        } else {
            completion(json!({"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}))
        }
    })
    .await;
    let gateway = GatewayServer::start(&config(
        "max_attempts = 3",
        &provider(
            "up",
            "openai_compatible",
            &format!("{}/v1", upstream.url()),
            &["key-1", "key-2", "key-3"],
        ),
        "",
        &deployment("up", "vendor-m", ""),
    ))
    .await;
    let response = post_chat(&gateway, &chat("m", "read my file")).await;
    assert_eq!(
        response.headers()["x-sluice-attempts"],
        "1",
        "one request burns no keys"
    );
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("permission"),
        "{body}"
    );
    let pool = || gateway.gateway.router.models()[0].deployments()[0].provider();
    assert_eq!(
        pool().out_ids(tokio::time::Instant::now()).count(),
        0,
        "every key stays"
    );
    for i in 0..6 {
        let response = post_chat(&gateway, &chat("m", &format!("hello {i}"))).await;
        assert_eq!(response.status(), 200, "request {i}");
    }
    let used: std::collections::BTreeSet<String> = capture
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| bearer(h))
        .collect();
    assert_eq!(used.len(), 3, "all three keys serve: {used:?}");

    // A key the vendor calls invalid goes, alone; the request is served by another key.
    let response = post_chat(&gateway, &chat("m", "revoked")).await;
    assert_eq!(response.status(), 502, "every key answered 401 for this text");
    let out: Vec<String> = pool().out_ids(tokio::time::Instant::now()).map(str::to_owned).collect();
    assert_eq!(out.len(), 1, "one request takes out at most one key: {out:?}");
    for i in 0..4 {
        assert_eq!(
            post_chat(&gateway, &chat("m", &format!("again {i}"))).await.status(),
            200
        );
    }
}

// === Finding 7: unbounded client strings reach the ledger ===

async fn long_strings_are_capped(store: Option<String>) {
    let upstream = SimServer::start(SimConfig::default()).await;
    let mut toml = config(
        "",
        &provider("sim", "openai_compatible", &upstream.base_url(), &["k"]),
        "",
        &deployment("sim", "vendor-m", ""),
    );
    if let Some(url) = &store {
        let dir = scratch_dir(&format!("metering-long-{}", url.rsplit('/').next().unwrap()));
        toml.push_str(&format!(
            "[store]\nurl = \"{url}\"\nspool = \"{}\"\nprices = \"{}\"\n",
            dir.join("usage.spool").display(),
            repo_root().join("config/prices.toml").display()
        ));
    }
    let gateway = GatewayServer::start(&toml).await;
    // A 1 MB model name: refused as unknown, recorded under a fixed label.
    let response = post_chat(&gateway, &chat(&"m".repeat(1 << 20), "hi")).await;
    assert_eq!(response.status(), 404);
    // A long request id (as long as a header may be here): served, kept capped.
    let id = "i".repeat(30 * 1024);
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("x-request-id", &id)
        .json(&chat("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A 60 KB id is over the header limit: refused before it reaches anything.
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("x-request-id", "j".repeat(60 * 1024))
        .json(&chat("m", "hi"))
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 431);
    }
    let rows = ledger_rows(&gateway, None, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].model, sluice_pipeline::UNKNOWN_MODEL);
    assert_eq!(rows[1].client_request_id.as_deref().map(str::len), Some(128));
    let stats = gateway.writer_stats();
    assert_eq!((stats.rejected, stats.dropped), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn a_megabyte_model_name_and_a_long_request_id_are_capped_on_sqlite() {
    long_strings_are_capped(None).await;
}

#[tokio::test]
async fn a_megabyte_model_name_and_a_long_request_id_are_capped_on_postgres() {
    let Some(database) = FreshDatabase::create("sluice_metering_long") else {
        return;
    };
    long_strings_are_capped(Some(database.url("127.0.0.1:5432"))).await;
}

// === Finding 8: a torn spool line stops the gateway ===

#[tokio::test]
async fn sluice_serve_starts_on_a_spool_whose_last_line_is_torn() {
    let dir = scratch_dir("metering-torn");
    let port = free_port();
    let upstream = SimServer::start(SimConfig::default()).await;
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{db}\"\nspool = \"{spool}\"\nprices = \"{prices}\"\n{}",
            config(
                "",
                &provider("sim", "openai_compatible", &upstream.base_url(), &["k"]),
                "",
                &deployment("sim", "vendor-m", "")
            ),
            db = dir.join("ledger.db").display(),
            spool = dir.join("usage.spool").display(),
            prices = repo_root().join("config/prices.toml").display(),
        ),
    )
    .unwrap();
    // Two good rows, then a last line cut inside "é" (0xC3 0xA9), as a crash mid-append leaves it.
    let row = |id: &str, model: &str| UsageRow {
        id: id.to_owned(),
        client_request_id: None,
        tenant: "default".into(),
        key_id: None,
        model: model.to_owned(),
        provider: "sim".into(),
        vendor_model: "vendor-m".into(),
        upstream_key: Some("sim#0".into()),
        usage: sluice_api::TokenUsage::new(10, 2),
        usage_source: UsageSource::Vendor,
        cost_micros: Some(1),
        price_source: sluice_store::PriceSource::Override,
        price_date: None,
        latency_ms: 1,
        status: 200,
        attempts: 1,
        attempt_log: Vec::new(),
        prompt_name: None,
        prompt_version: None,
        created_at: chrono::Utc::now(),
    };
    let mut spool = Vec::new();
    for id in [
        "0190e0b0-0000-7000-8000-000000000001",
        "0190e0b0-0000-7000-8000-000000000002",
    ] {
        spool.extend(serde_json::to_vec(&row(id, "m")).unwrap());
        spool.push(b'\n');
    }
    let mut torn = serde_json::to_vec(&row("0190e0b0-0000-7000-8000-000000000003", "caf\u{e9}")).unwrap();
    torn.truncate(torn.iter().position(|b| *b == 0xC3).unwrap() + 1);
    spool.extend(&torn);
    std::fs::write(dir.join("usage.spool"), &spool).unwrap();

    let mut gateway = BinProcess::spawn(&["serve", "--config", path.to_str().unwrap()], "info");
    gateway.wait_healthy(port).await;
    let response = client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(&chat("m", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The good rows are replayed, the torn line is kept aside byte for byte.
    let replayed = eventually(Duration::from_secs(10), || {
        std::fs::read(dir.join("usage.spool.rejected")).is_ok_and(|kept| kept.trim_ascii_end() == torn)
    })
    .await;
    assert!(replayed, "the torn line is in .rejected:\n{}", gateway.log_tail(20));
    let mut requests = 0;
    for _ in 0..100 {
        let spend: Value = client()
            .get(format!("http://127.0.0.1:{port}/admin/spend?group_by=tenant"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        requests = spend["data"][0]["requests"].as_u64().unwrap_or(0);
        if requests == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(requests, 3, "two replayed rows and the new request");
}

// === Finding 9: hostile-upstream arithmetic ===

/// `[store]` for `url` with a spool of its own, or nothing (the harness's SQLite file).
fn store_table(url: Option<&str>, name: &str) -> String {
    url.map_or_else(String::new, |url| {
        let dir = scratch_dir(&format!("metering-{name}"));
        format!(
            "[store]\nurl = \"{url}\"\nspool = \"{}\"\nprices = \"{}\"\n",
            dir.join("usage.spool").display(),
            repo_root().join("config/prices.toml").display()
        )
    })
}

#[tokio::test]
async fn absurd_vendor_numbers_are_clamped_and_never_panic_on_sqlite() {
    absurd_vendor_numbers(None).await;
}

#[tokio::test]
async fn absurd_vendor_numbers_are_clamped_and_never_panic_on_postgres() {
    let Some(database) = FreshDatabase::create("sluice_metering_absurd") else {
        return;
    };
    absurd_vendor_numbers(Some(database.url("127.0.0.1:5432"))).await;
}

async fn absurd_vendor_numbers(store: Option<String>) {
    let (_capture, upstream) =
        Capture::start(
            |body| match body["messages"][0]["content"].as_str().unwrap_or_default() {
                "wait" => rate_limited("1e19"),
                "huge" => rate_limited("18446744073709551616"),
                _ => completion(json!({
                    "prompt_tokens": u64::MAX, "completion_tokens": u64::MAX, "total_tokens": u64::MAX,
                    "prompt_tokens_details": {"cached_tokens": u64::MAX},
                    "completion_tokens_details": {"reasoning_tokens": u64::MAX}
                })),
            },
        )
        .await;
    let base = format!("{}/v1", upstream.url());
    let store = store_table(store.as_deref(), "absurd");
    let gateway = GatewayServer::start(&format!(
        "{store}{}",
        config(
            "max_attempts = 1",
            &format!(
                "{}{}",
                provider("up", "openai_compatible", &base, &["k1"]),
                provider("up2", "openai_compatible", &base, &["k2"])
            ),
            "max_queue_ms = 0",
            &format!(
                "{}[[models]]\nname = \"n\"\nmax_queue_ms = 0\n{}",
                deployment(
                    "up",
                    "vendor-m",
                    "price = { input = 1000.0, output = 1000.0 }\nrpm = 100"
                ),
                deployment("up2", "vendor-n", "")
            ),
        )
    ))
    .await;
    for text in ["wait", "huge"] {
        let response = post_chat(
            &gateway,
            &json!({"model": "n", "messages": [{"role": "user", "content": text}]}),
        )
        .await;
        assert_eq!(response.status(), 429, "{text}");
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry_after), "{text}: retry-after {retry_after}");
    }

    // Usage near u64::MAX from a vendor: answered, ledgered, and the budgets still work afterwards.
    let key = tenant_key(
        &gateway,
        json!({"name": "victim", "budget_usd": 5.0, "budget_period": "day", "tpm": 100000, "rpm": 100}),
    )
    .await;
    let response = send(&gateway, &key, &chat("m", "hello")).await;
    assert_eq!(response.status(), 200);
    for _ in 0..2 {
        let response = send(&gateway, &key, &chat("m", "hello")).await;
        let status = response.status().as_u16();
        assert_eq!(status, 429, "the tenant is over its budget and its rate");
        if let Some(after) = response.headers().get("retry-after") {
            let after: u64 = after.to_str().unwrap().parse().unwrap();
            assert!(after <= 24 * 3600, "retry-after {after}: at most the budget's day");
        }
    }
    // A second absurd answer, with the client key, adds to the same day's rollups.
    assert_eq!(post_chat(&gateway, &chat("m", "hello")).await.status(), 200);
    // Two vendor 429s and two absurd answers (the tenant's refusals reached no vendor).
    let rows = ledger_rows(&gateway, None, 4).await;
    let stats = gateway.writer_stats();
    assert_eq!((stats.rejected, stats.dropped), (0, 0), "{stats:?}");
    let absurd: Vec<&UsageRow> = rows.iter().filter(|r| r.status == 200).collect();
    assert_eq!(absurd.len(), 2, "{rows:?}");
    for row in absurd {
        let most = sluice_api::MAX_REQUEST_TOKENS;
        assert_eq!(
            (row.usage.cache_read, row.usage.output, row.usage.reasoning),
            (most, most, most),
            "{row:?}"
        );
        assert!(row.cost_micros.unwrap() > 0, "{row:?}");
    }
    let (status, spend) = admin(&gateway, reqwest::Method::GET, "/admin/spend?group_by=tenant", None).await;
    assert_eq!(status, 200, "{spend}");
    assert!(gateway.gateway.router.models().len() == 2);
}

#[tokio::test]
async fn default_is_a_reserved_tenant_name() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(
        &config_for(&upstream.base_url(), "").replace("[auth]\n", &format!("[auth]\nadmin_key = \"{ADMIN}\"\n")),
    )
    .await;
    let (status, body) = admin(
        &gateway,
        reqwest::Method::POST,
        "/admin/tenants",
        Some(json!({"name": "default"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "name", "{body}");
}
