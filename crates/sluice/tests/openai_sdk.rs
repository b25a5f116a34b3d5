//! The official `openai` Python package against the gateway over real HTTP: a completion, streams, and
//! the errors an SDK user catches. The SDK is installed from the package registry into a virtualenv
//! under `target/` on first run.
//!
//! Needs `python3` with the `venv` module. Set `SLUICE_SKIP_SDK_TESTS=1` to skip it on a machine
//! without Python; the skip is printed, never silent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

const CONFIG: &str = r#"
[auth]
keys = ["sk-sdk-test"]

[[providers]]
name = "demo"
kind = "simulated"
[providers.simulate]
reply_tokens = 24

[[providers]]
name = "strict"
kind = "simulated"
[providers.simulate]
rpm = 1

[[providers]]
name = "flaky"
kind = "simulated"
[providers.simulate]
tokens_per_sec = 200
fault = "reset-after=4"

[[models]]
name = "sluice-demo"
[[models.deployments]]
provider = "demo"
model = "sluice-demo"

[[models]]
name = "limited"
[[models.deployments]]
provider = "strict"
model = "limited"

[[models]]
name = "broken"
[[models.deployments]]
provider = "flaky"
model = "broken"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_works_through_the_gateway() {
    if std::env::var("SLUICE_SKIP_SDK_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: the OpenAI SDK test (SLUICE_SKIP_SDK_TESTS=1)");
        return;
    }
    let python = tokio::task::spawn_blocking(common::sdk_python).await.unwrap();
    let gateway = common::GatewayServer::start(CONFIG).await;
    let script = common::repo_root().join("tests/sdk/test_openai_sdk.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("SLUICE_BASE_URL", gateway.url("/v1"))
        .env("SLUICE_API_KEY", "sk-sdk-test")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the SDK checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("9 passed, 0 failed"), "{stdout}");
}
