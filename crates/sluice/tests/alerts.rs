//! `[[alerts]]` over real HTTP: a webhook receiver in the test gets exactly one alert per budget
//! threshold while a tenant's spend crosses it through two gateways sharing one store and a restart, a
//! key-exhaustion alert during a 429 storm, and `sluice alerts test`'s signed test alert.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use bytes::Bytes;
use common::{GatewayServer, Running, SimServer, client, eventually, repo_root, scratch_dir, serve};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sluice_simulate::SimConfig;

const ADMIN: &str = "sk-alerts-admin-0123456789abcdefghijklmnop";
const SECRET: &str = "whsec-test-0123456789";

/// A webhook receiver: keeps every delivery's headers and exact body; answers 503 to the first
/// `fail_first` deliveries, so retries show.
#[derive(Clone, Default)]
struct Hook {
    got: Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>,
    refused: Arc<Mutex<u32>>,
    fail_first: u32,
}

impl Hook {
    async fn start(fail_first: u32) -> (Self, Running) {
        let hook = Hook {
            fail_first,
            ..Hook::default()
        };
        let app = axum::Router::new()
            .route("/hook/T0123/secret-path", axum::routing::post(receive))
            .with_state(hook.clone());
        (hook, serve(app, Duration::from_secs(1)).await)
    }

    /// Every alert taken, parsed.
    fn alerts(&self) -> Vec<Value> {
        let got = self.got.lock().unwrap();
        got.iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect()
    }

    fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.alerts().iter().filter(|a| pred(a)).count()
    }
}

async fn receive(State(hook): State<Hook>, headers: http::HeaderMap, body: Bytes) -> impl IntoResponse {
    {
        let mut refused = hook.refused.lock().unwrap();
        if *refused < hook.fail_first {
            *refused += 1;
            return http::StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    hook.got.lock().unwrap().push((headers, body));
    http::StatusCode::OK
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn budget_alert(threshold: f64) -> impl Fn(&Value) -> bool {
    move |a| a["kind"] == "budget_threshold" && a["tenant"] == "acme" && a["threshold"] == threshold
}

/// One replica of the gateway on the shared SQLite store, its own spool.
async fn replica(dir: &std::path::Path, name: &str, vendor: &str, hook: &str) -> GatewayServer {
    let toml = format!(
        r#"
[auth]
admin_key = "{ADMIN}"

[store]
url = "sqlite://{db}"
spool = "{spool}"
prices = "{prices}"
refresh_ms = 100

[[providers]]
name = "up"
kind = "openai_compatible"
base_url = "{vendor}"
keys = ["sk-upstream-1"]

[[models]]
name = "m"
[[models.deployments]]
provider = "up"
model = "vendor-model"
# 1 cent per output token, input free: a 10-token answer costs exactly $0.10.
price = {{ input = 0.0, output = 10000.0 }}

[[models]]
name = "gated"
access = "approval"
[[models.deployments]]
provider = "up"
model = "vendor-model"

[[alerts]]
url = "{hook}"
secret = "env:HOOK_SECRET"
keys = false
check_interval_ms = 100
"#,
        db = dir.join("shared.db").display(),
        spool = dir.join(format!("{name}.spool")).display(),
        prices = repo_root().join("config/prices.toml").display(),
    );
    GatewayServer::start_with_env(&toml, &[("HOOK_SECRET", SECRET)]).await
}

async fn admin(gateway: &GatewayServer, path: &str, body: Value) -> Value {
    let response = client()
        .post(gateway.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

/// A chat whose answer is 10 tokens ($0.10); retried while the replica has not yet read the new key.
async fn spend_ten_cents(gateway: &GatewayServer, key: &str) {
    for _ in 0..50 {
        let response = client()
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "m", "max_tokens": 10,
                          "messages": [{"role": "user", "content": "Say something about rivers."}]}))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["usage"]["completion_tokens"], 10, "{body}");
                return;
            }
            401 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("chat answered {other}: {}", response.text().await.unwrap()),
        }
    }
    panic!("the replica never accepted the tenant's key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_budget_threshold_fires_once_across_replicas_and_a_restart() {
    let dir = scratch_dir("alerts-budget");
    let sim = SimServer::start(SimConfig::default()).await;
    // The first delivery is refused: it must be retried, and still arrive once.
    let (hook, hook_server) = Hook::start(1).await;
    let hook_url = format!("{}/hook/T0123/secret-path", hook_server.url());

    let a = replica(&dir, "a", &sim.base_url(), &hook_url).await;
    let b = replica(&dir, "b", &sim.base_url(), &hook_url).await;
    admin(
        &a,
        "/admin/tenants",
        json!({"name": "acme", "budget_usd": 1.0, "budget_period": "month"}),
    )
    .await;
    let key = admin(&a, "/admin/tenants/acme/keys", json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();

    // $0.10 a request, alternating replicas: the 5th reaches 50%, the 8th 80% (on replica b).
    for i in 0..8 {
        spend_ten_cents(if i % 2 == 0 { &a } else { &b }, &key).await;
    }
    assert!(
        eventually(Duration::from_secs(10), || hook.count(budget_alert(0.8)) >= 1).await,
        "no 80% alert: {:?}",
        hook.alerts()
    );
    assert_eq!(
        *hook.refused.lock().unwrap(),
        1,
        "the first delivery was refused and retried"
    );

    // Both replicas keep checking a spend past 80%; then one restarts and checks it again.
    drop(a);
    let a = replica(&dir, "a", &sim.base_url(), &hook_url).await;
    spend_ten_cents(&a, &key).await;
    spend_ten_cents(&b, &key).await;
    assert!(
        eventually(Duration::from_secs(10), || hook.count(budget_alert(1.0)) >= 1).await,
        "no 100% alert: {:?}",
        hook.alerts()
    );
    // Several more checks of every replica, for a duplicate to show if there were one.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let alerts = hook.alerts();
    for threshold in [0.5, 0.8, 1.0] {
        assert_eq!(hook.count(budget_alert(threshold)), 1, "{threshold}: {alerts:#?}");
    }
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
    let eighty = alerts.iter().find(|a| budget_alert(0.8)(a)).unwrap();
    assert_eq!(eighty["version"], 1);
    assert_eq!(eighty["period"], chrono::Utc::now().format("%Y-%m").to_string());
    assert_eq!(eighty["spend_usd"], "0.800000");
    assert_eq!(eighty["budget_usd"], "1.000000");
    assert!(
        eighty["text"]
            .as_str()
            .unwrap()
            .contains("tenant `acme` has spent 80% of its budget"),
        "{eighty}"
    );
    // Every body is signed with the secret.
    for (headers, body) in hook.got.lock().unwrap().iter() {
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-sluice-signature"], expected_signature(body).as_str());
    }
    // The store holds one record per threshold.
    let fired = b
        .gateway
        .tenancy
        .as_ref()
        .unwrap()
        .store
        .fired_alerts("acme")
        .await
        .unwrap();
    let thresholds: Vec<u32> = fired.iter().map(|f| f.threshold_bp).collect();
    assert_eq!(thresholds, [5000, 8000, 10_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_announced_as_the_key_exhausted() {
    // The vendor takes one request a minute per key: every request after the first is a 429.
    let sim = SimServer::start(SimConfig {
        rpm: Some(1),
        ..SimConfig::default()
    })
    .await;
    let (hook, hook_server) = Hook::start(0).await;
    let toml = format!(
        r#"{}
[[alerts]]
url = "{}/hook/T0123/secret-path"
budget = []
check_interval_ms = 100
"#,
        common::config_for(&sim.base_url(), ""),
        hook_server.url()
    );
    let gateway = GatewayServer::start(&toml).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            common::post_chat(&gateway, &common::chat_body(false))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses[0], 200);
    assert!(statuses[1..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(sim.stats().rate_limited > 0, "the vendor answered 429s");

    let exhausted = |a: &Value| a["kind"] == "key_out" && a["key"] == "up#0";
    assert!(
        eventually(Duration::from_secs(5), || hook.count(exhausted) == 1).await,
        "no key alert: {:?}",
        hook.alerts()
    );
    let alerts = hook.alerts();
    let alert = alerts.iter().find(|a| exhausted(a)).unwrap();
    assert_eq!(alert["reason"], "cooldown", "{alert}");
    assert_eq!(alert["model"], "m");
    assert_eq!(alert["provider"], "up");
    assert_eq!(alert["vendor_model"], "vendor-model");
    assert!(alert["cooldown_ms"].as_u64().unwrap() > 0);
    assert!(alert["text"].as_str().unwrap().contains("`up#0`"), "{alert}");
    // Unsigned: no secret configured. The key's value appears nowhere.
    let (headers, body) = hook.got.lock().unwrap()[0].clone();
    assert!(headers.get("x-sluice-signature").is_none());
    assert!(!String::from_utf8_lossy(&body).contains("sk-upstream-1"));
    // Still cooling at later checks: announced once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(hook.count(exhausted), 1, "{:?}", hook.alerts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_test_command_posts_a_signed_test_alert() {
    let dir = scratch_dir("alerts-cli");
    let (hook, hook_server) = Hook::start(0).await;
    let write = |name: &str, url: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "[[alerts]]\nurl = \"{url}\"\nsecret = \"env:HOOK_SECRET\"\n\n[[models]]\nname = \"m\"\n\
                 [[models.deployments]]\nprovider = \"sim\"\nmodel = \"x\"\n\n[[providers]]\nname = \"sim\"\n\
                 kind = \"simulated\"\n"
            ),
        )
        .unwrap();
        path
    };
    let run = |config: std::path::PathBuf| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--config", config.to_str().unwrap(), "alerts", "test"])
            .env("HOOK_SECRET", SECRET)
            .output()
            .await
            .unwrap()
    };
    let good = write("good.toml", &format!("{}/hook/T0123/secret-path", hook_server.url()));
    let output = run(good).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("delivered (200, signed)"), "{stdout}");
    assert!(
        !stdout.contains("secret-path"),
        "the webhook's path is never printed: {stdout}"
    );
    let (headers, body) = hook.got.lock().unwrap()[0].clone();
    assert_eq!(headers["x-sluice-signature"], expected_signature(&body).as_str());
    let alert: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(alert["kind"], "test");
    assert!(alert["text"].as_str().unwrap().contains("this webhook works"));

    // Nothing listens on port 9 of loopback: the command says so and fails (after its retries).
    let dead = write("dead.toml", "http://127.0.0.1:9/hook/T0123/secret-path");
    let output = run(dead).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(stdout.contains("127.0.0.1:9: the webhook"), "{stdout}");
    assert!(!stdout.contains("secret-path"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_out_by_429s_is_announced_recovered() {
    // The vendor answers 429 with `retry-after: 1` twice, then serves: the key cools down for about two
    // seconds while the request waits its turn, and is good again after.
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let (_upstream, upstream_server) = common::Capture::start(move |_| {
        if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            axum::response::Response::builder()
                .status(429)
                .header("retry-after", "1")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    r#"{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}"#,
                ))
                .unwrap()
        } else {
            common::json_response(
                200,
                json!({"id": "c", "object": "chat.completion", "created": 1, "model": "vendor-model",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
            )
        }
    })
    .await;
    let (hook, hook_server) = Hook::start(0).await;
    let toml = format!(
        "{}\n[[alerts]]\nurl = \"{}/hook/T0123/secret-path\"\nbudget = []\ncheck_interval_ms = 100\n",
        common::config_for(&upstream_server.url(), ""),
        hook_server.url()
    );
    let gateway = GatewayServer::start(&toml).await;
    let response = common::post_chat(&gateway, &common::chat_body(false)).await;
    assert_eq!(response.status(), 200, "served once the key came back");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);

    let recovered = |a: &Value| a["kind"] == "key_recovered" && a["key"] == "up#0";
    assert!(
        eventually(Duration::from_secs(5), || hook.count(recovered) == 1).await,
        "{:?}",
        hook.alerts()
    );
    let kinds: Vec<String> = hook
        .alerts()
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["key_out", "key_recovered"], "out first, then back, once each");
    let back = hook.alerts().into_iter().find(|a| recovered(a)).unwrap();
    assert_eq!(back["reason"], "cooldown");
    assert!(
        back["text"].as_str().unwrap().contains("serving model `m` again"),
        "{back}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_request_is_announced_once_across_replicas_and_a_restart() {
    let dir = scratch_dir("alerts-subscriptions");
    let sim = SimServer::start(SimConfig::default()).await;
    let (hook, hook_server) = Hook::start(0).await;
    let hook_url = format!("{}/hook/T0123/secret-path", hook_server.url());
    let a = replica(&dir, "a", &sim.base_url(), &hook_url).await;
    let b = replica(&dir, "b", &sim.base_url(), &hook_url).await;
    admin(&a, "/admin/tenants", json!({"name": "acme"})).await;
    let key = admin(&a, "/admin/tenants/acme/keys", json!({})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let asked = client()
        .post(a.url("/v1/subscriptions"))
        .bearer_auth(&key)
        .json(&json!({"service": "model:gated", "reason": "nightly evals"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 201);
    let id = asked.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let requested = |a: &Value| a["kind"] == "subscription_requested";
    assert!(
        eventually(Duration::from_secs(10), || hook.count(requested) >= 1).await,
        "no subscription alert: {:?}",
        hook.alerts()
    );
    // Both replicas keep checking; one restarts and checks again.
    drop(a);
    let _a = replica(&dir, "a", &sim.base_url(), &hook_url).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let alerts = hook.alerts();
    assert_eq!(hook.count(requested), 1, "{alerts:#?}");
    let alert = alerts.iter().find(|a| requested(a)).unwrap();
    assert_eq!(alert["request"], id.as_str());
    assert_eq!(alert["tenant"], "acme");
    assert_eq!(alert["service"], "model:gated");
    assert_eq!(alert["reason"], "nightly evals");
    assert!(alert["text"].as_str().unwrap().contains(&id), "{alert}");
    drop(b);
}
