//! Test harness: real servers on ephemeral loopback ports.
#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use sluice_simulate::{SimConfig, SimStats, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
    serve_listener(listener, app, grace)
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
            sluice_simulate::router(Arc::clone(&sim), sluice_simulate::WireFormat::OpenAi),
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
    _alerts: Option<AbortOnDrop>,
    _logs: Option<AbortOnDrop>,
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
        let logs = gateway.maintain_request_logs(&config).map(AbortOnDrop);
        gateway
            .export_traces(&config, &lookup)
            .unwrap_or_else(|e| panic!("{e}"));
        let alerts = gateway
            .watch_alerts(&config, &lookup)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(AbortOnDrop);
        let app = sluice::app(&gateway, &config);
        let server = serve(app, config.shutdown_grace).await;
        Self {
            server,
            warnings: gateway.warnings.clone(),
            _watcher: watcher,
            _refresher: refresher,
            _alerts: alerts,
            _logs: logs,
            gateway: Arc::new(gateway),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path)
    }

    /// Stops as `sluice serve` does on SIGTERM: stops accepting, lets requests in flight finish (at most
    /// the grace period), then flushes the usage ledger for at most `flush`. Returns the writer's counters.
    pub async fn stop(self, flush: Duration) -> Option<sluice_store::WriterStats> {
        self.server.shutdown().await;
        self.gateway.flush(flush).await;
        self.gateway.ledger.as_ref().map(|l| l.writer().stats())
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

/// The text a gateway's `/metrics` at `url` answers.
pub async fn metrics_text(url: &str) -> String {
    client().get(url).send().await.unwrap().text().await.unwrap()
}

/// One `GET /healthz` on an open HTTP/1.1 connection; its status and how long it took.
pub async fn healthz_on(tcp: &mut TcpStream) -> (u16, Duration) {
    let started = Instant::now();
    let (status, _) = get_on(tcp, "/healthz").await;
    (status, started.elapsed())
}

/// One `GET path` on an open HTTP/1.1 connection; its status and body.
pub async fn get_on(tcp: &mut TcpStream, path: &str) -> (u16, String) {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: drill\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            if body.len() >= length {
                return (head[9..12].parse().unwrap(), body.to_owned());
            }
        }
    }
}

/// The value of `series` (a name with its labels, as `/metrics` writes it) in `/metrics` text, if there.
pub fn metric_value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
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

impl GatewayServer {
    /// The gateway's store; panics when no store is attached.
    pub fn store(&self) -> &sluice_store::Store {
        &self.gateway.tenancy.as_ref().expect("a store is attached").store
    }

    /// The usage writer's counters now; panics when no store is attached.
    pub fn writer_stats(&self) -> sluice_store::WriterStats {
        self.gateway
            .ledger
            .as_ref()
            .expect("a store is attached")
            .writer()
            .stats()
    }
}

/// The prompt and completion tokens a simulated vendor reported, summed over its keys.
pub fn sim_token_totals(stats: &SimStats) -> (u64, u64) {
    stats.keys.values().fold((0, 0), |(prompt, completion), key| {
        (prompt + key.prompt_tokens, completion + key.completion_tokens)
    })
}

/// A throwaway PostgreSQL database at 127.0.0.1:5432 (trust authentication), dropped with the value even
/// when the test fails; `None` when `SLUICE_SKIP_POSTGRES_TESTS=1`.
pub struct FreshDatabase {
    pub name: String,
}

impl FreshDatabase {
    pub fn create(prefix: &str) -> Option<Self> {
        if std::env::var("SLUICE_SKIP_POSTGRES_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED: a PostgreSQL test (SLUICE_SKIP_POSTGRES_TESTS=1)");
            return None;
        }
        let name = format!("{prefix}_{}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        let created = psql(&format!("CREATE DATABASE {name}"));
        assert!(
            created.status.success(),
            "PostgreSQL at 127.0.0.1:5432 is needed (set SLUICE_SKIP_POSTGRES_TESTS=1 to skip): {}",
            String::from_utf8_lossy(&created.stderr)
        );
        Some(Self { name })
    }

    /// The database's URL, directly or through `host` (a [`TcpOutage`] proxy's address, say).
    pub fn url(&self, host: &str) -> String {
        format!("postgres://postgres@{host}/{}", self.name)
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

pub fn psql(sql: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("psql is needed for the PostgreSQL tests ({e}); set SLUICE_SKIP_POSTGRES_TESTS=1 to skip them")
        })
}

/// A TCP proxy in front of a database that can cut every connection and refuse new ones (accepting and
/// closing them at once, as a host whose database process died), then come back.
pub struct TcpOutage {
    pub addr: SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpOutage {
    pub async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (flag, held) = (up.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(relay);
            }
        });
        Self {
            addr,
            up,
            connections,
            task,
        }
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TcpOutage {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// Another process (the `sqlite3` shell) holding a write transaction (`BEGIN EXCLUSIVE`) on a SQLite
/// database, as an operator's shell, a backup or a migration would: the gateway can still read, and its
/// writes fail with SQLITE_BUSY once their busy timeout has passed. Released by [`SqliteLock::release`],
/// or by killing the shell when dropped.
pub struct SqliteLock {
    shell: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
}

impl SqliteLock {
    /// Returns once the lock is held.
    pub async fn hold(database: &Path) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let mut shell = tokio::process::Command::new("sqlite3")
            .arg(database)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("the sqlite3 shell is needed for the SQLite outage tests ({e})"));
        let mut stdin = shell.stdin.take().unwrap();
        // `.bail on`: a BEGIN that fails ends the shell instead of printing `locked` anyway.
        stdin
            .write_all(b".bail on\n.timeout 10000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
            .await
            .unwrap();
        stdin.flush().await.unwrap();
        let mut stdout = tokio::io::BufReader::new(shell.stdout.take().unwrap());
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(15), stdout.read_line(&mut line)).await;
        if !matches!(read, Ok(Ok(_))) || line.trim() != "locked" {
            let mut stderr = String::new();
            if let Some(mut err) = shell.stderr.take() {
                let _ = tokio::time::timeout(Duration::from_secs(1), err.read_to_string(&mut stderr)).await;
            }
            panic!(
                "sqlite3 could not lock {}: {line:?} {read:?} {stderr}",
                database.display()
            );
        }
        Self {
            shell,
            stdin: Some(stdin),
        }
    }

    /// Rolls the transaction back and waits for the shell to exit.
    pub async fn release(mut self) {
        use tokio::io::AsyncWriteExt;
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"ROLLBACK;\n.quit\n").await.unwrap();
            stdin.flush().await.unwrap();
        }
        let status = tokio::time::timeout(Duration::from_secs(10), self.shell.wait())
            .await
            .expect("the sqlite3 shell exits after ROLLBACK")
            .unwrap();
        assert!(status.success(), "sqlite3 holding the lock failed: {status}");
    }
}

/// The `sluice` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A loopback port free now (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An empty scratch folder under the target directory, unique to this test process and `name`.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process of the real binary, killed when dropped so a failing test leaves nothing running, with
/// its standard error collected line by line for failure messages.
pub struct BinProcess {
    pub child: std::process::Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl BinProcess {
    /// Starts `sluice` with `args`, and `RUST_LOG` set to `log`.
    pub fn spawn(args: &[&str], log: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(BIN)
            .args(args)
            .env("RUST_LOG", log)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, log: lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` lines it logged so far.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = self.log.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether any logged line so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Sends SIGTERM, as a container runtime or systemd does.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits at most `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `GET /healthz` on `port` answers 200, for at most 20 s; fails at once, with the log, if
    /// the process exits first.
    pub async fn wait_healthy(&mut self, port: u16) {
        let client = client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sluice exited ({status}) before serving:\n{}", self.log_tail(30));
            }
            if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nothing became healthy on port {port}:\n{}", self.log_tail(30));
    }

    /// Its resident memory now, in KiB (Linux only: `/proc/PID/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for BinProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `app` on a listener the test prepared (socket options, say) until dropped.
pub fn serve_listener(listener: tokio::net::TcpListener, app: axum::Router, grace: Duration) -> Running {
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

/// The ledger's database, and how a test takes it away and brings it back.
pub enum Database {
    /// A SQLite file; the outage is another process holding a write transaction on it.
    Sqlite {
        path: std::path::PathBuf,
        lock: Option<SqliteLock>,
    },
    /// A throwaway PostgreSQL database behind a proxy that can cut every connection.
    Postgres { proxy: TcpOutage, database: FreshDatabase },
}

impl Database {
    /// A SQLite file in `dir`.
    pub fn sqlite(dir: &Path) -> Self {
        Self::Sqlite {
            path: dir.join("ledger.db"),
            lock: None,
        }
    }

    /// `None` when the PostgreSQL tests are skipped.
    pub async fn postgres(prefix: &str) -> Option<Self> {
        let database = FreshDatabase::create(prefix)?;
        let proxy = TcpOutage::start("127.0.0.1:5432".parse().unwrap()).await;
        Some(Self::Postgres { proxy, database })
    }

    /// The database's URL, through the proxy for PostgreSQL.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Self::Postgres { proxy, database } => database.url(&proxy.addr.to_string()),
        }
    }

    /// Takes the database away: a write lock held by another process (SQLite), or every connection cut
    /// and new ones refused (PostgreSQL).
    pub async fn cut(&mut self) {
        match self {
            Self::Sqlite { path, lock } => *lock = Some(SqliteLock::hold(path).await),
            Self::Postgres { proxy, .. } => proxy.cut(),
        }
    }

    /// Brings the database back.
    pub async fn restore(&mut self) {
        match self {
            Self::Sqlite { lock, .. } => lock.take().expect("the database was cut").release().await,
            Self::Postgres { proxy, .. } => proxy.restore(),
        }
    }
}
