//! The catalog end to end over HTTP, on SQLite and on PostgreSQL: a tenant discovers a prompt, is refused
//! before approval, subscribes, is approved (on one replica, effective on the other within a second) and
//! calls it; another tenant is still refused; a deprecated version answers with its headers and a retired
//! one with 410; grants open a private model; the audit log holds each admin step; the CLI shows the
//! catalog, approves a request the gateways then honour, and prints the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use sluice_simulate::SimConfig;

const ADMIN: &str = "sk-catalog-admin-0123456789abcdefghijklmn";

/// Three versions of `review`: 1 retired, 2 deprecated (with a sunset), 3 active; the newest says only
/// approved tenants may call it.
fn write_prompts(dir: &std::path::Path) {
    let version = |v: u32, extra: &str| {
        format!(
            "name = \"review\"\nversion = {v}\ndescription = \"Review a text, v{v}.\"\nmodel = \"m\"\n{extra}\n\
             [parameters]\nmax_tokens = 4\n[variables.text]\ntype = \"string\"\n\
             [[messages]]\nrole = \"user\"\ncontent = \"Review: {{{{ text }}}}\"\n"
        )
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("review.v1.toml"),
        version(1, "status = \"retired\"\nreplaced_by = 3"),
    )
    .unwrap();
    std::fs::write(
        dir.join("review.v2.toml"),
        version(
            2,
            "status = \"deprecated\"\nsunset = 2027-01-31\ndeprecated_since = 2026-06-01T00:00:00Z\nreplaced_by = 3",
        ),
    )
    .unwrap();
    std::fs::write(dir.join("review.v3.toml"), version(3, "access = \"approval\"")).unwrap();
}

fn config(upstream: &str, store: &str, spool: &std::path::Path, prompts: &std::path::Path) -> String {
    format!(
        r#"
[store]
url = "{store}"
spool = "{}"
refresh_ms = 60000
[prompts]
dir = "{}"
reload_ms = 0
[auth]
admin_key = "{ADMIN}"
[[providers]]
name = "sim"
kind = "openai_compatible"
base_url = "{upstream}"
keys = ["k"]
[[models]]
name = "m"
description = "The everyday model."
[[models.deployments]]
provider = "sim"
model = "vendor-m"
[[models]]
name = "secret"
access = "private"
[[models.deployments]]
provider = "sim"
model = "vendor-secret"
"#,
        spool.display(),
        prompts.display()
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

async fn tenant_key(gateway: &GatewayServer, name: &str) -> (String, String) {
    let (status, body) = admin(
        gateway,
        reqwest::Method::POST,
        "/admin/tenants",
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let path = format!("/admin/tenants/{name}/keys");
    let (status, key) = admin(gateway, reqwest::Method::POST, &path, Some(json!({}))).await;
    assert_eq!(status, 201, "{key}");
    (
        key["key"].as_str().unwrap().to_owned(),
        key["id"].as_str().unwrap().to_owned(),
    )
}

async fn run_prompt(gateway: &GatewayServer, key: &str, version: Option<u32>) -> reqwest::Response {
    let mut body = json!({"variables": {"text": "A short essay."}});
    if let Some(version) = version {
        body["version"] = json!(version);
    }
    client()
        .post(gateway.url("/v1/prompts/review"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get(gateway: &GatewayServer, path: &str, key: &str) -> Value {
    let response = client().get(gateway.url(path)).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn entry<'a>(catalog: &'a Value, service: &str) -> &'a Value {
    catalog["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["service"] == service)
        .unwrap_or_else(|| panic!("{service} not in {catalog}"))
}

async fn error_code(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or_default().to_owned(),
        body["error"]["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Calls until the prompt answers 200 on `gateway`, for at most `limit`; how long it took.
async fn answers_within(gateway: &GatewayServer, key: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if run_prompt(gateway, key, None).await.status() == 200 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn cli(config: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("USER", "ops")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sluice {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn the_catalog_flow(store: String, label: &str) {
    let upstream = SimServer::start(SimConfig::default()).await;
    let dir = scratch_dir(&format!("catalog-{label}"));
    let prompts = dir.join("prompts");
    write_prompts(&prompts);
    let toml = |replica: &str| {
        config(
            &upstream.base_url(),
            &store,
            &dir.join(format!("{replica}.spool")),
            &prompts,
        )
    };
    // Two replicas over one database, b started once the tenants exist; each reads keys and tenants only
    // once a minute, so only the access poll can carry an approval from one to the other in time.
    let a = GatewayServer::start(&toml("a")).await;
    let (alpha, _) = tenant_key(&a, "alpha").await;
    let (beta, beta_key_id) = tenant_key(&a, "beta").await;
    let b = GatewayServer::start(&toml("b")).await;

    // Discover: the prompt, its versions and their lifecycle, and what alpha may do with each service.
    let catalog = get(&a, "/v1/catalog", &alpha).await;
    assert_eq!(catalog["tenant"], "alpha");
    let review = entry(&catalog, "prompt:review");
    assert_eq!(review["access"], "approval");
    assert_eq!(review["permission"], "request");
    assert_eq!(review["default_version"], 3);
    assert_eq!(review["description"], "Review a text, v3.");
    let statuses: Vec<&str> = review["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["retired", "deprecated", "active"]);
    assert_eq!(entry(&catalog, "model:m")["permission"], "call");
    assert_eq!(entry(&catalog, "model:m")["description"], "The everyday model.");
    assert_eq!(entry(&catalog, "model:secret")["permission"], "none");
    let models = get(&a, "/v1/models", &alpha).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m"], "a private model is not listed to a tenant without a grant");

    // Refused before a request, then while it is pending.
    let (status, code, message) = error_code(run_prompt(&a, &alpha, None).await).await;
    assert_eq!((status, code.as_str()), (403, "subscription_required"), "{message}");
    assert!(message.contains("POST /v1/subscriptions"), "{message}");
    let asked = client()
        .post(a.url("/v1/subscriptions"))
        .bearer_auth(&alpha)
        .json(&json!({"service": "prompt:review", "reason": "weekly digest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 201);
    let asked: Value = asked.json().await.unwrap();
    let id = asked["id"].as_str().unwrap().to_owned();
    assert_eq!(asked["status"], "pending");
    let (status, code, message) = error_code(run_prompt(&a, &alpha, None).await).await;
    assert_eq!((status, code.as_str()), (403, "subscription_pending"));
    assert!(message.contains("pending") && message.contains(&id), "{message}");
    assert_eq!(
        entry(&get(&a, "/v1/catalog", &alpha).await, "prompt:review")["permission"],
        "pending"
    );
    let pending = admin(&a, reqwest::Method::GET, "/admin/subscriptions?status=pending", None)
        .await
        .1;
    assert_eq!(pending["data"][0]["id"], id.as_str());
    assert_eq!(pending["data"][0]["reason"], "weekly digest");

    // Approved on replica a: replica b lets alpha in within a second.
    let (status, decided) = admin(
        &a,
        reqwest::Method::POST,
        &format!("/admin/subscriptions/{id}/approve"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    let took = answers_within(&b, &alpha, Duration::from_secs(1)).await;
    assert!(took.is_some(), "replica b did not honour the approval within a second");
    assert_eq!(run_prompt(&a, &alpha, None).await.status(), 200);
    assert_eq!(
        entry(&get(&b, "/v1/catalog", &alpha).await, "prompt:review")["permission"],
        "call"
    );
    let (status, _) = admin(
        &a,
        reqwest::Method::POST,
        &format!("/admin/subscriptions/{id}/reject"),
        None,
    )
    .await;
    assert_eq!(status, 409, "a decided request stays decided");

    // Another tenant is still refused.
    let (status, code, _) = error_code(run_prompt(&b, &beta, None).await).await;
    assert_eq!((status, code.as_str()), (403, "subscription_required"));

    // The default version answers plainly; the deprecated one with its headers; the retired one 410.
    let current = run_prompt(&a, &alpha, None).await;
    assert_eq!(current.status(), 200);
    assert!(current.headers().get("deprecation").is_none());
    let old = run_prompt(&a, &alpha, Some(2)).await;
    assert_eq!(old.status(), 200);
    let header = |name: &str| old.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("deprecation").as_deref(), Some("@1780272000"));
    assert_eq!(header("sunset").as_deref(), Some("Sun, 31 Jan 2027 00:00:00 GMT"));
    assert_eq!(
        header("link").as_deref(),
        Some("</v1/prompts/review?version=3>; rel=\"successor-version\"")
    );
    let (status, code, message) = error_code(run_prompt(&a, &alpha, Some(1)).await).await;
    assert_eq!((status, code.as_str()), (410, "prompt_version_retired"));
    assert!(message.contains("Use `review` version 3 instead"), "{message}");
    let described = get(&a, "/v1/prompts/review?version=3", &alpha).await;
    assert_eq!(
        (described["version"].as_u64(), described["status"].as_str()),
        (Some(3), Some("active"))
    );

    // A grant opens a private model to one tenant only.
    let chat = |key: String, model: &'static str| {
        client()
            .post(a.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(chat(beta.clone(), "secret").await.unwrap().status(), 403);
    let (status, body) = admin(
        &a,
        reqwest::Method::POST,
        "/admin/tenants/beta/grants",
        Some(json!({"service": "model:secret"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(chat(beta.clone(), "secret").await.unwrap().status(), 200);
    let models = get(&a, "/v1/models", &beta).await;
    assert_eq!(models["data"].as_array().unwrap().len(), 2, "{models}");
    let (status, code, _) = error_code(chat(alpha.clone(), "secret").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "model_not_allowed"));

    // The CLI shows the same catalog, and approves a request the running gateways then honour.
    let config_file = dir.join("cli.toml");
    std::fs::write(&config_file, toml("cli")).unwrap();
    let asked: Value = client()
        .post(b.url("/v1/subscriptions"))
        .bearer_auth(&beta)
        .json(&json!({"service": "review", "reason": "audits"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let beta_request = asked["id"].as_str().unwrap().to_owned();
    let shown = cli(&config_file, &["catalog", "--tenant", "beta"]);
    let line = |service: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(service))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("prompt:review").contains(&format!("pending ({beta_request})")),
        "{shown}"
    );
    assert!(
        line("prompt:review").contains("v1 retired, v2 deprecated, v3 active"),
        "{shown}"
    );
    assert!(line("model:secret").contains("call"), "{shown}");
    let approved = cli(&config_file, &["subscriptions", "approve", &beta_request]);
    assert!(approved.starts_with("approved prompt:review for beta"), "{approved}");
    assert!(answers_within(&a, &beta, Duration::from_secs(1)).await.is_some());

    // Revoking a key is an admin action too.
    let (status, _) = admin(&a, reqwest::Method::DELETE, &format!("/admin/keys/{beta_key_id}"), None).await;
    assert_eq!(status, 200);

    // The audit log holds each step, with who did it.
    let admin_id = sluice_pipeline::admin_key_id(ADMIN);
    let log = admin(&a, reqwest::Method::GET, "/admin/audit?limit=100", None).await.1;
    let steps: Vec<(String, String, String)> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let step = |actor: &str, action: &str, target: &str| (actor.to_owned(), action.to_owned(), target.to_owned());
    let expected = [
        step(&admin_id, "tenant.create", "alpha"),
        step(&admin_id, "key.create", ""),
        step(&admin_id, "tenant.create", "beta"),
        step(&admin_id, "key.create", &beta_key_id),
        step(&admin_id, "subscription.approve", &id),
        step(&admin_id, "grant.create", "beta/model:secret"),
        step("cli:ops", "subscription.approve", &beta_request),
        step(&admin_id, "key.revoke", &beta_key_id),
    ];
    assert_eq!(steps.len(), expected.len(), "{steps:?}");
    for (got, want) in steps.iter().zip(&expected) {
        assert_eq!((&got.0, &got.1), (&want.0, &want.1), "{steps:?}");
        if !want.2.is_empty() {
            assert_eq!(got.2, want.2, "{steps:?}");
        }
    }
    assert!(admin_id.starts_with("admin#") && !admin_id.contains(&ADMIN[3..]));
    let printed = cli(&config_file, &["audit", "--limit", "3"]);
    assert!(
        printed.contains("cli:ops") && printed.contains("subscription.approve"),
        "{printed}"
    );
    assert!(printed.contains("key.revoke"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_subscriptions_lifecycle_and_audit_on_sqlite() {
    let dir = scratch_dir("catalog-sqlite-db");
    the_catalog_flow(format!("sqlite://{}", dir.join("sluice.db").display()), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_subscriptions_lifecycle_and_audit_on_postgres() {
    let Some(database) = FreshDatabase::create("sluice_catalog") else {
        return;
    };
    the_catalog_flow(database.url("127.0.0.1:5432"), "postgres").await;
}
