//! Tenants, virtual keys, limits, budgets and the usage ledger, end to end over HTTP, on SQLite and on
//! PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sluice_simulate::SimConfig;

const ADMIN: &str = "sk-tenants-admin-0123456789abcdefghijklmn";

fn config(upstream: &str, store: Option<&str>) -> String {
    let store = store.map_or_else(String::new, |url| {
        // One spool per gateway: a spool shared by two writers would replay one's rows into the other.
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "pg-spool-{}-{}",
            std::process::id(),
            url.rsplit('/').next().unwrap_or("db")
        ));
        format!(
            "[store]\nurl = \"{url}\"\nspool = \"{}\"\nrefresh_ms = 200\nprices = \"{}\"\n",
            dir.join("usage.spool").display(),
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../config/prices.toml")
                .display()
        )
    });
    format!(
        r#"
{store}
[auth]
admin_key = "{ADMIN}"
[[providers]]
name = "sim"
kind = "openai_compatible"
base_url = "{upstream}"
keys = ["k"]
[[models]]
name = "m"
max_queue_ms = 0
[[models.deployments]]
provider = "sim"
model = "vendor-m"
price = {{ input = 100000.0, output = 100000.0 }}
[[models]]
name = "other"
[[models.deployments]]
provider = "sim"
model = "vendor-other"
"#
    )
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

async fn chat(gateway: &GatewayServer, key: &str, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "stream": stream, "max_tokens": 4,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn new_key(gateway: &GatewayServer, tenant: Value) -> (String, String) {
    let name = tenant["name"].as_str().unwrap().to_owned();
    let (status, body) = admin(gateway, reqwest::Method::POST, "/admin/tenants", Some(tenant)).await;
    assert_eq!(status, 201, "{body}");
    let (status, key) = admin(
        gateway,
        reqwest::Method::POST,
        &format!("/admin/tenants/{name}/keys"),
        Some(json!({"name": "ci"})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-sluice-"), "{secret}");
    (secret, key["id"].as_str().unwrap().to_owned())
}

async fn spend(gateway: &GatewayServer, query: &str) -> Vec<Value> {
    admin(gateway, reqwest::Method::GET, &format!("/admin/spend?{query}"), None)
        .await
        .1["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the ledger shows `requests` requests for `tenant` (the writer flushes in batches).
async fn ledger_shows(gateway: &GatewayServer, tenant: &str, requests: u64) -> Value {
    for _ in 0..100 {
        let rows = spend(gateway, &format!("tenant={tenant}&group_by=tenant")).await;
        if let Some(row) = rows.iter().find(|r| r["requests"].as_u64() == Some(requests)) {
            return row.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the ledger never showed {requests} requests for {tenant}: {:?}",
        spend(gateway, "group_by=tenant").await
    );
}

async fn the_tenant_lifecycle(store: Option<&str>) {
    let upstream = SimServer::start(SimConfig {
        reply_tokens: 4,
        ..SimConfig::default()
    })
    .await;
    let gateway = GatewayServer::start(&config(&upstream.base_url(), store)).await;

    // Rate limits with OpenAI's headers.
    let (key, key_id) = new_key(&gateway, json!({"name": "team-a", "rpm": 2, "models": ["m"]})).await;
    let response = chat(&gateway, &key, "m", false).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "1");
    assert!(response.headers().contains_key("x-ratelimit-reset-requests"));
    let streamed = chat(&gateway, &key, "m", true).await.text().await.unwrap();
    assert!(streamed.ends_with("data: [DONE]\n\n"));
    let response = chat(&gateway, &key, "m", false).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    // Access: a model outside the tenant's list is a 403, and the model list shows only its own.
    let response = chat(&gateway, &key, "other", false).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_allowed");
    let models: Value = get_json(&gateway, "/v1/models", &key).await;
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    assert_eq!(models["data"][0]["id"], "m");

    // The ledger: two answered requests, a 429 and a 403 (the last two before routing cost nothing).
    let row = ledger_shows(&gateway, "team-a", 2).await;
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0, "{row}");
    assert_eq!(row["completion_tokens"], 8);
    assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "{row}");
    let usage: Value = get_json(&gateway, "/v1/usage?group_by=model", &key).await;
    assert_eq!(usage["tenant"], "team-a");
    assert_eq!(usage["data"][0]["group"], "m");
    assert_eq!(usage["data"][0]["requests"], 2);
    // Both answer by billing category too: the categories add up to the totals.
    for row in [&row, &usage["data"][0]] {
        let n = |field: &str| row[field].as_u64().unwrap_or_else(|| panic!("{field} in {row}"));
        assert_eq!(
            n("input_tokens") + n("cache_read_tokens") + n("cache_write_tokens"),
            n("prompt_tokens"),
            "{row}"
        );
        assert_eq!(n("output_tokens"), n("completion_tokens"), "{row}");
        assert!(n("reasoning_tokens") <= n("output_tokens"), "{row}");
    }

    // A budget: the deployment costs 10 cents a token. An answer's worst case (its prompt and its 4-token
    // cap, over 10 tokens) fits in $2; once one is spent, the next one's worst case no longer fits.
    let (rich, _) = new_key(
        &gateway,
        json!({"name": "team-b", "budget_usd": 2.0, "budget_period": "day"}),
    )
    .await;
    assert_eq!(chat(&gateway, &rich, "m", false).await.status(), 200);
    let response = chat(&gateway, &rich, "m", false).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("resets at"),
        "{body}"
    );

    // Revocation takes effect at once on this gateway.
    let (status, _) = admin(
        &gateway,
        reqwest::Method::DELETE,
        &format!("/admin/keys/{key_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(chat(&gateway, &key, "m", false).await.status(), 401);

    // Admin views: tenants and keys (prefixes, never keys), and validation errors naming the field.
    let (_, tenants) = admin(&gateway, reqwest::Method::GET, "/admin/tenants", None).await;
    assert_eq!(tenants["data"].as_array().unwrap().len(), 2);
    let (_, keys) = admin(&gateway, reqwest::Method::GET, "/admin/tenants/team-a/keys", None).await;
    assert!(
        keys.to_string().contains("sk-sluice-") && !keys.to_string().contains(&key),
        "{keys}"
    );
    let (status, body) = admin(
        &gateway,
        reqwest::Method::POST,
        "/admin/tenants",
        Some(json!({"name": "team-a"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = admin(
        &gateway,
        reqwest::Method::POST,
        "/admin/tenants",
        Some(json!({"name": "x", "models": ["nope"]})),
    )
    .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("models")));
    let (status, _) = admin(&gateway, reqwest::Method::GET, "/admin/spend?group_by=colour", None).await;
    assert_eq!(status, 400);
    // A tenant key is not an admin key.
    let response = client()
        .get(gateway.url("/admin/tenants"))
        .bearer_auth(&rich)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_keys_limits_budgets_and_the_ledger_on_sqlite() {
    the_tenant_lifecycle(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_keys_limits_budgets_and_the_ledger_on_postgres() {
    let Some(database) = FreshDatabase::create("sluice_gw") else {
        return;
    };
    the_tenant_lifecycle(Some(&format!("postgres://postgres@127.0.0.1:5432/{}", database.name))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_loses_no_usage_and_counts_none_twice() {
    let Some(database) = FreshDatabase::create("sluice_outage") else {
        return;
    };

    let proxy = TcpOutage::start("127.0.0.1:5432".parse().unwrap()).await;
    let upstream = SimServer::start(SimConfig {
        reply_tokens: 5,
        ..SimConfig::default()
    })
    .await;
    let url = format!("postgres://postgres@{}/{}", proxy.addr, database.name);
    let gateway = GatewayServer::start(&config(&upstream.base_url(), Some(&url))).await;
    let (key, _) = new_key(&gateway, json!({"name": "steady"})).await;

    // The database goes away; requests keep being served from the key cache, usage goes to the spool.
    proxy.cut();
    let mut reported = (0u64, 0u64);
    const N: u64 = 20;
    for i in 0..N {
        let response = chat(&gateway, &key, "m", i % 2 == 1).await;
        assert_eq!(response.status(), 200, "request {i} during the outage");
        if i % 2 == 0 {
            let body: Value = response.json().await.unwrap();
            reported.0 += body["usage"]["prompt_tokens"].as_u64().unwrap();
            reported.1 += body["usage"]["completion_tokens"].as_u64().unwrap();
        } else {
            response.text().await.unwrap();
        }
    }
    // Streams report the same usage as the same request answered whole: the simulator is deterministic.
    reported = (reported.0 * 2, reported.1 * 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();

    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = admin(
            &gateway,
            reqwest::Method::GET,
            "/admin/spend?tenant=steady&group_by=tenant",
            None,
        )
        .await;
        last = json!({"status": status, "body": body});
        if status == 200
            && let Some(row) = body["data"].as_array().and_then(|rows| rows.first())
        {
            last = row.clone();
            if row["requests"].as_u64() == Some(N) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        last["requests"].as_u64(),
        Some(N),
        "exactly N rows after the outage: {last}"
    );
    assert_eq!(
        (
            last["prompt_tokens"].as_u64().unwrap(),
            last["completion_tokens"].as_u64().unwrap()
        ),
        reported,
        "the ledger's totals equal what the upstream reported"
    );
    drop(gateway);
    drop(proxy);
}

#[tokio::test]
async fn an_expired_key_stops_working_and_a_tenant_sees_only_its_own_usage() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&config(&upstream.base_url(), None)).await;
    let (status, _) = admin(
        &gateway,
        reqwest::Method::POST,
        "/admin/tenants",
        Some(json!({"name": "short"})),
    )
    .await;
    assert_eq!(status, 201);
    let expires = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let (status, key) = admin(
        &gateway,
        reqwest::Method::POST,
        "/admin/tenants/short/keys",
        Some(json!({"expires_at": expires})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();
    assert_eq!(chat(&gateway, &key, "m", false).await.status(), 200);
    // Another tenant's usage is out of reach: the tenant filter is refused on the tenant endpoint.
    let response = client()
        .get(gateway.url("/v1/usage?tenant=someone-else"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(chat(&gateway, &key, "m", false).await.status(), 401, "expired");
}
