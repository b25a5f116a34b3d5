//! Drills for a gateway on the network edge, over real sockets (issue 13):
//! - slow clients: partial request heads are closed within the header timeout; an idle keep-alive
//!   connection lives for the keep-alive timeout, not the header timeout;
//! - floods: connections beyond `max_connections` are refused at once while `/healthz` answers on a
//!   connection already open; requests beyond `max_in_flight` get a fast 503 with `retry-after`;
//! - HTTP/2 by prior knowledge (h2c) is served, with its limits announced;
//! - one body limit, `max_body_bytes`;
//! - shipped defaults: no literal client key beyond loopback, the README's quick start, the container's
//!   command, the admin key's rules;
//! - failed authentication throttled per client address;
//! - the prompt allow-list on every prompt route;
//! - an upstream SSE line past the bound ends the stream with an error event;
//! - SIGTERM under load while the database is locked: the process exits within the shutdown bounds, what
//!   could not be written is spooled, and after a restart the ledger holds exactly the answered requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use common::{
    BinProcess, CLIENT_KEY, GatewayServer, SimServer, client, free_port, get_on, healthz_on, metric_value,
    metrics_text, scratch_dir,
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sluice_simulate::SimConfig;
use sluice_store::{GroupBy, NewTenant, SpendFilter, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "sk-exposure-admin-0123456789abcdefghijklmn";

/// Drills that start the real binary and measure time: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A configuration for `sluice serve` on `port`, its ledger in `dir`, with `server` added to `[server]`,
/// `auth` as `[auth]`'s body, and model `m` served by `provider` (a `[[providers]]` table named `up`).
fn write_config(dir: &Path, port: u16, server: &str, auth: &str, provider: &str) -> PathBuf {
    let path = dir.join("sluice.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
{server}

[store]
url = "sqlite://{db}"
spool = "{spool}"
prices = "{prices}"
refresh_ms = 200

[prompts]
dir = "{prompts}"
reload_ms = 0

[auth]
{auth}

[upstream]
connect_timeout_ms = 1000
first_byte_timeout_ms = 10000
idle_timeout_ms = 10000

{provider}

[[models]]
name = "m"
[[models.deployments]]
provider = "up"
model = "gpt-4o-mini"
"#,
        db = dir.join("ledger.db").display(),
        spool = dir.join("usage.spool").display(),
        prices = common::repo_root().join("config/prices.toml").display(),
        prompts = dir.join("prompts").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A simulated provider inside the gateway, answering after `latency_ms`.
fn simulated(latency_ms: u64) -> String {
    format!("[[providers]]\nname = \"up\"\nkind = \"simulated\"\n[providers.simulate]\nlatency_ms = {latency_ms}\n")
}

/// Starts `sluice serve` with `server` settings and a simulated model; returns it with its port.
async fn start_binary(name: &str, server: &str, latency_ms: u64) -> (BinProcess, u16) {
    let dir = scratch_dir(&format!("exposure-{name}"));
    let port = free_port();
    let auth = format!("keys = [\"{CLIENT_KEY}\"]\nadmin_key = \"{ADMIN}\"");
    let config = write_config(&dir, port, server, &auth, &simulated(latency_ms));
    let mut gateway = BinProcess::spawn(&["serve", "--config", config.to_str().unwrap()], "warn");
    gateway.wait_healthy(port).await;
    (gateway, port)
}

/// Waits at most `limit` for the peer to close `tcp` (end of stream or reset); returns when it did.
/// Whatever the peer wrote before closing (a refusal, say) is read and ignored.
async fn closed_within(mut tcp: TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

// === Slow clients ===

/// 200 clients each send part of a request head and stop. With the default 10 s header timeout every one
/// is closed within it (give or take a second), none long before; and the gateway serves all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_request_heads_are_closed_within_the_header_timeout() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_gateway, port) = start_binary("partial-heads", "", 0).await;
    let opened = Instant::now();
    let mut sockets = Vec::new();
    for _ in 0..200 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: drill\r\nauthorization: Bearer sk-")
            .await
            .unwrap();
        sockets.push(tcp);
    }
    let sent = Instant::now();
    let mut probe = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(healthz_on(&mut probe).await.0, 200, "served while 200 heads hang");
    let closes = futures_util::future::join_all(
        sockets
            .into_iter()
            .map(|tcp| closed_within(tcp, Duration::from_secs(15))),
    )
    .await;
    let open = closes.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of 200 partial heads were still open after 15 s");
    let first = closes.iter().flatten().min().unwrap();
    let last = closes.iter().flatten().max().unwrap();
    assert!(
        *first >= opened + Duration::from_millis(9_500),
        "closed before the header timeout: {:?}",
        *first - opened
    );
    assert!(
        *last <= sent + Duration::from_millis(11_500),
        "closed after the header timeout: {:?}",
        *last - sent
    );
    eprintln!(
        "partial heads: 200 closed from {:?} to {:?} after opening",
        *first - opened,
        *last - opened
    );
}

/// An idle keep-alive connection is not held to the header timeout: it lives for the keep-alive timeout,
/// then is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_lives_for_the_keep_alive_timeout() {
    let (_gateway, port) = start_binary("keep-alive", "header_timeout_ms = 500\nkeep_alive_timeout_ms = 2500", 0).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(healthz_on(&mut tcp).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(healthz_on(&mut tcp).await.0, 200, "open past the header timeout");
    let idle_from = Instant::now();
    let closed = closed_within(tcp, Duration::from_secs(6))
        .await
        .expect("closed when idle");
    let idle = closed - idle_from;
    assert!(
        idle >= Duration::from_millis(2300) && idle <= Duration::from_millis(4000),
        "closed after {idle:?} idle"
    );
    // A connection that never sends a request gets the header timeout.
    let silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let opened = Instant::now();
    let closed = closed_within(silent, Duration::from_secs(3)).await.expect("closed");
    assert!(closed - opened < Duration::from_millis(1500), "{:?}", closed - opened);
}

/// A client that takes the head of a long stream and then reads nothing is cut once the gateway's writes
/// have waited `send_timeout_ms` on it, instead of holding its connection and its request for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_after_the_send_timeout() {
    let dir = scratch_dir("exposure-send-timeout");
    let port = free_port();
    let provider = "[[providers]]\nname = \"up\"\nkind = \"simulated\"\n[providers.simulate]\nreply_tokens = 300000\n";
    let auth = format!("keys = [\"{CLIENT_KEY}\"]");
    let config = write_config(&dir, port, "send_timeout_ms = 1000", &auth, provider);
    let mut gateway = BinProcess::spawn(&["serve", "--config", config.to_str().unwrap()], "warn");
    gateway.wait_healthy(port).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "Go on and on."}]}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: drill\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = tcp.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // Not reading: the socket buffers fill, the gateway's writes wait, and the send timeout runs.
    let metrics = || async {
        let text = metrics_text(&format!("http://127.0.0.1:{port}/metrics")).await;
        metric_value(&text, "sluice_connections_timed_out_total").unwrap_or(0)
    };
    let mut cut = false;
    for _ in 0..100 {
        if metrics().await >= 1 {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cut, "the client was not cut within 10 s:\n{}", gateway.log_tail(20));
    // What the client can still read ends without `[DONE]`: its answer was cut, not finished.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(!String::from_utf8_lossy(&rest).contains("data: [DONE]"));
    // The request is let go with its connection: the client sees the close first, then the cut answer's
    // usage is counted and recorded (the tokens it was sent, megabytes of them), so this may take a moment.
    let mut in_flight = String::new();
    for _ in 0..100 {
        in_flight = metrics_text(&format!("http://127.0.0.1:{port}/metrics")).await;
        if in_flight.contains("sluice_requests_in_flight 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        in_flight.contains("sluice_requests_in_flight 1\n"),
        "only the metrics request: {in_flight}"
    );
}

// === Floods ===

/// `max_connections` held open (idle, as a slow client would), then a flood of new connections: each is
/// closed at once, and `/healthz` on a connection opened before keeps answering; once the held
/// connections go, new ones are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_refused_while_healthz_answers() {
    const MAX: usize = 64;
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_gateway, port) = start_binary(
        "flood",
        &format!("max_connections = {MAX}\nheader_timeout_ms = 60000"),
        0,
    )
    .await;
    let mut probe = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(healthz_on(&mut probe).await.0, 200);
    // The health check that waited for the gateway closed its connection; until the gateway has seen it
    // go it still counts, and the last connection held below would be refused in its stead.
    let only_the_probe = async {
        loop {
            let (_, text) = get_on(&mut probe, "/metrics").await;
            if metric_value(&text, "sluice_connections_open") == Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), only_the_probe)
        .await
        .expect("the gateway counts only the probe's connection open");
    let mut held = Vec::new();
    for _ in 1..MAX {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // The accept loop has taken them all once a connection over the limit is refused.
    let mut refused = 0;
    let mut flood = Vec::new();
    let flooding = Instant::now();
    for _ in 0..300 {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(tcp) => flood.push(tcp),
            Err(_) => refused += 1,
        }
    }
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let (status, took) = healthz_on(&mut probe).await;
        assert_eq!(status, 200);
        latencies.push(took);
    }
    let closes =
        futures_util::future::join_all(flood.into_iter().map(|tcp| closed_within(tcp, Duration::from_secs(2)))).await;
    let hanging = closes.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        hanging,
        0,
        "{hanging} of {} connections over the limit were left open",
        closes.len()
    );
    latencies.sort();
    let (p50, max) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    eprintln!(
        "flood: {MAX} connections held, 300 more refused ({refused} at connect) within {:?}; /healthz on an open \
         connection p50 {p50:?}, max {max:?}",
        flooding.elapsed()
    );
    assert!(
        max < Duration::from_millis(500),
        "healthz took {max:?} during the flood"
    );
    // The held connections are counted: one more is refused, and once they go one is served.
    let extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(closed_within(extra, Duration::from_secs(2)).await.is_some());
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: drill\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "new connections are served once the held ones close");
}

/// `max_in_flight` requests waiting on a slow upstream: the next one is answered at once with a 503 in
/// OpenAI's shape and a `retry-after`, `/healthz` still answers, and once they finish requests go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_limit_get_a_fast_503() {
    let (_gateway, port) = start_binary("in-flight", "max_in_flight = 4", 3000).await;
    let base = format!("http://127.0.0.1:{port}");
    let chat = |base: String| async move {
        client()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    };
    let slow: Vec<_> = (0..4).map(|_| tokio::spawn(chat(base.clone()))).collect();
    // All four are in flight once the gateway counts them (the metrics request itself is the fifth).
    let in_flight = || async {
        let text = metrics_text(&format!("{base}/metrics")).await;
        metric_value(&text, "sluice_requests_in_flight").unwrap_or(0)
    };
    let mut counted = 0;
    for _ in 0..100 {
        counted = in_flight().await;
        if counted >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted >= 5, "the four requests were not counted: {counted}");
    let started = Instant::now();
    let refused = chat(base.clone()).await;
    let took = started.elapsed();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gateway_overloaded", "{body}");
    assert!(took < Duration::from_millis(1000), "the refusal took {took:?}");
    let health = client().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for request in slow {
        assert_eq!(request.await.unwrap().status(), 200);
    }
    assert_eq!(chat(base.clone()).await.status(), 200);
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sluice_requests_refused_total 1"), "{metrics}");
}

// === HTTP/2 ===

/// h2c by prior knowledge: the gateway answers over HTTP/2, announces its stream and header limits, and
/// refuses a header list over the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_prior_knowledge_is_served_and_bounded() {
    let (_gateway, port) = start_binary("h2c", "max_concurrent_streams = 8\nmax_header_bytes = 4096", 0).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let request = http::Request::get(format!("http://127.0.0.1:{port}/v1/models"))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = tokio::select! {
        response = response => response.unwrap(),
        result = &mut connection => panic!("the connection ended first: {result:?}"),
    };
    assert_eq!(response.status(), 200);
    assert_eq!(
        connection.max_concurrent_send_streams(),
        8,
        "the announced stream limit"
    );
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    let models: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(models["data"][0]["id"], "m");

    // A header list over 4 KiB gets no answer from the app.
    let mut send = send.ready().await.unwrap();
    let request = http::Request::get(format!("http://127.0.0.1:{port}/healthz"))
        .header("x-big", "x".repeat(8192))
        .body(())
        .unwrap();
    let outcome = match send.send_request(request, true) {
        Ok((response, _)) => response.await.map(|r| r.status().as_u16()),
        Err(err) => Err(err),
    };
    assert!(
        !matches!(outcome, Ok(200)),
        "a header list over the limit was served: {outcome:?}"
    );
    driver.abort();
}

// === One body limit ===

fn big_chat(bytes: usize) -> Value {
    json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "word ".repeat(bytes / 5)}]})
}

/// `max_body_bytes` is the body limit: a 3 MB chat body passes under the default 8 MiB (axum's own 2 MiB
/// does not apply), and a body over a configured limit is refused with that limit in the message.
#[tokio::test]
async fn max_body_bytes_is_the_one_body_limit() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let gateway = GatewayServer::start(&common::config_for(&upstream.base_url(), "")).await;
    let response = common::post_chat(&gateway, &big_chat(3_000_000)).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let config = format!(
        "[server]\nmax_body_bytes = 1000000\n{}",
        common::config_for(&upstream.base_url(), "")
    );
    let gateway = GatewayServer::start(&config).await;
    let response = common::post_chat(&gateway, &big_chat(1_500_000)).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1000000 bytes"),
        "{body}"
    );
    // Without a content-length, cut while reading: the same answer.
    let chunks = futures_util::stream::iter((0..15).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b' '; 100_000]))));
    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1000000 bytes"),
        "{body}"
    );
}

// === Shipped defaults and key rules ===

/// Runs `sluice serve` with `args` and `env`, expecting it to refuse to start: returns its standard error.
fn refused_start(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> String {
    let mut command = std::process::Command::new(common::BIN);
    command
        .args(args)
        .env_remove("SLUICE_API_KEY")
        .env_remove("SLUICE_ADMIN_KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test]
async fn serve_refuses_a_literal_client_key_beyond_loopback() {
    let dir = scratch_dir("exposure-literal");
    let port = free_port();
    let auth = "keys = [\"env:SLUICE_API_KEY\", \"sk-literal-client-key\"]";
    let config = write_config(&dir, port, "", auth, &simulated(0));
    let config = config.to_str().unwrap();
    let listen = format!("0.0.0.0:{port}");
    let stderr = refused_start(&["serve", "--config", config, "--listen", &listen], &[], None);
    assert!(stderr.contains("auth.keys[1]: a literal client key"), "{stderr}");
    assert!(stderr.contains("\"env:SLUICE_API_KEY\""), "{stderr}");
    assert!(stderr.contains("sluice keys create"), "{stderr}");
    assert!(!stderr.contains("sk-literal-client-key"), "{stderr}");
    // The same configuration on loopback serves the key.
    let mut gateway = BinProcess::spawn(&["serve", "--config", config], "warn");
    gateway.wait_healthy(port).await;
    let models = client()
        .get(format!("http://127.0.0.1:{port}/v1/models"))
        .bearer_auth("sk-literal-client-key")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
}

#[tokio::test]
async fn the_admin_key_must_be_long_and_not_a_client_key() {
    let dir = scratch_dir("exposure-admin-key");
    let config = write_config(
        &dir,
        free_port(),
        "",
        "keys = [\"env:SLUICE_API_KEY\"]\nadmin_key = \"env:SLUICE_ADMIN_KEY\"",
        &simulated(0),
    );
    let args = ["serve", "--config", config.to_str().unwrap()];
    let stderr = refused_start(&args, &[("SLUICE_ADMIN_KEY", "sk-admin-too-short")], None);
    assert!(
        stderr.contains("auth.admin_key: the admin key is 18 characters long"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-admin-too-short"), "{stderr}");
    let stderr = refused_start(&args, &[("SLUICE_ADMIN_KEY", ADMIN), ("SLUICE_API_KEY", ADMIN)], None);
    assert!(stderr.contains("also the client key auth.keys[0]"), "{stderr}");
    assert!(!stderr.contains(ADMIN), "{stderr}");
}

/// A folder laid out like the repository for the shipped configuration (its `config` and `prompts`), with
/// its own `data`.
fn shipped_layout(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    for folder in ["config", "prompts"] {
        std::os::unix::fs::symlink(common::repo_root().join(folder), dir.join(folder)).unwrap();
    }
    dir
}

/// The shipped configuration takes its keys from the environment: the README's quick start (the key in
/// `SLUICE_API_KEY`) answers its `curl` on loopback, and the container's command (`serve --listen
/// 0.0.0.0:8080`) starts, where a literal key would be refused.
#[tokio::test]
async fn the_shipped_configuration_serves_the_quick_start_and_the_container_command() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let text = std::fs::read_to_string(common::repo_root().join("config/sluice.toml")).unwrap();
    let config = sluice::Config::parse(Path::new("config/sluice.toml"), &text).unwrap();
    assert!(
        config.auth.keys.iter().all(|k| k.starts_with("env:")),
        "a literal client key in the shipped configuration: {:?}",
        config.auth.keys
    );
    let compose = std::fs::read_to_string(common::repo_root().join("docker-compose.yml")).unwrap();
    let grace: u64 = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("stop_grace_period: "))
        .and_then(|v| v.trim().strip_suffix('s'))
        .expect("docker-compose.yml sets stop_grace_period in seconds")
        .parse()
        .unwrap();
    let needed = config.shutdown_grace + config.shutdown_flush;
    assert!(
        Duration::from_secs(grace) > needed,
        "stop_grace_period {grace}s <= {needed:?}"
    );
    let dockerfile = std::fs::read_to_string(common::repo_root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(r#"CMD ["serve", "--listen", "0.0.0.0:8080"]"#));
    assert!(
        !dockerfile.contains("sk-") && !compose.contains("sk-sluice"),
        "a key in a container file"
    );

    // The quick start, on another port: `SLUICE_API_KEY=sk-sluice-dev sluice serve`, then its curl body.
    let dir = shipped_layout("exposure-quick-start");
    let port = free_port();
    let mut child = tokio::process::Command::new(common::BIN)
        .arg("serve")
        .current_dir(&dir)
        .env("SLUICE_API_KEY", "sk-sluice-dev")
        .env("SLUICE_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("SLUICE_ADMIN_KEY")
        .env_remove("SLUICE_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_health(port, &mut child).await;
    let answer = client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .header("Authorization", "Bearer sk-sluice-dev")
        .header("Content-Type", "application/json")
        .body(r#"{"model": "sluice-demo", "stream": true, "messages": [{"role": "user", "content": "Hello!"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    child.kill().await.unwrap();

    // The container's command: beyond loopback, keys from the environment.
    let port = free_port();
    let mut child = tokio::process::Command::new(common::BIN)
        .args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .current_dir(&dir)
        .env("SLUICE_API_KEY", "sk-from-the-environment-0123456789")
        .env_remove("SLUICE_ADMIN_KEY")
        .env_remove("SLUICE_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_health(port, &mut child).await;
    let models = client()
        .get(format!("http://127.0.0.1:{port}/v1/models"))
        .bearer_auth("sk-sluice-dev")
        .send()
        .await
        .unwrap();
    assert_eq!(
        models.status(),
        401,
        "the development key is not served beyond loopback"
    );
    child.kill().await.unwrap();
}

async fn wait_for_health(port: u16, child: &mut tokio::process::Child) {
    for _ in 0..400 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sluice exited: {status}");
        }
        if let Ok(response) = client().get(format!("http://127.0.0.1:{port}/healthz")).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not healthy on {port}");
}

/// `sluice migrate` and `check-config` print the database URL without its password.
#[test]
fn database_urls_are_printed_without_their_password() {
    let Some(database) = common::FreshDatabase::create("sluice_exposure_redact") else {
        return;
    };
    let dir = scratch_dir("exposure-redact");
    let config = write_config(&dir, free_port(), "", "", &simulated(0));
    // Trust authentication: the password is ignored, so it is only there to be hidden.
    let url = format!("postgres://postgres:hunter2-secret@127.0.0.1:5432/{}", database.name);
    for command in ["migrate", "check-config"] {
        let output = std::process::Command::new(common::BIN)
            .args([command, "--config", config.to_str().unwrap()])
            .env("SLUICE_DATABASE_URL", &url)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{command}: {stdout}{stderr}");
        assert!(
            stdout.contains("postgres://postgres:***@127.0.0.1:5432/"),
            "{command}: {stdout}"
        );
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "{command}: {stdout}{stderr}"
        );
    }
}

// === Failed authentication ===

/// After `max_failures` wrong keys from one address, that address gets 429 with `retry-after` even with
/// a right key; another address is served.
#[tokio::test]
async fn failed_authentication_is_throttled_per_address() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let config = common::config_for(&upstream.base_url(), "")
        .replace("[auth]\n", "[auth]\nmax_failures = 3\nfailure_window_ms = 60000\n");
    let gateway = GatewayServer::start(&config).await;
    // The shared client installs the TLS provider reqwest needs to build a client.
    let _ = client();
    let from = |address: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(address))
            .build()
            .unwrap()
    };
    let attacker = from([127, 0, 0, 1]);
    for _ in 0..3 {
        let response = attacker
            .get(gateway.url("/v1/models"))
            .bearer_auth("sk-guess")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    for key in ["sk-guess", CLIENT_KEY] {
        let response = attacker
            .get(gateway.url("/v1/models"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "{key}");
        let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((55..=60).contains(&retry), "{retry}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_failed_authentications");
    }
    let other = from([127, 0, 0, 2]);
    let response = other
        .get(gateway.url("/v1/models"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Public routes are not behind the throttle.
    let health = attacker.get(gateway.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

// === The prompt allow-list ===

const PROMPT: &str = r#"
name = "NAME"
version = 1
description = "A prompt."
model = "m"
[[messages]]
role = "user"
content = "Hello."
"#;

/// A tenant allowed one prompt sees only it: on `GET /v1/prompts/{name}`, in `/v1/openapi.json`, and in the
/// 404 that lists prompts.
#[tokio::test]
async fn the_prompt_allow_list_applies_to_every_prompt_route() {
    let upstream = SimServer::start(SimConfig::default()).await;
    let dir = scratch_dir("exposure-prompts");
    for name in ["public-one", "secret-plan"] {
        std::fs::write(dir.join(format!("{name}.toml")), PROMPT.replace("NAME", name)).unwrap();
    }
    let config = format!(
        "{}\n[prompts]\ndir = \"{}\"\nreload_ms = 0\n",
        common::config_for(&upstream.base_url(), "").replace("[auth]\n", &format!("[auth]\nadmin_key = \"{ADMIN}\"\n")),
        dir.display()
    );
    let gateway = GatewayServer::start(&config).await;
    let admin = |path: &str, body: Value| client().post(gateway.url(path)).bearer_auth(ADMIN).json(&body).send();
    let created = admin("/admin/tenants", json!({"name": "team", "prompts": ["public-one"]}))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key: Value = admin("/admin/tenants/team/keys", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let get = |path: &str, key: &str| client().get(gateway.url(path)).bearer_auth(key).send();

    let response = get("/v1/prompts/public-one", &key).await.unwrap();
    assert_eq!(response.status(), 200);
    let response = get("/v1/prompts/secret-plan", &key).await.unwrap();
    assert_eq!(response.status(), 403);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("prompt_not_allowed") && !body.contains("A prompt."),
        "{body}"
    );

    let openapi: Value = get("/v1/openapi.json", &key).await.unwrap().json().await.unwrap();
    let paths: Vec<&String> = openapi["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths, ["/v1/prompts/public-one"]);

    let response = get("/v1/prompts/nope", &key).await.unwrap();
    assert_eq!(
        response.status(),
        403,
        "a name off the list is refused whether it exists or not"
    );
    let missing = client()
        .post(gateway.url("/v1/prompts/nope"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // The configured key may use every prompt, so its 404 lists both; the tenant's lists only its own.
    let body = missing.text().await.unwrap();
    assert!(body.contains("public-one") && body.contains("secret-plan"), "{body}");
    let created = admin(
        "/admin/tenants",
        json!({"name": "other", "prompts": ["public-one", "nope"]}),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let other: Value = admin("/admin/tenants/other/keys", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let missing = client()
        .post(gateway.url("/v1/prompts/nope"))
        .bearer_auth(other["key"].as_str().unwrap())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body = missing.text().await.unwrap();
    assert!(body.contains("Available prompts: public-one."), "{body}");
}

// === Unbounded SSE lines ===

/// How much of one line the upstream sends: one MiB past the gateway's bound on a line (8 MiB), and then
/// nothing more. What the gateway can have read of the line is this much, whatever the kernel buffers.
const LINE_SENT: u64 = 9 << 20;

/// An upstream that sends one good chunk, then [`LINE_SENT`] bytes of a line that does not end, 1 MiB at a
/// time, counting them, and then waits without ending the line until the gateway lets the body go.
async fn endless_line(sent: Arc<AtomicU64>, stopped: Arc<AtomicBool>) -> Response {
    let first = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\
                 \"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
    let start = format!("{first}data: {{\"id\":\"c\",\"pad\":\"");
    let megabyte = Bytes::from(vec![b'x'; 1 << 20]);
    let line = (LINE_SENT >> 20) as usize;
    let pieces = futures_util::stream::iter(std::iter::repeat_n(megabyte, line))
        .map(move |piece| {
            sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
            piece
        })
        .chain(futures_util::stream::pending());
    let pieces = futures_util::stream::once(std::future::ready(Bytes::from(start)))
        .chain(pieces)
        .map(Ok::<_, Infallible>);
    let guard = DropFlag(stopped);
    let body = futures_util::StreamExt::map(pieces, move |piece| {
        let _ = &guard;
        piece
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

use futures_util::StreamExt as _;

/// Sets its flag when dropped: the upstream's body was let go.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A line past 8 MiB ends the client's stream with an error event (no `[DONE]`), and the gateway stops
/// reading the upstream there instead of holding the line. The upstream sends 9 MiB of the line and then
/// waits: a gateway that held more than that of a line would still be waiting for it, so the bound is
/// measured by what was sent, not by what the kernel buffered on the way (a receive window alone can be
/// 16 MiB, half a 32 MiB `tcp_rmem` ceiling: CI once counted 26.2 MB sent by an upstream that wrote on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_upstream_line_ends_the_stream_with_an_error() {
    let sent = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let app = {
        let (sent, stopped) = (Arc::clone(&sent), Arc::clone(&stopped));
        axum::Router::new().fallback(axum::routing::post(move || endless_line(sent, stopped)))
    };
    let upstream = common::serve(app, Duration::from_secs(1)).await;
    let gateway = GatewayServer::start(&common::config_for(&format!("{}/v1", upstream.url()), "")).await;
    let started = Instant::now();
    let response = common::post_chat(&gateway, &common::chat_body(true)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let took = started.elapsed();
    let events = common::sse_data(&text);
    assert!(events[0].contains("\"Hi\""), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{last}");
    assert!(!text.contains("[DONE]"));
    // Cut at the bound, within the 9 MiB sent, not at the idle timeout (5 s) the line would otherwise meet.
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(sent.load(Ordering::Relaxed), LINE_SENT, "the upstream sent its 9 MiB");
    assert!(
        common::eventually(Duration::from_secs(2), || stopped.load(Ordering::Relaxed)).await,
        "the upstream body was not let go"
    );
}

// === SIGTERM under load, with the database locked ===

/// What one client request got.
#[derive(Debug)]
struct Outcome {
    #[expect(dead_code, reason = "read through Debug, in failure messages")]
    id: String,
    stream: bool,
    completed: bool,
    detail: String,
}

async fn ask(base: &str, key: &str, id: &str, stream: bool) -> Outcome {
    let mut body = json!({"model": "m", "stream": stream, "max_tokens": 12,
                          "messages": [{"role": "user", "content": format!("Tell me about {id}.")}]});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let outcome = |completed: bool, detail: String| Outcome {
        id: id.to_owned(),
        stream,
        completed,
        detail,
    };
    let response = match client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-request-id", id)
        .json(&body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(err) => return outcome(false, format!("refused: {err}")),
    };
    let status = response.status();
    match response.text().await {
        Ok(text) if status == 200 && (!stream || text.ends_with("data: [DONE]\n\n")) => outcome(true, String::new()),
        Ok(text) => outcome(false, format!("{status}: {text}")),
        Err(err) => outcome(false, format!("{status}, cut: {err}")),
    }
}

/// Clients sending requests back to back (streams and not) until the gateway stops answering.
async fn load(base: String, key: String, clients: usize) -> Vec<Outcome> {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (base, key) = (base.clone(), key.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(41 * c as u64)).await;
                let mut outcomes = Vec::new();
                for n in 0.. {
                    let outcome = ask(&base, &key, &format!("term-{c}-{n}"), (c + n) % 2 == 0).await;
                    let done = !outcome.completed;
                    outcomes.push(outcome);
                    if done {
                        break;
                    }
                }
                outcomes
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// SIGTERM with requests of both kinds in flight and the ledger's database locked by another process: with
/// the default bounds the process drains, gives the ledger 5 s, spools what it could not write and exits
/// well within an orchestrator's 30 s; restarted, it replays the spool, and the ledger then holds exactly
/// the answered requests with the tokens the upstream reported.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_database_locked_spools_and_the_restart_has_every_answer() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let sim = SimServer::start(SimConfig {
        latency: Duration::from_millis(400),
        tokens_per_sec: Some(40.0),
        reply_tokens: 24,
        ..SimConfig::default()
    })
    .await;
    let dir = scratch_dir("exposure-sigterm");
    let db = dir.join("ledger.db");
    let url = format!("sqlite://{}", db.display());
    let key = {
        let store = Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        store.create_tenant(&NewTenant::new("term")).await.unwrap();
        let created = store.create_key("term", Some("load"), None).await.unwrap();
        store.close().await;
        created.key.expose_secret().to_owned()
    };
    let port = free_port();
    let provider = format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{}\"\nkeys = [\"sk-upstream-term\"]\n",
        sim.base_url()
    );
    // The default shutdown bounds: no shutdown_* key.
    let config = write_config(&dir, port, "", "", &provider);
    let args = ["serve", "--config", config.to_str().unwrap()];
    let mut gateway = BinProcess::spawn(&args, "info");
    gateway.wait_healthy(port).await;

    let base = format!("http://127.0.0.1:{port}");
    let clients = tokio::spawn(load(base.clone(), key.clone(), 12));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lock = common::SqliteLock::hold(&db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    gateway.terminate();
    let exit = gateway.wait_exit(Duration::from_secs(30)).await;
    let took = signalled.elapsed();
    let exit = exit.unwrap_or_else(|| panic!("no exit within 30 s of SIGTERM:\n{}", gateway.log_tail(30)));
    assert!(exit.success(), "{exit}:\n{}", gateway.log_tail(30));
    let outcomes = tokio::time::timeout(Duration::from_secs(15), clients)
        .await
        .unwrap()
        .unwrap();
    // Drained in a second or two (the requests are short), then 5 s at most for the ledger.
    assert!(
        took < Duration::from_millis(7500),
        "exited {took:?} after SIGTERM (draining took longer than the requests, or the flush was not bounded):\n{}",
        gateway.log_tail(30)
    );
    // What the flush could not write: in the spool, or in a replay the shutdown cut short.
    let spooled: usize = ["usage.spool", "usage.spool.replaying"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default().lines().count())
        .sum();
    assert!(
        spooled > 0,
        "nothing was spooled: the drill did not test the bounded flush\n{}",
        gateway.log_tail(30)
    );
    let completed: Vec<&Outcome> = outcomes.iter().filter(|o| o.completed).collect();
    let cut: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.completed && !o.detail.starts_with("refused"))
        .collect();
    assert!(cut.is_empty(), "answers cut by the shutdown: {cut:#?}");
    assert!(completed.iter().any(|o| o.stream) && completed.iter().any(|o| !o.stream));
    lock.release().await;

    // Restarted, the gateway replays the spool.
    let mut gateway = BinProcess::spawn(&args, "info");
    gateway.wait_healthy(port).await;
    let replayed = common::eventually(Duration::from_secs(10), || {
        std::fs::metadata(dir.join("usage.spool")).map_or(true, |m| m.len() == 0)
            && !dir.join("usage.spool.replaying").exists()
    })
    .await;
    assert!(replayed, "the spool was not replayed:\n{}", gateway.log_tail(30));
    gateway.terminate();
    assert!(
        gateway
            .wait_exit(Duration::from_secs(30))
            .await
            .is_some_and(|s| s.success())
    );

    let stats = sim.stats();
    let (prompt, completion) = common::sim_token_totals(&stats);
    let store = Store::open(&url).await.unwrap();
    let rows = store
        .spend_from_ledger(&SpendFilter::new(GroupBy::Tenant))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].requests, completed.len() as i64, "{rows:?} {completed:?}");
    assert_eq!(stats.requests, completed.len() as u64, "{stats:?}");
    assert_eq!(
        (rows[0].prompt_tokens() as u64, rows[0].completion_tokens() as u64),
        (prompt, completion),
        "{rows:?}"
    );
    store.close().await;
    eprintln!(
        "sigterm with the database locked: {} answers ({} streams), exit {:?} after the signal, {} rows spooled",
        completed.len(),
        completed.iter().filter(|o| o.stream).count(),
        took,
        spooled
    );
}
