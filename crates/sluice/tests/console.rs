//! The console at `/ui`, in a real browser: headless Chromium driven over WebDriver. Signing in with the
//! admin key, reading spend that equals `/admin/spend`, creating a tenant, changing limits, creating a
//! key (shown once) and revoking it, then seeing the next call refused; the upstream keys, errors and
//! prompts pages; the phone layout; labels, landmarks and the console's security headers.
//!
//! Skips, saying why, when Chromium or chromedriver is not installed or `SLUICE_SKIP_BROWSER_TESTS=1`.
//! Screenshots of each page go to `target/tmp/console/`, and to `docs/console-*.png` with
//! `SLUICE_UPDATE_SCREENSHOTS=1` (so that an ordinary test run leaves the tree as it was).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod browser;
mod common;

use std::path::PathBuf;
use std::time::Duration;

use browser::Browser;
use common::*;
use serde_json::{Value, json};
use sluice_simulate::SimConfig;

const ADMIN: &str = "sk-console-admin-0123456789abcdefghijklmnop";
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// Money as the console writes it: exact dollars, at least two decimals, thousands grouped.
fn usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let whole = (abs / 1_000_000).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let mut fraction = format!("{:06}", abs % 1_000_000).trim_end_matches('0').to_owned();
    while fraction.len() < 2 {
        fraction.push('0');
    }
    format!("{sign}${grouped}.{fraction}")
}

fn num(n: i64) -> String {
    usd(n * 1_000_000)
        .trim_start_matches('$')
        .trim_end_matches(".00")
        .to_owned()
}

#[test]
fn money_and_numbers_are_written_as_the_console_writes_them() {
    assert_eq!(usd(12_500_000), "$12.50");
    assert_eq!(usd(1_234), "$0.001234");
    assert_eq!(usd(0), "$0.00");
    assert_eq!(usd(123_456_789_012), "$123,456.789012");
    assert_eq!(usd(-1), "-$0.000001");
    assert_eq!(num(1_234_567), "1,234,567");
    assert_eq!(num(12), "12");
}

fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("console-{}-{name}", std::process::id()))
}

/// Where screenshots go: docs/ when asked to update them, else beside the other test files.
fn shot(name: &str) -> PathBuf {
    let dir = if std::env::var("SLUICE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console")
    };
    dir.join(format!("console-{name}.png"))
}

fn write_prompts(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let summarize = |version: u32, instruction: &str| {
        format!(
            r#"name = "summarize"
version = {version}
description = "Summarize a text faithfully."
model = "gpt-4o-mini"
[parameters]
temperature = 0.2
max_tokens = 200
[variables.text]
type = "string"
description = "The text to summarize."
[variables.sentences]
type = "integer"
default = 3
[[messages]]
role = "system"
content = "{instruction}"
[[messages]]
role = "user"
content = "Summarize in at most {{{{ sentences }}}} sentences: {{{{ text }}}}"
"#
        )
    };
    std::fs::write(dir.join("summarize-v1.toml"), summarize(1, "You summarize texts.")).unwrap();
    std::fs::write(
        dir.join("summarize-v2.toml"),
        summarize(2, "You summarize texts faithfully, adding nothing."),
    )
    .unwrap();
    std::fs::write(
        dir.join("classify.toml"),
        r#"name = "classify"
version = 1
description = "Label a review positive, negative or neutral."
model = "gpt-4o"
[variables.review]
type = "string"
[variables.labels]
type = "string"
default = "positive"
enum = ["positive", "negative", "neutral"]
[[messages]]
role = "user"
content = "Classify: {{ review }}"
"#,
    )
    .unwrap();
}

fn config(limited: &str, open: &str, prompts: &std::path::Path) -> String {
    format!(
        r#"
[auth]
admin_key = "{ADMIN}"
[prompts]
dir = "{}"
reload_ms = 0
[[providers]]
name = "sim"
kind = "openai_compatible"
base_url = "{limited}"
keys = ["sk-sim-alpha-secret", "sk-sim-bravo-secret"]
[[providers]]
name = "sim2"
kind = "openai_compatible"
base_url = "{open}"
keys = ["sk-sim-charlie-secret"]
[[models]]
name = "gpt-4o-mini"
max_queue_ms = 0
[[models.deployments]]
provider = "sim"
model = "gpt-4o-mini"
price = {{ input = 150.0, output = 600.0 }}
[[models]]
name = "gpt-4o"
[[models.deployments]]
provider = "sim2"
model = "gpt-4o"
rpm = 600
tpm = 200000
price = {{ input = 2500.0, output = 10000.0 }}
"#,
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

async fn chat(gateway: &GatewayServer, key: &str, model: &str) -> u16 {
    client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "max_tokens": 12,
                      "messages": [{"role": "user", "content": "Tell me about rivers and locks."}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn new_tenant(gateway: &GatewayServer, tenant: Value, key_name: &str) -> String {
    let name = tenant["name"].as_str().unwrap().to_owned();
    let (status, body) = admin(gateway, reqwest::Method::POST, "/admin/tenants", Some(tenant)).await;
    assert_eq!(status, 201, "{body}");
    let (status, key) = admin(
        gateway,
        reqwest::Method::POST,
        &format!("/admin/tenants/{name}/keys"),
        Some(json!({"name": key_name})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().unwrap().to_owned()
}

/// Rows of a console table, as {column key: text shown}.
async fn rows(browser: &Browser, table: &str) -> Vec<Value> {
    browser
        .run(
            "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)]
               .filter((tr) => !tr.querySelector('.empty'))
               .map((tr) => Object.fromEntries([...tr.children].map((c) => [c.dataset.col, c.innerText.trim()])));",
            json!([table]),
        )
        .await
        .as_array()
        .cloned()
        .unwrap()
}

/// Problems a person using a keyboard or a screen reader would meet on the page now.
async fn accessibility_problems(browser: &Browser) -> Vec<String> {
    let found = browser
        .run(
            r#"const problems = [];
               for (const e of document.querySelectorAll('input, select, textarea')) {
                 if (e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label')) problems.push(`unlabelled ${e.outerHTML}`);
               }
               for (const b of document.querySelectorAll('button, a[href]')) {
                 if (!b.innerText.trim() && !b.getAttribute('aria-label')) problems.push(`unnamed ${b.outerHTML}`);
               }
               for (const s of document.querySelectorAll('svg[role=img]')) {
                 if (!s.getAttribute('aria-label')) problems.push('a chart without a text alternative');
               }
               if (document.querySelectorAll('main h1').length !== 1) problems.push('not exactly one h1 in main');
               for (const landmark of ['header', 'nav', 'main']) {
                 if (!document.querySelector(landmark)) problems.push(`no ${landmark} landmark`);
               }
               const ids = [...document.querySelectorAll('[id]')].map((e) => e.id);
               const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
               if (dupes.length) problems.push(`duplicate ids ${dupes}`);
               return problems;"#,
            json!([]),
        )
        .await;
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Clears the passing status message, so that screenshots show the page.
async fn quiet(browser: &Browser) {
    browser
        .run(
            "document.querySelector('#status').textContent = ''; return true;",
            json!([]),
        )
        .await;
}

/// Opens a page of the console by its address after `#` and waits for `ready` (a CSS selector).
async fn open(browser: &Browser, gateway: &GatewayServer, route: &str, ready: &str) {
    browser.goto(&gateway.url(&format!("/ui/#/{route}"))).await;
    browser
        .until(
            &format!("#/{route} to be drawn"),
            "return document.querySelector('#main').dataset.route === arguments[0];",
            json!([format!("#/{route}")]),
        )
        .await;
    browser.find(ready).await;
    let problems = accessibility_problems(browser).await;
    assert!(problems.is_empty(), "#/{route}: {problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser() {
    let browser = match Browser::start(scratch("profile")).await {
        Ok(browser) => browser,
        Err(why) => {
            eprintln!("SKIPPED the_console_in_a_browser: {why}");
            return;
        }
    };
    // The limited vendor allows 3 requests a minute per key; the other has no limit.
    let limited = SimServer::start(SimConfig {
        rpm: Some(3),
        reply_tokens: 12,
        ..SimConfig::default()
    })
    .await;
    let open_sim = SimServer::start(SimConfig {
        reply_tokens: 12,
        ..SimConfig::default()
    })
    .await;
    let prompts = scratch("prompts");
    write_prompts(&prompts);
    // A prompt tenants must ask for, approved from the Access page below.
    std::fs::write(
        prompts.join("review.toml"),
        "name = \"review\"\nversion = 1\ndescription = \"Review a text.\"\nmodel = \"gpt-4o\"\naccess = \"approval\"\n\
         [[messages]]\nrole = \"user\"\ncontent = \"Review this.\"\n",
    )
    .unwrap();
    let gateway = GatewayServer::start(&config(&limited.base_url(), &open_sim.base_url(), &prompts)).await;

    // === Traffic: two tenants, a 429 storm on the limited vendor, an unknown model ===
    let acme = new_tenant(
        &gateway,
        json!({"name": "acme", "rpm": 100, "budget_usd": 5.0, "models": ["gpt-4o-mini", "gpt-4o"]}),
        "backend",
    )
    .await;
    let globex = new_tenant(&gateway, json!({"name": "globex"}), "batch").await;
    for model in ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "gpt-4o"] {
        assert_eq!(chat(&gateway, &acme, model).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(chat(&gateway, &globex, "gpt-4o").await, 200);
    }
    // Eight at once to a vendor with room for three more: the rest are its 429s, failed over, then refused.
    let storm: Vec<u16> = futures_util::future::join_all((0..8).map(|_| chat(&gateway, &globex, "gpt-4o-mini"))).await;
    assert!(storm.contains(&429), "{storm:?}");
    assert_eq!(chat(&gateway, &globex, "no-such-model").await, 404);
    let sent = 5 + 2 + 8 + 1;
    for _ in 0..200 {
        let (_, spend) = admin(&gateway, reqwest::Method::GET, "/admin/spend?group_by=tenant", None).await;
        let recorded: i64 = spend["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["requests"].as_i64().unwrap())
            .sum();
        if recorded == sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // === The console's files: embedded, with strict headers ===
    let page = client().get(gateway.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    let handlers = html.split(" on").skip(1).any(|rest| {
        rest.split_once('=')
            .is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_lowercase()))
    });
    assert!(!html.contains("<script>") && !handlers, "no inline script: {html}");
    let script = client().get(gateway.url("/ui/app.js")).send().await.unwrap();
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = script.headers()["etag"].clone();
    let again = client()
        .get(gateway.url("/ui/app.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(
        client().get(gateway.url("/ui/nope.js")).send().await.unwrap().status(),
        404
    );

    // === Signing in, by keyboard ===
    browser.resize(1280, 900).await;
    browser.goto(&gateway.url("/ui/")).await;
    let key_input = browser.find("#admin-key").await;
    assert!(accessibility_problems(&browser).await.is_empty());
    quiet(&browser).await;
    browser.screenshot(&shot("sign-in"), 1280, 700).await;
    key_input.type_text("sk-not-the-admin-key-at-all-0123456789").await;
    browser.press(ENTER).await;
    browser
        .until(
            "the refusal",
            "return document.querySelector('#sign-in-error')?.innerText;",
            json!([]),
        )
        .await;
    assert_eq!(
        browser.text("#sign-in-error").await.unwrap(),
        "That is not the admin key."
    );
    assert_eq!(browser.run("return sessionStorage.length;", json!([])).await, json!(0));
    let key_input = browser.find("#admin-key").await;
    key_input.type_text(ADMIN).await;
    // Tab reaches the button, Enter presses it.
    browser.press(TAB).await;
    assert_eq!(
        browser.run("return document.activeElement.innerText;", json!([])).await,
        json!("Sign in")
    );
    browser.press(ENTER).await;
    browser.find("#spend-totals").await;
    assert_eq!(
        browser
            .run("return sessionStorage.getItem('sluice.adminKey');", json!([]))
            .await,
        json!(ADMIN),
        "the key is kept for the tab"
    );
    let never_shown = "return document.documentElement.outerHTML.includes(arguments[0]) \
                       || [...document.querySelectorAll('input')].some((i) => i.value.includes(arguments[0]));";
    assert_eq!(browser.run(never_shown, json!([ADMIN])).await, json!(false));

    // === Spend equals /admin/spend ===
    let today = chrono::Utc::now().date_naive();
    let month = format!("from={}&to={today}", today.format("%Y-%m-01"));
    open(&browser, &gateway, "spend", "#spend-by-tenant").await;
    let (_, by_tenant) = admin(
        &gateway,
        reqwest::Method::GET,
        &format!("/admin/spend?group_by=tenant&{month}"),
        None,
    )
    .await;
    let shown = rows(&browser, "spend-by-tenant").await;
    let expected: Vec<Value> = by_tenant["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            json!({"group": r["group"], "requests": num(r["requests"].as_i64().unwrap()),
                   "cost": usd(r["cost_micros"].as_i64().unwrap())})
        })
        .collect();
    let shown_short: Vec<Value> = shown
        .iter()
        .map(|r| json!({"group": r["group"], "requests": r["requests"], "cost": r["cost"]}))
        .collect();
    assert_eq!(shown_short, expected);
    assert_eq!(expected.len(), 2, "{expected:?}");
    let total: i64 = by_tenant["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(total, sent, "every request is in the ledger");
    quiet(&browser).await;
    browser.screenshot(&shot("spend"), 1280, 1700).await;
    browser.resize(1280, 900).await;

    // One tenant, picked in the form: every model's usage categories and cost, and the totals.
    browser.find("#spend-tenant option[value='acme']").await.click().await;
    browser.find("form.filters button[type=submit]").await.click().await;
    browser
        .until(
            "acme's spend",
            // Drawn for this address: between the form's new hash and the redraw, the old page (then
            // "Loading…") is still on screen.
            "return location.hash.includes('tenant=acme') \
               && document.querySelector('#main').dataset.route === location.hash;",
            json!([]),
        )
        .await;
    let (_, by_model) = admin(
        &gateway,
        reqwest::Method::GET,
        &format!("/admin/spend?group_by=model&tenant=acme&{month}"),
        None,
    )
    .await;
    let shown = rows(&browser, "spend-by-model").await;
    let api_rows = by_model["data"].as_array().unwrap();
    assert_eq!(shown.len(), api_rows.len());
    assert_eq!(api_rows.len(), 2, "acme used two models: {api_rows:?}");
    for (page_row, api_row) in shown.iter().zip(api_rows) {
        assert_eq!(page_row["group"], api_row["group"]);
        for field in [
            "requests",
            "input_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
        ] {
            assert_eq!(
                page_row[field].as_str().unwrap(),
                num(api_row[field].as_i64().unwrap()),
                "{field} of {}",
                api_row["group"]
            );
        }
        assert_eq!(
            page_row["cost"].as_str().unwrap(),
            usd(api_row["cost_micros"].as_i64().unwrap())
        );
    }
    let acme_cost: i64 = api_rows.iter().map(|r| r["cost_micros"].as_i64().unwrap()).sum();
    assert!(acme_cost > 0);
    assert_eq!(browser.text("#total-cost").await.unwrap(), usd(acme_cost));
    assert_eq!(browser.text("#total-requests").await.unwrap(), "5");

    // === Tenants: create one from the page ===
    open(&browser, &gateway, "tenants", "#tenants").await;
    let form = "form[aria-labelledby='s-new-tenant']";
    browser
        .find(&format!("{form} input[maxlength='128']"))
        .await
        .type_text("initech")
        .await;
    let inputs = browser
        .run(
            "return [...document.querySelectorAll(`${arguments[0]} input`)].map((i) => i.id);",
            json!([form]),
        )
        .await;
    // name, rpm, tpm, budget, models, prompts
    let ids: Vec<&str> = inputs.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    browser.find(&format!("#{}", ids[1])).await.type_text("60").await;
    browser.find(&format!("#{}", ids[3])).await.type_text("25").await;
    browser.find(&format!("#{}", ids[4])).await.type_text("gpt-4o").await;
    browser.find(&format!("{form} button[type=submit]")).await.click().await;
    browser.find("#tenant-keys").await;
    let (status, initech) = admin(&gateway, reqwest::Method::GET, "/admin/tenants/initech", None).await;
    assert_eq!(status, 200, "{initech}");
    assert_eq!(initech["tenant"]["rpm"], 60);
    assert_eq!(initech["tenant"]["budget_micros"], 25_000_000);
    assert_eq!(initech["tenant"]["models"], json!(["gpt-4o"]));
    open(&browser, &gateway, "tenants", "#tenants").await;
    let listed = rows(&browser, "tenants").await;
    assert_eq!(
        listed.iter().map(|r| r["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["acme", "globex", "initech"]
    );
    let (_, acme_info) = admin(&gateway, reqwest::Method::GET, "/admin/tenants/acme", None).await;
    let acme_spent = acme_info["budget"]["spent_micros"].as_i64().unwrap();
    assert!(
        listed[0]["budget"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{} of $5.00", usd(acme_spent))),
        "{:?}",
        listed[0]
    );
    quiet(&browser).await;
    browser.screenshot(&shot("tenants"), 1280, 1400).await;
    browser.resize(1280, 900).await;

    // === One tenant: its budget, a limit changed, a key created (shown once) and revoked ===
    open(&browser, &gateway, "tenants/acme", "#tenant-keys").await;
    let budget = browser.text("#tenant-budget").await.unwrap();
    assert!(
        budget.trim().starts_with(&format!("{} of $5.00", usd(acme_spent))),
        "{budget}"
    );
    // Request logs are off by default, and the page says so.
    let logs = browser.text("#tenant-request-logs").await.unwrap();
    assert!(logs.contains("Request logs are off for this tenant."), "{logs}");
    let limits = "form[aria-labelledby='s-limits']";
    let rpm_id = browser
        .run(
            "return document.querySelector(`${arguments[0]} input`).id;",
            json!([limits]),
        )
        .await;
    let rpm = browser.find(&format!("#{}", rpm_id.as_str().unwrap())).await;
    assert_eq!(rpm.property("value").await, json!("100"));
    rpm.type_text("120").await;
    let drawn = browser
        .run("return document.querySelector('#main').dataset.rendered;", json!([]))
        .await;
    browser
        .find(&format!("{limits} button[type=submit]"))
        .await
        .click()
        .await;
    browser
        .until(
            "the page drawn again with the saved limit",
            "return document.querySelector('#status').innerText.includes('saved') \
               && document.querySelector('#main').dataset.rendered !== arguments[0];",
            json!([drawn]),
        )
        .await;
    let (_, acme_info) = admin(&gateway, reqwest::Method::GET, "/admin/tenants/acme", None).await;
    assert_eq!(acme_info["tenant"]["rpm"], 120);
    assert_eq!(
        acme_info["tenant"]["budget_micros"], 5_000_000,
        "what was not changed stays"
    );

    browser.find("#tenant-keys").await;
    browser
        .find("form[aria-label='New key'] input[type=text]")
        .await
        .type_text("console-made")
        .await;
    browser
        .find("form[aria-label='New key'] button[type=submit]")
        .await
        .click()
        .await;
    let shown_key = browser.find("#new-key-value").await.property("value").await;
    let new_key = shown_key.as_str().unwrap().to_owned();
    assert!(new_key.starts_with("sk-sluice-"), "{new_key}");
    assert_eq!(chat(&gateway, &new_key, "gpt-4o").await, 200, "the key works");
    browser.find("#dialog .actions button").await.click().await;
    browser
        .until(
            "the new key in the list",
            "return [...document.querySelectorAll('#tenant-keys tbody tr')].some((tr) => tr.innerText.includes('console-made'));",
            json!([]),
        )
        .await;
    assert_eq!(
        browser.run(never_shown, json!([new_key])).await,
        json!(false),
        "the key left the page with its dialog"
    );
    browser
        .find("button[aria-label='Revoke key console-made']")
        .await
        .click()
        .await;
    browser.find("#dialog button.danger").await.click().await;
    browser
        .until(
            "the revoked key",
            "return [...document.querySelectorAll('#tenant-keys tbody tr')]
               .find((tr) => tr.innerText.includes('console-made'))
               ?.querySelector('[data-col=state]').innerText === 'revoked';",
            json!([]),
        )
        .await;
    assert_eq!(
        chat(&gateway, &new_key, "gpt-4o").await,
        401,
        "a revoked key is refused"
    );
    assert_eq!(chat(&gateway, &acme, "gpt-4o").await, 200, "the other key still works");
    assert_eq!(browser.run(never_shown, json!([ADMIN])).await, json!(false));
    quiet(&browser).await;
    browser.screenshot(&shot("tenant"), 1280, 2200).await;
    browser.resize(1280, 900).await;

    // === Upstream keys: live state, key ids only ===
    open(&browser, &gateway, "upstream", "#upstream-keys").await;
    let keys = rows(&browser, "upstream-keys").await;
    let ids: Vec<&str> = keys.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sim#0", "sim#1", "sim2#0"]);
    let open_key = &keys[2];
    assert!(
        open_key["requests"].as_str().unwrap().ends_with("of 600"),
        "{open_key:?}"
    );
    let (_, limits) = admin(&gateway, reqwest::Method::GET, "/admin/limits", None).await;
    for (row, api_row) in keys.iter().zip(limits["data"].as_array().unwrap()) {
        // A key cooling down for a while yet says so, and why.
        if api_row["budget"]["cooldown_ms"].as_u64().unwrap_or(0) > 6_000 {
            assert!(
                row["state"].as_str().unwrap().starts_with("Cooling down after a 429"),
                "{row:?}"
            );
        }
    }
    let page_text = browser.text("body").await.unwrap();
    assert!(
        !page_text.contains("sk-sim-") && !page_text.contains("secret"),
        "no upstream key in the page"
    );
    quiet(&browser).await;
    browser.screenshot(&shot("upstream"), 1280, 1200).await;
    browser.resize(1280, 900).await;

    // === Errors and 429s by model and provider ===
    open(&browser, &gateway, "failures", "#failure-groups").await;
    let (_, failures) = admin(&gateway, reqwest::Method::GET, "/admin/failures", None).await;
    let kept = failures["data"].as_array().unwrap();
    assert!(
        kept.iter().any(|f| f["stage"] == "upstream"
            && f["kind"] == "rate_limited"
            && (f["upstream_key"] == "sim#0" || f["upstream_key"] == "sim#1")),
        "the vendor's 429s are kept: {kept:?}"
    );
    assert!(
        kept.iter()
            .any(|f| f["stage"] == "answer" && f["kind"] == "unknown_model" && f["status"] == 404)
    );
    let groups = rows(&browser, "failure-groups").await;
    let mini = groups
        .iter()
        .find(|g| g["model"] == "gpt-4o-mini" && g["provider"] == "sim")
        .unwrap_or_else(|| panic!("{groups:?}"));
    let count = |stage: &str, status: Option<u64>| {
        kept.iter()
            .filter(|f| f["model"] == "gpt-4o-mini" && f["provider"] == "sim" && f["stage"] == stage)
            .filter(|f| status.is_none_or(|s| f["status"] == s))
            .count() as i64
    };
    assert_eq!(mini["upstream"].as_str().unwrap(), num(count("upstream", None)));
    assert_eq!(mini["answers429"].as_str().unwrap(), num(count("answer", Some(429))));
    let counters = rows(&browser, "failure-counters").await;
    let (_, failures_now) = admin(&gateway, reqwest::Method::GET, "/admin/failures", None).await;
    let vendor_429s = failures_now["deployments"][0]["upstream_rate_limited"]
        .as_i64()
        .unwrap();
    assert!(vendor_429s > 0);
    assert_eq!(counters[0]["upstream_rate_limited"].as_str().unwrap(), num(vendor_429s));
    assert!(browser.text("#failure-latest").await.unwrap().contains("unknown_model"));
    quiet(&browser).await;
    browser.screenshot(&shot("failures"), 1280, 1800).await;
    browser.resize(1280, 900).await;

    // === Prompts with their versions ===
    open(&browser, &gateway, "prompts", "#prompt-summarize").await;
    let summarize = browser.text("#prompt-summarize").await.unwrap();
    assert!(summarize.contains("2 versions: 1, 2"), "{summarize}");
    assert!(
        summarize.contains("adding nothing"),
        "the latest version is shown first"
    );
    browser
        .find("#prompt-summarize-version option[value='1']")
        .await
        .click()
        .await;
    browser
        .until(
            "version 1",
            "return !document.querySelector('#prompt-summarize').innerText.includes('adding nothing');",
            json!([]),
        )
        .await;
    assert!(
        browser
            .text("#prompt-classify")
            .await
            .unwrap()
            .contains("positive, negative, neutral")
    );
    quiet(&browser).await;
    browser.screenshot(&shot("prompts"), 1280, 1800).await;
    browser.resize(1280, 900).await;

    // === Access: a tenant's request approved from the page ===
    let asked = client()
        .post(gateway.url("/v1/subscriptions"))
        .bearer_auth(&globex)
        .json(&json!({"service": "prompt:review", "reason": "an evaluation"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 201);
    let review = || {
        client()
            .post(gateway.url("/v1/prompts/review"))
            .bearer_auth(&globex)
            .json(&json!({}))
            .send()
    };
    assert_eq!(review().await.unwrap().status(), 403, "not before approval");
    open(&browser, &gateway, "access", "#pending-requests").await;
    assert!(
        browser
            .text("#pending-requests")
            .await
            .unwrap()
            .contains("an evaluation")
    );
    browser
        .find("button[aria-label='Approve globex\u{2019}s request for prompt:review']")
        .await
        .click()
        .await;
    browser
        .until(
            "the request decided",
            "return document.querySelector('#pending-requests')?.innerText.includes('No request is waiting');",
            json!([]),
        )
        .await;
    assert_eq!(review().await.unwrap().status(), 200, "approved from the console");
    assert!(browser.text("#grants").await.unwrap().contains("prompt:review"));
    assert!(
        browser
            .text("#audit-log")
            .await
            .unwrap()
            .contains("subscription.approve")
    );
    quiet(&browser).await;
    browser.screenshot(&shot("access"), 1280, 1400).await;

    // === On a phone: nothing wider than the screen but the tables, which scroll ===
    browser.resize(390, 844).await;
    // A whole load, with the processor slowed four times as a mid-range phone's would be.
    browser
        .devtools("Emulation.setCPUThrottlingRate", json!({"rate": 4}))
        .await;
    browser.goto(&gateway.url("/ui/?phone#/spend")).await;
    browser.find("#spend-by-tenant").await;
    let drawn = browser
        .until(
            "the spend page's mark",
            "return performance.getEntriesByName('sluice:drawn:spend')[0]?.startTime;",
            json!([]),
        )
        .await;
    eprintln!(
        "console: the spend page was drawn {} ms after navigation, on a 4x slower processor",
        drawn.as_f64().unwrap().round()
    );
    browser
        .devtools("Emulation.setCPUThrottlingRate", json!({"rate": 1}))
        .await;
    let problems = accessibility_problems(&browser).await;
    assert!(problems.is_empty(), "{problems:?}");
    let overflow = browser
        .run(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            json!([]),
        )
        .await;
    assert_eq!(overflow, json!(0), "the page scrolls sideways on a phone");
    quiet(&browser).await;
    browser.screenshot(&shot("phone"), 390, 2000).await;

    // === Signing out forgets the key; the browser logged no script error or policy violation ===
    browser.resize(1280, 900).await;
    browser.find("#sign-out").await.click().await;
    browser.find("#admin-key").await;
    assert_eq!(browser.run("return sessionStorage.length;", json!([])).await, json!(0));
    let log = browser.console_log().await;
    let problems: Vec<&Value> = log
        .iter()
        .filter(|entry| {
            let message = entry["message"].as_str().unwrap_or_default();
            entry["source"] == "javascript"
                || (entry["source"] == "console-api" && entry["level"] == "SEVERE")
                || message.contains("Content Security Policy")
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let _ = std::fs::remove_dir_all(&prompts);
}

// === The admin endpoints the console reads, without a browser ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_described_and_its_limits_changed() {
    let upstream = SimServer::start(SimConfig {
        reply_tokens: 4,
        ..SimConfig::default()
    })
    .await;
    let prompts = scratch("prompts-limits");
    write_prompts(&prompts);
    let gateway = GatewayServer::start(&config(&upstream.base_url(), &upstream.base_url(), &prompts)).await;
    let key = new_tenant(
        &gateway,
        json!({"name": "team", "rpm": 1, "budget_usd": 1.0, "models": ["gpt-4o"]}),
        "ci",
    )
    .await;
    assert_eq!(chat(&gateway, &key, "gpt-4o").await, 200);
    assert_eq!(chat(&gateway, &key, "gpt-4o").await, 429, "one request a minute");

    // Lifting the rate limit and raising the budget takes effect at once; the models stay.
    let (status, changed) = admin(
        &gateway,
        reqwest::Method::PATCH,
        "/admin/tenants/team",
        Some(json!({"rpm": null, "budget_usd": 2.5})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["rpm"], Value::Null);
    assert_eq!(changed["budget_micros"], 2_500_000);
    assert_eq!(changed["models"], json!(["gpt-4o"]));
    assert_eq!(chat(&gateway, &key, "gpt-4o").await, 200, "no rate limit any more");
    assert_eq!(chat(&gateway, &key, "gpt-4o-mini").await, 403, "still only gpt-4o");

    // Bad changes name their field; nothing is changed by them.
    for (body, param) in [
        (json!({"models": ["gpt-4o", "nope"]}), "models"),
        (json!({"budget_usd": -1}), "budget_usd"),
        (json!({"rpm": "many"}), "rpm"),
        (json!({"name": "renamed"}), "name"),
        (json!({"budget_period": "week"}), "budget_period"),
    ] {
        let (status, error) = admin(
            &gateway,
            reqwest::Method::PATCH,
            "/admin/tenants/team",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}: {error}");
        let says = error["error"]["message"].as_str().unwrap();
        assert!(
            error["error"]["param"].as_str() == Some(param) || says.contains(param),
            "{body}: {error}"
        );
    }
    let (status, error) = admin(
        &gateway,
        reqwest::Method::PATCH,
        "/admin/tenants/ghost",
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("tenant_not_found"))
    );

    // The description: budget used as the gateway counts it, the rate now, the keys with their state.
    let (_, other) = admin(
        &gateway,
        reqwest::Method::POST,
        "/admin/tenants/team/keys",
        Some(json!({"name": "old"})),
    )
    .await;
    let (status, _) = admin(
        &gateway,
        reqwest::Method::DELETE,
        &format!("/admin/keys/{}", other["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, described) = admin(&gateway, reqwest::Method::GET, "/admin/tenants/team", None).await;
    assert_eq!(status, 200, "{described}");
    assert_eq!(described["tenant"]["name"], "team");
    assert_eq!(described["budget"]["budget_micros"], 2_500_000);
    assert_eq!(described["budget"]["period"], "month");
    let spent = described["budget"]["spent_micros"].as_i64().unwrap();
    assert!(spent > 0, "{described}");
    assert_eq!(described["rate"], Value::Null, "no rate limit, no rate view");
    let states: Vec<(&str, &str)> = described["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("ci", "active"), ("old", "revoked")]);
    assert!(!described.to_string().contains(&key), "never the key itself");
    // What the budget counts is what the ledger says the tenant spent.
    gateway.gateway.flush(Duration::from_secs(5)).await;
    let (_, spend) = admin(
        &gateway,
        reqwest::Method::GET,
        "/admin/spend?tenant=team&group_by=tenant",
        None,
    )
    .await;
    assert_eq!(spend["data"][0]["cost_micros"].as_i64().unwrap(), spent);
    assert_eq!(
        admin(&gateway, reqwest::Method::GET, "/admin/tenants/ghost", None)
            .await
            .0,
        404
    );
    // Counted per day from now on, the budget starts from what the tenant spent today.
    let (status, _) = admin(
        &gateway,
        reqwest::Method::PATCH,
        "/admin/tenants/team",
        Some(json!({"budget_period": "day"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, daily) = admin(&gateway, reqwest::Method::GET, "/admin/tenants/team", None).await;
    assert_eq!(daily["budget"]["period"], "day");
    assert_eq!(daily["budget"]["spent_micros"].as_i64().unwrap(), spent);

    // Only the admin key reads or changes any of it.
    for (method, path) in [
        (reqwest::Method::GET, "/admin/tenants/team"),
        (reqwest::Method::PATCH, "/admin/tenants/team"),
        (reqwest::Method::GET, "/admin/failures"),
        (reqwest::Method::GET, "/admin/prompts"),
    ] {
        let response = client()
            .request(method.clone(), gateway.url(path))
            .bearer_auth(&key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{method} {path}");
    }
    let _ = std::fs::remove_dir_all(&prompts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_failures_are_kept_by_model_and_provider_without_secrets() {
    // Every call to this vendor fails with a 500; the other serves.
    let failing = SimServer::start(SimConfig {
        error_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let serving = SimServer::start(SimConfig::default()).await;
    let prompts = scratch("prompts-failures");
    write_prompts(&prompts);
    let gateway = GatewayServer::start(&config(&failing.base_url(), &serving.base_url(), &prompts)).await;
    let key = new_tenant(&gateway, json!({"name": "team", "rpm": 2}), "ci").await;

    assert_eq!(chat(&gateway, &key, "gpt-4o").await, 200);
    let failed = chat(&gateway, &key, "gpt-4o-mini").await;
    assert_eq!(failed, 502, "every key failed");
    assert_eq!(chat(&gateway, &key, "gpt-4o").await, 429, "the tenant's own limit");
    assert_eq!(chat(&gateway, &key, "no-such-model").await, 404);

    let (status, report) = admin(&gateway, reqwest::Method::GET, "/admin/failures", None).await;
    assert_eq!(status, 200);
    let kept = report["data"].as_array().unwrap();
    let summary: Vec<(String, String, Value, Value, Value)> = kept
        .iter()
        .map(|f| {
            (
                f["stage"].as_str().unwrap().to_owned(),
                f["kind"].as_str().unwrap().to_owned(),
                f["status"].clone(),
                f["model"].clone(),
                f["upstream_key"].clone(),
            )
        })
        .collect();
    // Newest first: the unknown model (checked before the tenant's limit), the tenant's 429, then the
    // failing model's answer after its calls to both keys (each tried once), each a server error.
    assert_eq!(
        summary,
        [
            (
                "answer".into(),
                "unknown_model".into(),
                json!(404),
                json!("(unknown model)"),
                Value::Null
            ),
            (
                "answer".into(),
                "tenant_rate_limited".into(),
                json!(429),
                json!("gpt-4o"),
                Value::Null
            ),
            (
                "answer".into(),
                "server_error".into(),
                json!(502),
                json!("gpt-4o-mini"),
                json!("sim#1")
            ),
            (
                "upstream".into(),
                "server_error".into(),
                Value::Null,
                json!("gpt-4o-mini"),
                json!("sim#1")
            ),
            (
                "upstream".into(),
                "server_error".into(),
                Value::Null,
                json!("gpt-4o-mini"),
                json!("sim#0")
            ),
        ]
        .map(
            |(stage, kind, status, model, key): (String, String, Value, Value, Value)| (
                stage, kind, status, model, key
            )
        ),
        "{report:#}"
    );
    assert!(kept.iter().all(|f| f["tenant"] == "team" && f["at"].is_string()));
    assert_eq!(report["recorded"], 5);
    assert_eq!(report["capacity"], 256);
    let deployments = report["deployments"].as_array().unwrap();
    assert_eq!(deployments[0]["model"], "gpt-4o-mini");
    assert_eq!(deployments[0]["attempts"], 2);
    assert_eq!(deployments[0]["upstream_rate_limited"], 0);
    let text = report.to_string();
    assert!(!text.contains("secret") && !text.contains(&key), "no key in {text}");
    let _ = std::fs::remove_dir_all(&prompts);
}

#[tokio::test]
async fn the_prompt_catalog_lists_every_version() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let prompts = scratch("prompts-catalog");
    write_prompts(&prompts);
    let gateway = GatewayServer::start(&config(&upstream.base_url(), &upstream.base_url(), &prompts)).await;
    let (status, catalog) = admin(&gateway, reqwest::Method::GET, "/admin/prompts", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = catalog["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["classify", "summarize"]);
    let summarize = &catalog["data"][1];
    assert_eq!(summarize["latest"], 2);
    let versions = summarize["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["messages"][0]["role"], "system");
    assert_eq!(versions[0]["messages"][0]["content"], "You summarize texts.");
    assert_eq!(
        versions[1]["messages"][0]["content"],
        "You summarize texts faithfully, adding nothing."
    );
    assert_eq!(versions[1]["model"], "gpt-4o-mini");
    assert_eq!(versions[1]["parameters"]["max_tokens"], 200);
    assert_eq!(versions[1]["variables"]["required"], json!(["text"]));
    let _ = std::fs::remove_dir_all(&prompts);
}
