//! The shared upstream client over real sockets: HTTPS to an upstream whose certificate a test authority
//! signed (trusted only when the client is told to; refused otherwise), and both ways through a proxy:
//! plain HTTP sent to the proxy in absolute form with its credentials, HTTPS through a `CONNECT` tunnel
//! with TLS end to end inside it; the connection pool: connections reused, and not reused once given up,
//! closed or expired; and connecting: refused, and not made within the connect timeout. The certificates
//! are in `tests/fixtures/tls` (valid until 2126).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use sluice_api::{ChatCompletionRequest, TokenUsage};
use sluice_providers::{
    ChatCall, ChatProvider, ClientSettings, OpenAiAdapter, OpenAiFlavor, ProviderError, ReplyBody, TimeoutPhase,
    Timeouts, UpstreamClient, UpstreamKey,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const COMPLETION: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
const STREAM: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\ndata: [DONE]\n\n";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tls")
        .join(name)
}

fn test_authority() -> CertificateDer<'static> {
    CertificateDer::from_pem_file(fixture("ca.pem")).unwrap()
}

/// The request heads an in-test server received: its target as written, and its headers.
type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

/// Answers one OpenAI chat call: a stream when the body asks for one, else a complete body.
async fn answer(request: Request<Incoming>, seen: Seen) -> Result<Response<Full<Bytes>>, Infallible> {
    let (head, body) = request.into_parts();
    seen.lock().unwrap().push((head.uri.to_string(), head.headers));
    let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
    let stream = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["stream"] == true;
    let (kind, text) = if stream {
        ("text/event-stream", STREAM)
    } else {
        ("application/json", COMPLETION)
    };
    Ok(Response::builder()
        .header("content-type", kind)
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .unwrap())
}

/// Serves `answer` on every connection `accept` yields, over TLS with the test certificate when `tls`.
async fn upstream(tls: bool) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let acceptor = tls.then(|| {
        let certs = CertificateDer::pem_file_iter(fixture("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let served = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, seen) = (acceptor.clone(), served.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |r| answer(r, seen.clone()));
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    // A handshake the client gives up on (an unknown authority) just ends the connection.
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(tls), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A proxy that opens `CONNECT` tunnels, recording each request head it read.
async fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = heads.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let heads = recorded.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if client.read(&mut byte).await.unwrap() == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let target = head.split(' ').nth(1).unwrap().to_owned();
                heads.lock().unwrap().push(head);
                let mut server = TcpStream::connect(target.replace("localhost", "127.0.0.1"))
                    .await
                    .unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, heads)
}

fn adapter(client: UpstreamClient, base_url: &str) -> OpenAiAdapter {
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(10),
        idle: Duration::from_secs(10),
    };
    OpenAiAdapter::new(client, base_url, OpenAiFlavor::OpenAi, timeouts, true)
}

/// A chat call's answer, streamed or not, its body still to read.
async fn answer_of(adapter: &OpenAiAdapter, stream: bool) -> Result<ReplyBody, ProviderError> {
    let request: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream
    }))
    .unwrap();
    let key = UpstreamKey::new("k#0", SecretString::from("sk-upstream"));
    let reply = adapter
        .chat(ChatCall {
            request: &request,
            model: "m",
            key: &key,
            default_max_tokens: None,
            drop_unsupported: false,
        })
        .await?;
    Ok(reply.body)
}

/// One chat call, streamed or not: the usage it reported.
async fn call(adapter: &OpenAiAdapter, stream: bool) -> Result<Option<TokenUsage>, ProviderError> {
    match answer_of(adapter, stream).await? {
        ReplyBody::Complete { usage, .. } => Ok(usage),
        ReplyBody::Stream(mut events) => {
            let mut usage = None;
            while let Some(event) = events.next().await {
                usage = usage.or(event?.usage);
            }
            Ok(usage)
        }
    }
}

fn client(proxies: Option<Matcher>, trusted: bool) -> UpstreamClient {
    UpstreamClient::new(ClientSettings {
        connect_timeout: Some(Duration::from_secs(5)),
        proxies,
        extra_roots: if trusted { vec![test_authority()] } else { Vec::new() },
    })
    .unwrap()
}

#[tokio::test]
async fn https_upstreams_are_verified_then_called() {
    let (addr, seen) = upstream(true).await;
    let base = format!("https://localhost:{}/v1", addr.port());

    let trusting = adapter(client(None, true), &base);
    assert_eq!(call(&trusting, false).await.unwrap(), Some(TokenUsage::new(5, 1)));
    assert_eq!(call(&trusting, true).await.unwrap(), Some(TokenUsage::new(5, 1)));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let (target, headers) = &seen[0];
        assert_eq!(target, "/v1/chat/completions", "origin form to the upstream itself");
        assert_eq!(headers["authorization"], "Bearer sk-upstream");
        assert_eq!(headers["host"], format!("localhost:{}", addr.port()));
        assert!(headers["user-agent"].to_str().unwrap().starts_with("sluice/"));
        assert!(headers.get("proxy-authorization").is_none());
    }

    // The platform's trust store alone does not know the test authority: the handshake fails before
    // anything is sent, so the router may fail over.
    let wary = adapter(client(None, false), &base);
    match call(&wary, false).await {
        Err(ProviderError::Connect { detail }) => assert!(detail.contains("certificate"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn plain_http_goes_to_the_proxy_in_absolute_form_with_its_credentials() {
    let (proxy, seen) = upstream(false).await;
    let proxies = Matcher::builder()
        .http(format!("http://sluice:secret@{proxy}"))
        .no("direct.test")
        .build();
    // Nothing listens on the upstream's name: only the proxy can answer.
    let proxied = adapter(client(Some(proxies), false), "http://upstream.test:8000/v1");
    assert_eq!(call(&proxied, true).await.unwrap(), Some(TokenUsage::new(5, 1)));
    let seen = seen.lock().unwrap();
    let (target, headers) = &seen[0];
    assert_eq!(target, "http://upstream.test:8000/v1/chat/completions");
    assert_eq!(headers["proxy-authorization"], "Basic c2x1aWNlOnNlY3JldA==");
    assert_eq!(headers["authorization"], "Bearer sk-upstream");
}

#[tokio::test]
async fn https_goes_through_a_connect_tunnel_and_no_proxy_hosts_go_direct() {
    let (addr, seen) = upstream(true).await;
    let (proxy, heads) = connect_proxy().await;
    let proxies = Matcher::builder()
        .https(format!("http://sluice:secret@{proxy}"))
        .no("127.0.0.1")
        .build();
    let client = client(Some(proxies), true);

    let tunnelled = adapter(client.clone(), &format!("https://localhost:{}/v1", addr.port()));
    assert_eq!(call(&tunnelled, false).await.unwrap(), Some(TokenUsage::new(5, 1)));
    {
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 1);
        assert!(
            heads[0].starts_with(&format!("CONNECT localhost:{} HTTP/1.1\r\n", addr.port())),
            "{}",
            heads[0]
        );
        assert!(heads[0].contains("Basic c2x1aWNlOnNlY3JldA=="), "{}", heads[0]);
        let seen = seen.lock().unwrap();
        let (target, headers) = &seen[0];
        assert_eq!(
            target, "/v1/chat/completions",
            "inside the tunnel the request is the upstream's own"
        );
        assert!(
            headers.get("proxy-authorization").is_none(),
            "the credentials stay with the proxy"
        );
    }

    // 127.0.0.1 is among the proxy's exceptions: the call goes straight to the upstream.
    let direct = adapter(client, &format!("https://127.0.0.1:{}/v1", addr.port()));
    assert!(call(&direct, false).await.is_ok());
    assert_eq!(heads.lock().unwrap().len(), 1, "no tunnel for an exception");
}

/// How [`counting_upstream`] treats its connections.
#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    /// Every answer whole, the connection kept open.
    KeepsAlive,
    /// The connection closed after the first answer without saying so, as an upstream whose idle
    /// timeout is shorter than the gateway's does.
    ClosesWhenIdle,
    /// A stream's first event, then nothing until the client closes the connection.
    Stalls,
}

/// A raw HTTP/1.1 upstream that counts the connections it accepts and answers every request on them
/// (a stream when it asks for one) as `kind` says.
async fn counting_upstream(kind: Upstream) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: its head, then as many body bytes as it says.
                    let head_end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let mut more = [0u8; 4096];
                        match tcp.read(&mut more).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&more[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        let mut more = [0u8; 4096];
                        match tcp.read(&mut more).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&more[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
                    buf.drain(..head_end + length);
                    let stream = body.contains("\"stream\":true");
                    if stream && kind == Upstream::Stalls {
                        let first = STREAM.split_inclusive("\n\n").next().unwrap();
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
                            first.len()
                        );
                        let _ = tcp.write_all(answer.as_bytes()).await;
                        while !matches!(tcp.read(&mut [0u8; 64]).await, Ok(0) | Err(_)) {}
                        return;
                    }
                    let (kind_header, text) = if stream {
                        ("text/event-stream", STREAM)
                    } else {
                        ("application/json", COMPLETION)
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {kind_header}\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if tcp.write_all(answer.as_bytes()).await.is_err() || kind == Upstream::ClosesWhenIdle {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn accepted(counter: &std::sync::atomic::AtomicUsize) -> usize {
    counter.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn answers_read_to_the_end_leave_their_connection_for_the_next_call() {
    let (addr, connections) = counting_upstream(Upstream::KeepsAlive).await;
    let adapter = adapter(client(None, false), &format!("http://{addr}/v1"));
    for stream in [false, true, false, true, true] {
        assert_eq!(call(&adapter, stream).await.unwrap(), Some(TokenUsage::new(5, 1)));
    }
    assert_eq!(
        accepted(&connections),
        1,
        "five calls, one after another, on one connection"
    );
}

#[tokio::test]
async fn a_stream_given_up_before_the_rest_arrived_closes_its_connection() {
    let (addr, connections) = counting_upstream(Upstream::Stalls).await;
    let adapter = adapter(client(None, false), &format!("http://{addr}/v1"));
    let ReplyBody::Stream(mut events) = answer_of(&adapter, true).await.unwrap() else {
        panic!("not a stream")
    };
    assert!(events.next().await.unwrap().is_ok());
    drop(events);
    // The rest of the first answer is still to come on that connection: it is not used again.
    assert_eq!(call(&adapter, false).await.unwrap(), Some(TokenUsage::new(5, 1)));
    assert_eq!(accepted(&connections), 2);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let (addr, connections) = counting_upstream(Upstream::ClosesWhenIdle).await;
    let adapter = adapter(client(None, false), &format!("http://{addr}/v1"));
    for round in 1..=3 {
        assert_eq!(
            call(&adapter, round % 2 == 0).await.unwrap(),
            Some(TokenUsage::new(5, 1))
        );
        // The upstream closes right after its answer; the runtime learns of it the next time it looks
        // at its sockets, which a short sleep lets it do.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        accepted(&connections),
        3,
        "each call on a fresh connection, none failed"
    );
}

#[tokio::test]
async fn connections_idle_past_the_timeout_are_not_used() {
    let (addr, connections) = counting_upstream(Upstream::KeepsAlive).await;
    let adapter = adapter(client(None, false), &format!("http://{addr}/v1"));
    assert!(call(&adapter, false).await.is_ok());
    assert!(call(&adapter, false).await.is_ok());
    assert_eq!(accepted(&connections), 1);
    // Past the 90 seconds an idle connection is kept (reqwest's default, kept).
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(91)).await;
    tokio::time::resume();
    assert!(call(&adapter, true).await.is_ok());
    assert_eq!(accepted(&connections), 2);
}

/// A listener that never accepts, its queue of accepted connections full: the kernel drops the SYN of
/// any further connection, so connecting to it waits until the connect timeout. Returns the address and
/// the connections that fill the queue (they must stay open).
async fn listener_that_does_not_answer() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    // A backlog of 1 holds one or two connections, by kernel; connect until one does not complete.
    loop {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(stream) => queued.push(stream.unwrap()),
            Err(_) => break,
        }
        assert!(queued.len() < 16, "the listener's queue never filled");
    }
    (addr, listener, queued)
}

#[tokio::test]
async fn a_connection_not_made_within_the_connect_timeout_is_a_connect_timeout() {
    let (addr, _listener, _queued) = listener_that_does_not_answer().await;
    let client = UpstreamClient::new(ClientSettings {
        connect_timeout: Some(Duration::from_millis(300)),
        proxies: None,
        extra_roots: Vec::new(),
    })
    .unwrap();
    let started = std::time::Instant::now();
    let err = call(&adapter(client, &format!("http://{addr}/v1")), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Timeout { phase: TimeoutPhase::Connect, after } if after == Duration::from_millis(300)),
        "{err:?}"
    );
    // The timeout, not the kernel's SYN retries (the first is after a second), ended the wait.
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let err = call(&adapter(client(None, false), &format!("http://{addr}/v1")), false)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Connect { .. }), "{err:?}");
}
