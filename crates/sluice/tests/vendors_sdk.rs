//! The official `openai` Python package through the gateway to each simulated vendor over real HTTP:
//! three `sluice-simulate` servers (OpenAI, Anthropic and Gemini faces) and a gateway with one model routed
//! to each. For every model, text, streams, a tool-call round trip and an image input must give the same
//! client-side results, with the finish reasons and usage the vendor sent; the simulated vendors validate
//! requests as the real ones do, so a translation bug fails here instead of passing silently.
//!
//! Needs `python3` with the `venv` module (the SDK is installed under `target/` on first run, shared with
//! `openai_sdk.rs`). Set `SLUICE_SKIP_SDK_TESTS=1` to skip it on a machine without Python; the skip is
//! printed, never silent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use sluice_simulate::WireFormat;
use sluice_simulate::{SimConfig, Simulator};

/// One simulated vendor served over HTTP, as `sluice simulate --vendor` serves it.
struct SimulatedVendor {
    sim: Arc<Simulator>,
    server: common::Running,
}

impl SimulatedVendor {
    async fn start(vendor: WireFormat) -> Self {
        let sim = Arc::new(Simulator::new(SimConfig {
            reply_tokens: 12,
            ..SimConfig::default()
        }));
        let server = common::serve(
            sluice_simulate::router(Arc::clone(&sim), vendor),
            Duration::from_secs(1),
        )
        .await;
        Self { sim, server }
    }
}

fn gateway_config(openai: &str, anthropic: &str, gemini: &str) -> String {
    format!(
        r#"
[auth]
keys = ["sk-sdk-vendors"]

[upstream]
connect_timeout_ms = 1000
first_byte_timeout_ms = 10000
idle_timeout_ms = 10000

[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "{openai}/v1"
keys = ["sk-sim-openai"]

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "{anthropic}"
keys = ["sk-ant-sim"]

[[providers]]
name = "sim-gemini"
kind = "gemini"
base_url = "{gemini}"
keys = ["AIza-sim"]

[[models]]
name = "via-openai"
[[models.deployments]]
provider = "sim-openai"
model = "gpt-sim"

[[models]]
name = "via-anthropic"
[[models.deployments]]
provider = "sim-anthropic"
model = "claude-sim"

[[models]]
name = "via-gemini"
[[models.deployments]]
provider = "sim-gemini"
model = "gemini-3-flash-sim"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_gets_the_same_answers_from_every_simulated_vendor() {
    if std::env::var("SLUICE_SKIP_SDK_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: the vendors SDK test (SLUICE_SKIP_SDK_TESTS=1)");
        return;
    }
    let python = tokio::task::spawn_blocking(common::sdk_python).await.unwrap();
    let openai = SimulatedVendor::start(WireFormat::OpenAi).await;
    let anthropic = SimulatedVendor::start(WireFormat::Anthropic).await;
    let gemini = SimulatedVendor::start(WireFormat::Gemini).await;
    let gateway = common::GatewayServer::start(&gateway_config(
        &openai.server.url(),
        &anthropic.server.url(),
        &gemini.server.url(),
    ))
    .await;
    assert!(gateway.warnings.is_empty(), "{:?}", gateway.warnings);
    let sims = serde_json::json!({
        "via-openai": openai.server.url(),
        "via-anthropic": anthropic.server.url(),
        "via-gemini": gemini.server.url(),
    });

    let script = common::repo_root().join("tests/sdk/test_vendors_sdk.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("SLUICE_BASE_URL", gateway.url("/v1"))
        .env("SLUICE_API_KEY", "sk-sdk-vendors")
        .env("SLUICE_SIM_URLS", sims.to_string())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the SDK checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("19 passed, 0 failed"), "{stdout}");

    // The vendors' side of the story: each refused exactly the one request the script meant it to
    // refuse, served every other, and counted per key what it reported as usage.
    for (name, vendor) in [("openai", &openai), ("anthropic", &anthropic), ("gemini", &gemini)] {
        let stats = vendor.sim.stats();
        assert_eq!(stats.invalid_requests, 1, "{name}: {stats:?}");
        assert_eq!(stats.rate_limited + stats.server_errors, 0, "{name}: {stats:?}");
        assert_eq!(stats.streams_started, stats.streams_completed, "{name}: {stats:?}");
        assert_eq!(stats.keys.len(), 1, "{name}: one upstream key: {stats:?}");
        let key = stats.keys.values().next().unwrap();
        assert_eq!(key.tokens, key.prompt_tokens + key.completion_tokens, "{name}");
        assert_eq!(key.requests, 9, "{name}: {key:?}");
    }
}
