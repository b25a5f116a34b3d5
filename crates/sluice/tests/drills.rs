//! Fault drills on the real `sluice` binary, loopback only and bounded to a few seconds each:
//! - SIGTERM under load: every request the gateway took finishes whole, new connections are refused or
//!   answered (never left hanging), the process exits 0 in time, and the usage ledger holds exactly the
//!   completed requests with the tokens the upstream reported.
//! - A slow client on a fast stream: the gateway back-pressures the upstream instead of buffering the
//!   stream, and the client still gets every byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use common::BinProcess;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sluice_providers::error::error_chain;
use sluice_simulate::{SimConfig, Simulator};
use sluice_store::{ExportFilter, GroupBy, NewTenant, SpendFilter, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The drills measure time and memory: one at a time, so neither skews the other on a small CI machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A configuration for `sluice serve` on `port` with its SQLite ledger and spool in `dir`, the
/// `provider` table (named `up`) serving model `m`, and `auth` as the `[auth]` table's body.
fn write_config(dir: &Path, port: u16, provider: &str, auth: &str) -> std::path::PathBuf {
    let path = dir.join("sluice.toml");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace_ms = 8000

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
first_byte_timeout_ms = 5000
idle_timeout_ms = 30000

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
    std::fs::write(&path, config).unwrap();
    path
}

// === Drill 1: SIGTERM under load ===

/// What happened to one client request.
#[derive(Debug)]
#[allow(dead_code, reason = "the details are read through Debug, in failure messages")]
enum Answer {
    /// 200 with a whole body; the prompt and completion tokens it reported.
    Complete(u64, u64),
    /// No response head: the connection was refused, or closed before the request was read.
    Refused(String),
    /// Anything else: another status, a cut or malformed body, or no answer in time.
    Broken(String),
}

#[derive(Debug)]
struct Outcome {
    id: String,
    stream: bool,
    started: Instant,
    ended: Instant,
    answer: Answer,
}

/// One client: requests back to back on its own connection (streaming and not, of varying lengths)
/// until the gateway refuses it or `stop` is set.
async fn drive(client_no: usize, base: String, key: String, stop: Arc<AtomicBool>) -> Vec<Outcome> {
    // Staggered, so requests start and end at different times.
    tokio::time::sleep(Duration::from_millis(37 * client_no as u64)).await;
    let client = common::client();
    let mut outcomes = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let stream = (client_no + n).is_multiple_of(2);
        let max_tokens = 8 + (client_no * 7 + n * 5) % 25;
        let id = format!("drill-{client_no}-{n}");
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            ask(&client, &base, &key, &id, stream, max_tokens),
        )
        .await
        .unwrap_or_else(|_| Answer::Broken("no answer within 10 s".to_owned()));
        let done = !matches!(answer, Answer::Complete(..));
        outcomes.push(Outcome {
            id,
            stream,
            started,
            ended: Instant::now(),
            answer,
        });
        if done {
            break;
        }
    }
    outcomes
}

async fn ask(client: &reqwest::Client, base: &str, key: &str, id: &str, stream: bool, max_tokens: usize) -> Answer {
    let mut body = json!({
        "model": "m",
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": format!("Tell me about request {id}.")}],
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let response = match client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-request-id", id)
        .json(&body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(err) => return Answer::Refused(error_chain(&err)),
    };
    let status = response.status();
    let text = match response.text().await {
        Ok(text) => text,
        Err(err) => return Answer::Broken(format!("{status}, body cut: {}", error_chain(&err))),
    };
    if status != 200 {
        return Answer::Broken(format!("{status}: {text}"));
    }
    let checked = if stream {
        whole_stream(&text)
    } else {
        whole_completion(&text)
    };
    match checked {
        Ok((prompt, completion)) => Answer::Complete(prompt, completion),
        Err(problem) => Answer::Broken(problem),
    }
}

fn usage_of(value: &Value) -> Option<(u64, u64)> {
    Some((
        value.get("prompt_tokens")?.as_u64()?,
        value.get("completion_tokens")?.as_u64()?,
    ))
}

/// A stream that ends with `[DONE]`, whose chunks are all JSON, carry text, and report usage.
fn whole_stream(text: &str) -> Result<(u64, u64), String> {
    let body = text
        .strip_suffix("data: [DONE]\n\n")
        .ok_or_else(|| format!("the stream did not end with [DONE]: {text}"))?;
    let mut content = String::new();
    let mut usage = None;
    for data in common::sse_data(body) {
        let chunk: Value = serde_json::from_str(&data).map_err(|e| format!("{e}: {data}"))?;
        if chunk.get("error").is_some() {
            return Err(format!("an error event: {data}"));
        }
        if let Some(piece) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) {
            content.push_str(piece);
        }
        if let Some(reported) = chunk.get("usage").and_then(usage_of) {
            usage = Some(reported);
        }
    }
    if content.is_empty() {
        return Err(format!("a stream without text: {text}"));
    }
    usage.ok_or_else(|| format!("a stream without usage: {text}"))
}

fn whole_completion(text: &str) -> Result<(u64, u64), String> {
    let completion: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
    let content = completion.pointer("/choices/0/message/content").and_then(Value::as_str);
    if content.is_none_or(str::is_empty) {
        return Err(format!("a completion without text: {text}"));
    }
    completion
        .get("usage")
        .and_then(usage_of)
        .ok_or_else(|| format!("a completion without usage: {text}"))
}

/// What a new connection made after the signal got.
#[derive(Debug)]
enum Probe {
    Answered(u16),
    Refused(Instant),
    Hung,
}

/// Opens a new connection every 50 ms until `stop` and asks for `/healthz` on it.
async fn probe_new_connections(port: u16, stop: Arc<AtomicBool>) -> Vec<Probe> {
    let mut probes = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let attempt = async {
            let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: drill\r\nconnection: close\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let probe = match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Err(_) => Probe::Hung,
            // Refused, or reset by the closing listener: either way told at once.
            Ok(Err(_)) => Probe::Refused(Instant::now()),
            Ok(Ok(answer)) if answer.is_empty() => Probe::Refused(Instant::now()),
            Ok(Ok(answer)) => {
                let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
                Probe::Answered(head.strip_prefix("HTTP/1.1 ").and_then(|s| s.parse().ok()).unwrap_or(0))
            }
        };
        probes.push(probe);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probes
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_accepted_requests_and_flushes_the_ledger() {
    const CLIENTS: usize = 16;
    /// Requests started this long before the signal were certainly read by the gateway.
    const MARGIN: Duration = Duration::from_millis(250);
    const UPSTREAM_KEY: &str = "sk-upstream-drill";
    let _serial = ONE_AT_A_TIME.lock().await;

    // Every request waits 600 ms for its head, and a stream then sends 8 to 32 tokens at 30 a second: at
    // any moment most clients have a request in flight.
    let sim = common::SimServer::start(SimConfig {
        latency: Duration::from_millis(600),
        tokens_per_sec: Some(30.0),
        reply_tokens: 64,
        ..SimConfig::default()
    })
    .await;
    let dir = common::scratch_dir("drill-sigterm");
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    let key = {
        let store = Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        store.create_tenant(&NewTenant::new("drill")).await.unwrap();
        let created = store.create_key("drill", Some("load"), None).await.unwrap();
        store.close().await;
        created.key.expose_secret().to_owned()
    };
    let port = common::free_port();
    let provider = format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{}\"\nkeys = [\"{UPSTREAM_KEY}\"]\n",
        sim.base_url()
    );
    let config = write_config(&dir, port, &provider, "");
    let mut gateway = BinProcess::spawn(&["serve", "--config", config.to_str().unwrap()], "info");
    gateway.wait_healthy(port).await;

    let base = format!("http://127.0.0.1:{port}");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(drive(c, base.clone(), key.clone(), Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let signalled = Instant::now();
    gateway.terminate();
    let probes = tokio::spawn(probe_new_connections(port, Arc::clone(&stop)));
    let exit = gateway.wait_exit(Duration::from_secs(10)).await;
    let exited = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let Some(exit) = exit else {
        panic!(
            "the gateway did not exit within 10 s of SIGTERM:\n{}",
            gateway.log_tail(30)
        );
    };
    assert!(exit.success(), "{exit}:\n{}", gateway.log_tail(30));
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(
            tokio::time::timeout(Duration::from_secs(15), client)
                .await
                .expect("every client finishes")
                .unwrap(),
        );
    }
    let probes = probes.await.unwrap();

    // Every answer was whole; a request without an answer was refused at once, and only if it may have
    // reached the gateway after the signal.
    let broken: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.answer, Answer::Broken(_)))
        .collect();
    assert!(
        broken.is_empty(),
        "broken answers: {broken:#?}\n{}",
        gateway.log_tail(30)
    );
    let refused_early: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.answer, Answer::Refused(_)) && o.started + MARGIN < signalled)
        .collect();
    assert!(
        refused_early.is_empty(),
        "requests sent well before the signal got no answer: {refused_early:#?}"
    );
    let completed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.answer, Answer::Complete(..)))
        .collect();
    // The drill is only a drill if requests of both kinds were in flight when the signal came.
    let in_flight: Vec<&&Outcome> = completed
        .iter()
        .filter(|o| o.started + MARGIN < signalled && o.ended > signalled)
        .collect();
    assert!(
        in_flight.len() >= CLIENTS / 2 && in_flight.iter().any(|o| o.stream) && in_flight.iter().any(|o| !o.stream),
        "too few requests in flight at the signal to test anything: {in_flight:#?}"
    );

    // New connections after the signal were refused or answered, never left hanging; and the listener
    // closed while accepted requests were still being served.
    assert!(
        probes
            .iter()
            .all(|p| matches!(p, Probe::Refused(_) | Probe::Answered(200))),
        "{probes:?}"
    );
    let first_refusal = probes.iter().find_map(|p| match p {
        Probe::Refused(at) => Some(*at),
        _ => None,
    });
    let last_answer = completed.iter().map(|o| o.ended).max().unwrap();
    assert!(
        first_refusal.is_some_and(|at| at < last_answer),
        "new connections were still accepted while draining: {probes:?}"
    );
    assert!(
        !gateway.logged("still in flight after the shutdown grace period"),
        "{}",
        gateway.log_tail(30)
    );

    // The upstream's side: it served exactly the completed requests, every stream to its end.
    let stats = sim.stats();
    let upstream = &stats.keys[&Simulator::key_label(UPSTREAM_KEY)];
    let streams = completed.iter().filter(|o| o.stream).count() as u64;
    assert_eq!(upstream.requests, completed.len() as u64, "{stats:?}");
    assert_eq!(
        (stats.streams_started, stats.streams_completed, stats.streams_cancelled),
        (streams, streams, 0),
        "{stats:?}"
    );
    let told = completed.iter().fold((0, 0), |(p, c), o| match o.answer {
        Answer::Complete(prompt, completion) => (p + prompt, c + completion),
        _ => (p, c),
    });
    assert_eq!(told, (upstream.prompt_tokens, upstream.completion_tokens));

    // The ledger, read after the process is gone: one row per completed request, with the upstream's
    // token counts, in the raw rows and in the rollups alike; nothing left in the spool.
    let store = Store::open(&url).await.unwrap();
    for rows in [
        store
            .spend_from_ledger(&SpendFilter::new(GroupBy::Tenant))
            .await
            .unwrap(),
        store.spend(&SpendFilter::new(GroupBy::Tenant)).await.unwrap(),
    ] {
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = &rows[0];
        assert_eq!(row.group, "drill");
        assert_eq!(row.requests, completed.len() as i64, "{rows:?}");
        assert_eq!(
            (row.prompt_tokens() as u64, row.completion_tokens() as u64),
            (upstream.prompt_tokens, upstream.completion_tokens),
            "{rows:?}"
        );
    }
    // Each completed request is in the ledger once, under the request id the client sent.
    let mut recorded: HashMap<String, usize> = HashMap::new();
    let mut export = store.export(ExportFilter::default());
    while let Some(rows) = export.next_page().await.unwrap() {
        for row in rows {
            *recorded.entry(row.client_request_id.unwrap_or_default()).or_default() += 1;
        }
    }
    for outcome in &completed {
        assert_eq!(
            recorded.get(&outcome.id),
            Some(&1),
            "completed request {} in the ledger once",
            outcome.id
        );
    }
    store.close().await;
    for suffix in ["", ".replaying", ".rejected"] {
        let path = dir.join(format!("usage.spool{suffix}"));
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        assert_eq!(len, 0, "{} holds rows after a clean shutdown", path.display());
    }
    eprintln!(
        "sigterm drill: {} answers ({} streams), {} in flight at the signal, {} refused after it; exit {} ms \
         after the signal",
        completed.len(),
        streams,
        in_flight.len(),
        outcomes.len() - completed.len(),
        (exited - signalled).as_millis()
    );
}

// === Drill 2: a slow client reading a fast stream ===

/// Content chunks of the big stream, and the text each carries: 32 MiB in all.
const CHUNKS: usize = 1024;
const PAYLOAD: usize = 32 * 1024;
/// The most the gateway process may hold of a stream its client is not reading: a few chunks and its
/// HTTP buffers, a small fraction of the stream.
const GATEWAY_HOLDS_AT_MOST: u64 = 3 * 1024 * 1024;

fn chunk_text(i: usize) -> String {
    let unit = format!("[{i:05}] the quick brown fox jumps over the lazy dog. ");
    let mut text = unit.repeat(PAYLOAD / unit.len() + 1);
    text.truncate(PAYLOAD);
    text
}

/// The data of the stream's events as the upstream sends them, and whether the gateway forwards each to a
/// client that did not ask for usage.
fn firehose_events(chunks: usize) -> impl Iterator<Item = (String, bool)> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-firehose", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let usage = json!({"id": "chatcmpl-firehose", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": chunks * 4096, "total_tokens": 12 + chunks * 4096}});
    (0..chunks)
        .map(move |i| (chunk(json!({"content": chunk_text(i)}), Value::Null), true))
        .chain([
            (chunk(json!({}), json!("stop")), true),
            (usage.to_string(), false),
            ("[DONE]".to_owned(), false),
        ])
}

/// An OpenAI-compatible upstream that streams a big answer as fast as it is taken, counting the bytes
/// handed to its connection. A request whose message says "warm up" gets a short answer.
async fn firehose(State(sent): State<Arc<AtomicU64>>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap();
    let warm_up = request.to_string().contains("warm up");
    let events = firehose_events(if warm_up { 4 } else { CHUNKS }).map(move |(data, _)| {
        let frame = Bytes::from(format!("data: {data}\n\n"));
        sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok::<_, Infallible>(frame)
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures_util::stream::iter(events)))
        .unwrap()
}

/// Waits until `sent` has not moved for 500 ms (at most 10 s) and returns it.
async fn once_still(sent: &AtomicU64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = sent.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = sent.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_millis(500) {
            break;
        }
    }
    last
}

/// The loopback ports of the drill's connections.
#[derive(Clone, Copy)]
struct Ports {
    upstream: u16,
    gateway: u16,
    client: u16,
}

/// Bytes of the stream the kernel holds in socket queues between the upstream and the client: the
/// upstream's send queue, the gateway's receive queue from the upstream and send queue to the client, and
/// the client's receive queue. From `/proc/net/tcp` (Linux); `None` elsewhere.
fn kernel_held(ports: Ports) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    let mut held = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Established connections only: a listener's queues count connections, not bytes.
        if fields.len() < 5 || fields[3] != "01" {
            continue;
        }
        let (local, remote) = (port(fields[1])?, port(fields[2])?);
        let (tx, rx) = fields[4].split_once(':')?;
        let (tx, rx) = (u64::from_str_radix(tx, 16).ok()?, u64::from_str_radix(rx, 16).ok()?);
        if local == ports.upstream || (local == ports.gateway && remote == ports.client) {
            held += tx;
        }
        if remote == ports.upstream || local == ports.client {
            held += rx;
        }
    }
    Some(held)
}

/// The stream's position while the client was not reading.
#[derive(Debug, Clone, Copy)]
struct Stall {
    /// Bytes the upstream handed to its connection.
    sent: u64,
    /// Bytes the client had read (response head included).
    received: u64,
    /// Bytes in the kernel's socket queues between them.
    kernel: Option<u64>,
    /// The gateway's resident memory, KiB.
    rss: Option<u64>,
}

impl Stall {
    /// What the gateway process itself held: everything the upstream wrote that is neither read by the
    /// client nor in a socket queue (the upstream's own HTTP buffer included, so an overestimate).
    fn gateway_held(&self) -> Option<u64> {
        Some(self.sent.saturating_sub(self.received + self.kernel?))
    }
}

/// What the slow-client drill saw.
#[derive(Debug)]
struct SlowClientRun {
    stream_bytes: u64,
    stalls: Vec<Stall>,
    rss_before: Option<u64>,
    rss_peak: Option<u64>,
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size = std::str::from_utf8(&body[..line_end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        assert_eq!(&body[size..size + 2], b"\r\n", "a chunk ends with CRLF");
        body = &body[size + 2..];
    }
}

/// The real binary between a fast upstream and a client that reads nothing after the response head until
/// the upstream stops, then reads a little at a time, stops again halfway, and finally reads everything.
/// Checks the client got the stream byte for byte, and returns the measurements.
async fn slow_client_drill() -> SlowClientRun {
    // The upstream's socket buffer is kept small so what it manages to write shows what the gateway took.
    let sent = Arc::new(AtomicU64::new(0));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let app = axum::Router::new()
        .fallback(axum::routing::post(firehose))
        .with_state(Arc::clone(&sent));
    let upstream = common::serve_listener(socket.listen(64).unwrap(), app, Duration::from_secs(1));

    let dir = common::scratch_dir("drill-slow-client");
    let port = common::free_port();
    let provider = format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai_compatible\"\nbase_url = \"{}/v1\"\nkeys = [\"sk-up\"]\n",
        upstream.url()
    );
    let config = write_config(&dir, port, &provider, &format!("keys = [\"{}\"]", common::CLIENT_KEY));
    let mut gateway = BinProcess::spawn(&["serve", "--config", config.to_str().unwrap()], "warn");
    gateway.wait_healthy(port).await;
    let stream_bytes: u64 = firehose_events(CHUNKS).map(|(data, _)| data.len() as u64 + 8).sum();

    // A short stream first, so the gateway's memory is measured warm.
    let warm = common::client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .bearer_auth(common::CLIENT_KEY)
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "warm up"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    assert!(warm.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    let rss_before = gateway.rss_kib();
    sent.store(0, Ordering::Relaxed);

    // The client: a small receive buffer, and after the response head it stops reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut tcp = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let ports = Ports {
        upstream: upstream.addr.port(),
        gateway: port,
        client: tcp.local_addr().unwrap().port(),
    };
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "Pour it all out."}]})
        .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        common::CLIENT_KEY,
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::with_capacity(stream_bytes as usize + 1024 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        let n = tcp.read(&mut buf[..1024]).await.unwrap();
        assert!(n > 0, "the gateway closed before the response head");
        received.extend_from_slice(&buf[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");

    let mut stalls = Vec::new();
    let mut rss_peak = rss_before;
    let mut reads = 0u64;
    loop {
        // Stalled at the start and again halfway.
        if stalls.is_empty() || (stalls.len() == 1 && received.len() as u64 > stream_bytes / 2) {
            let at = once_still(&sent).await;
            stalls.push(Stall {
                sent: at,
                received: received.len() as u64,
                kernel: kernel_held(ports),
                rss: gateway.rss_kib(),
            });
        }
        // A few hundred bytes at a time at first, then as fast as it comes.
        let size = if reads < 40 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            512
        } else {
            buf.len()
        };
        let n = tcp.read(&mut buf[..size]).await.unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        reads += 1;
        if reads.is_multiple_of(64) {
            rss_peak = rss_peak.max(gateway.rss_kib());
        }
    }

    // The client got the stream whole: every chunk as the upstream sent it, in order, then [DONE].
    let events = dechunk(&received[head_end..]);
    let mut expected = Vec::with_capacity(events.len());
    for (data, forwarded) in firehose_events(CHUNKS) {
        if forwarded {
            expected.extend_from_slice(format!("data: {data}\n\n").as_bytes());
        }
    }
    expected.extend_from_slice(b"data: [DONE]\n\n");
    if events != expected {
        let at = events.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "the stream differs from what the upstream sent: {} bytes instead of {}, first difference at {at:?}",
            events.len(),
            expected.len()
        );
    }
    assert_eq!(sent.load(Ordering::Relaxed), stream_bytes);
    let run = SlowClientRun {
        stream_bytes,
        stalls,
        rss_before,
        rss_peak,
    };
    eprintln!("slow client drill: {run:?}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_back_pressures_the_upstream_and_gets_the_whole_stream() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let run = slow_client_drill().await;
    assert_eq!(run.stalls.len(), 2, "{run:?}");
    for stall in &run.stalls {
        // Causal: had the gateway taken the stream regardless of its client, the upstream would have
        // written all of it; it stopped far short, and what the gateway itself held was a few chunks.
        assert!(
            stall.sent < stall.received + run.stream_bytes / 2,
            "the upstream wrote {} of {} bytes while the client had read {}: nothing held it back",
            stall.sent,
            run.stream_bytes,
            stall.received
        );
        if let Some(held) = stall.gateway_held() {
            assert!(
                held < GATEWAY_HOLDS_AT_MOST,
                "the gateway held {held} bytes of a stream its client was not reading: {stall:?}"
            );
        }
    }
    // Nothing the size of the stream accumulated while the client read nothing.
    let first = run.stalls[0];
    if let (Some(before), Some(stalled)) = (run.rss_before, first.rss) {
        assert!(
            (stalled.saturating_sub(before)) * 1024 < run.stream_bytes / 2,
            "the gateway's memory grew from {before} KiB to {stalled} KiB while the client read nothing"
        );
    }
}

/// A stream's length must not set the gateway's memory: what it holds of a stream should be the few
/// chunks in transit, not everything sent so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_does_not_accumulate_in_the_gateway() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let run = slow_client_drill().await;
    if let (Some(before), Some(peak)) = (run.rss_before, run.rss_peak) {
        assert!(
            peak.saturating_sub(before) * 1024 < run.stream_bytes / 4,
            "the gateway's memory grew from {before} KiB to {peak} KiB over a {} byte stream",
            run.stream_bytes
        );
    }
}
