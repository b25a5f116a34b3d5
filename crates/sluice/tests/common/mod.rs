//! Test harness: real servers on ephemeral loopback ports.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use sluice_providers::{SimConfig, SimStats, Simulator};
use tokio::sync::oneshot;

/// A server running in this process until dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and waits for in-flight requests (at most the grace period).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub async fn serve(app: axum::Router, grace: Duration) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(sluice_server::serve(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        grace,
    ));
    Running {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A `sluice simulate` server, as the binary runs it.
pub struct SimServer {
    pub sim: Arc<Simulator>,
    pub server: Running,
}

impl SimServer {
    pub async fn start(config: SimConfig) -> Self {
        let sim = Arc::new(Simulator::new(config));
        let server = serve(
            sluice_simulate::router(Arc::clone(&sim), sluice_simulate::Vendor::OpenAi),
            Duration::from_secs(1),
        )
        .await;
        Self { sim, server }
    }

    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.url())
    }

    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }
}

/// The gateway assembled from a TOML configuration exactly as `sluice serve` does.
pub struct GatewayServer {
    pub server: Running,
    pub warnings: Vec<String>,
    _watcher: Option<AbortOnDrop>,
    _refresher: Option<AbortOnDrop>,
    /// The assembled gateway, for flushing its ledger and reading its store.
    pub gateway: Arc<sluice::Gateway>,
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub const CLIENT_KEY: &str = "sk-test-client";

impl GatewayServer {
    pub async fn start(toml: &str) -> Self {
        Self::start_with_env(toml, &[]).await
    }

    pub async fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Self {
        // Each gateway gets its own SQLite ledger and spool, unless the test configures a store.
        let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gw-{}", uuid_like()));
        std::fs::create_dir_all(&scratch).unwrap();
        let toml = if toml.contains("[store]") {
            toml.to_owned()
        } else {
            format!(
                "{toml}\n[store]\nurl = \"sqlite://{}\"\nspool = \"{}\"\nprices = \"{}\"\nrefresh_ms = 200\n",
                scratch.join("sluice.db").display(),
                scratch.join("usage.spool").display(),
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../config/prices.toml")
                    .display()
            )
        };
        let config = sluice::Config::parse(Path::new("test.toml"), &toml).unwrap_or_else(|e| panic!("{e}"));
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut gateway = sluice::build(&config, &lookup).unwrap_or_else(|e| panic!("{e}"));
        sluice::wiring::attach_store(&mut gateway, &config, &lookup)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let watcher = gateway.watch_prompts(&config).map(AbortOnDrop);
        let refresher = gateway.refresh_tenancy(&config).map(AbortOnDrop);
        let app = sluice::app(&gateway, &config);
        let server = serve(app, config.shutdown_grace).await;
        Self {
            server,
            warnings: gateway.warnings.clone(),
            _watcher: watcher,
            _refresher: refresher,
            gateway: Arc::new(gateway),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path)
    }
}

/// A gateway configuration with one model `m` served by one OpenAI-format provider at `base_url`.
pub fn config_for(base_url: &str, extra_upstream: &str) -> String {
    format!(
        r#"
[auth]
keys = ["{CLIENT_KEY}"]

[upstream]
connect_timeout_ms = 1000
first_byte_timeout_ms = 5000
idle_timeout_ms = 5000
{extra_upstream}

[[providers]]
name = "up"
kind = "openai_compatible"
base_url = "{base_url}"
keys = ["sk-upstream-1"]

[[models]]
name = "m"
[[models.deployments]]
provider = "up"
model = "vendor-model"
"#
    )
}

pub fn client() -> reqwest::Client {
    sluice::wiring::http_client(Duration::from_secs(2)).unwrap()
}

pub fn chat_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Say something about rivers."}],
        "stream": stream,
    })
}

pub async fn post_chat(gateway: &GatewayServer, body: &serde_json::Value) -> reqwest::Response {
    client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Waits until `check` holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// An upstream that records every request it gets and answers with a fixed response: a vendor whose
/// side of the wire the tests can inspect.
#[derive(Clone)]
pub struct Capture {
    pub requests: Arc<Mutex<Vec<(http::HeaderMap, serde_json::Value)>>>,
    /// The path and query of each request, in order.
    pub paths: Arc<Mutex<Vec<String>>>,
    answer: Arc<dyn Fn(&serde_json::Value) -> Response + Send + Sync>,
}

impl Capture {
    pub async fn start(answer: impl Fn(&serde_json::Value) -> Response + Send + Sync + 'static) -> (Self, Running) {
        let capture = Capture {
            requests: Arc::default(),
            paths: Arc::default(),
            answer: Arc::new(answer),
        };
        // Every POST is captured, whatever the vendor's URL scheme.
        let app = axum::Router::new().fallback(post(captured)).with_state(capture.clone());
        (capture, serve(app, Duration::from_secs(1)).await)
    }

    pub fn last(&self) -> (http::HeaderMap, serde_json::Value) {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream got no request")
    }
}

async fn captured(State(capture): State<Capture>, uri: http::Uri, headers: http::HeaderMap, body: Bytes) -> Response {
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let response = (capture.answer)(&json);
    capture
        .paths
        .lock()
        .unwrap()
        .push(uri.path_and_query().map(|p| p.to_string()).unwrap_or_default());
    capture.requests.lock().unwrap().push((headers, json));
    response
}

pub fn json_response(status: u16, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

pub fn sse_response(events: &[&str]) -> Response {
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(Body::from(body))
        .unwrap()
}

pub fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtualenv with the pinned OpenAI SDK, made once and reused while the requirements do not change.
pub fn sdk_python() -> std::path::PathBuf {
    use std::process::Command;
    let requirements = repo_root().join("tests/sdk/requirements.txt");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && python.exists() {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .unwrap_or_else(|e| {
            panic!("python3 is needed for the OpenAI SDK test ({e}); set SLUICE_SKIP_SDK_TESTS=1 to skip it")
        });
    assert!(status.success(), "python3 -m venv failed");
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .status()
        .unwrap();
    assert!(status.success(), "pip could not install the OpenAI SDK");
    std::fs::write(&stamp, wanted).unwrap();
    python
}

/// GETs `path` with `key` and reads the JSON answer.
pub async fn get_json(gateway: &GatewayServer, path: &str, key: &str) -> serde_json::Value {
    client()
        .get(gateway.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
