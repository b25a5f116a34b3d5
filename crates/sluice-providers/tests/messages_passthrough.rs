//! The Anthropic Messages pass-through over real HTTP, against an in-test upstream that records the bytes
//! and headers it received and answers with Anthropic's documented bodies and streams: the body arrives
//! byte for byte but the model, `anthropic-version` and `anthropic-beta` are forwarded and nothing else of
//! the client's, answers come back byte for byte with their usage read out (a stream sent one byte per
//! write), and failures are classified as the Anthropic adapter classifies them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use secrecy::SecretString;
use sluice_api::TokenUsage;
use sluice_providers::{
    AnthropicAdapter, ChatProvider, MessagesBody, MessagesCall, OpenAiAdapter, OpenAiFlavor, ProviderError, RawFrame,
    Timeouts, UpstreamKey,
};

fn fixture(path: &str) -> Bytes {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path);
    Bytes::from(std::fs::read(&file).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// What the upstream answers.
#[derive(Clone)]
enum Reply {
    /// A status, extra headers and a JSON body.
    Json(u16, Vec<(&'static str, &'static str)>, Bytes),
    /// An SSE body written one byte at a time.
    Sse(Bytes),
}

/// One request the upstream received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Upstream {
    received: Arc<Mutex<Vec<Received>>>,
    reply: Arc<Mutex<Reply>>,
}

async fn answer(State(upstream): State<Upstream>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    upstream.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let reply = upstream.reply.lock().unwrap().clone();
    match reply {
        Reply::Json(status, headers, body) => {
            let mut response = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header("content-type", "application/json");
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
        Reply::Sse(body) => {
            let bytes: Vec<Result<Bytes, Infallible>> =
                body.iter().map(|b| Ok(Bytes::copy_from_slice(&[*b]))).collect();
            Response::builder()
                .header("content-type", "text/event-stream; charset=utf-8")
                .body(Body::from_stream(futures_util::stream::iter(bytes)))
                .unwrap()
        }
    }
}

struct Harness {
    upstream: Upstream,
    adapter: AnthropicAdapter,
    key: UpstreamKey,
}

impl Harness {
    async fn start(reply: Reply) -> Self {
        let upstream = Upstream {
            received: Arc::default(),
            reply: Arc::new(Mutex::new(reply)),
        };
        let app = Router::new().fallback(answer).with_state(upstream.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(5),
            idle: Duration::from_secs(5),
        };
        Self {
            upstream,
            adapter: AnthropicAdapter::new(
                sluice_providers::UpstreamClient::new(sluice_providers::ClientSettings::default()).unwrap(),
                &url,
                timeouts,
            ),
            key: UpstreamKey::new("anthropic#0", SecretString::from("sk-ant-upstream".to_owned())),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.upstream.received.lock().unwrap().clone()
    }

    async fn messages(&self, body: &Bytes, headers: &HeaderMap) -> Result<MessagesBody, ProviderError> {
        let passthrough = self
            .adapter
            .messages_passthrough()
            .expect("Anthropic passes Messages through");
        let call = MessagesCall {
            body,
            model: "claude-sonnet-4-5-20250929",
            key: &self.key,
            client_headers: headers,
        };
        passthrough.messages(call).await.map(|reply| reply.body)
    }
}

/// The headers Claude Code sends, with its own credentials and one header nobody should see upstream.
fn client_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    headers.append(
        "anthropic-beta",
        HeaderValue::from_static("interleaved-thinking-2025-05-14"),
    );
    headers.append(
        "anthropic-beta",
        HeaderValue::from_static("context-1m-2025-08-07,fine-grained-tool-streaming-2025-05-14"),
    );
    headers.insert("x-api-key", HeaderValue::from_static("sk-sluice-tenant"));
    headers.insert("authorization", HeaderValue::from_static("Bearer sk-sluice-tenant"));
    headers.insert("x-stainless-session", HeaderValue::from_static("private"));
    headers
}

async fn collect(body: MessagesBody) -> Vec<Result<RawFrame, String>> {
    match body {
        MessagesBody::Stream(frames) => frames.map(|item| item.map_err(|e| format!("{e:?}"))).collect().await,
        MessagesBody::Complete { .. } => panic!("expected a stream"),
    }
}

#[tokio::test]
async fn the_body_goes_byte_for_byte_but_the_model_with_the_anthropic_headers() {
    let answer = fixture("anthropic-messages/message_cache_usage.json");
    let harness = Harness::start(Reply::Json(200, vec![], answer.clone())).await;
    // Thinking blocks with their signature, a tool result with a non-ASCII character, pretty-printed.
    let body = fixture("anthropic-messages/thinking_tool_result_request.json");
    let reply = harness.messages(&body, &client_headers()).await.unwrap();

    let received = harness.received();
    assert_eq!(received.len(), 1);
    let sent = &received[0];
    assert_eq!(sent.path, "/v1/messages");
    let expected = String::from_utf8(body.to_vec()).unwrap().replacen(
        "\"model\": \"claude-sonnet-4-5\"",
        "\"model\": \"claude-sonnet-4-5-20250929\"",
        1,
    );
    assert_eq!(
        std::str::from_utf8(&sent.body).unwrap(),
        expected,
        "byte for byte but the model"
    );
    assert!(expected.contains("\"signature\": \"BDaL4VrbR2Oj0hO4XpJxT28J5TILnCrrUXoKiiNBZW9P+nr8XSj1zuZzAl4egiCCpQNvfyUuFFJP5CncdYZEQPPmLxYsNrcs....\""));

    assert_eq!(
        sent.headers["x-api-key"], "sk-ant-upstream",
        "the upstream key, not the tenant's"
    );
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    let betas: Vec<&str> = sent
        .headers
        .get_all("anthropic-beta")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        betas,
        [
            "interleaved-thinking-2025-05-14",
            "context-1m-2025-08-07,fine-grained-tool-streaming-2025-05-14"
        ]
    );
    assert!(sent.headers.get("authorization").is_none());
    assert!(sent.headers.get("x-stainless-session").is_none());
    assert_eq!(sent.headers["content-type"], "application/json");

    match reply {
        MessagesBody::Complete { body, usage } => {
            assert_eq!(body, answer, "the answer byte for byte");
            assert_eq!(
                usage,
                Some(TokenUsage {
                    input: 2048,
                    cache_read: 1800,
                    cache_write_5m: 148,
                    cache_write_1h: 100,
                    output: 503,
                    reasoning: 0,
                })
            );
        }
        other => panic!("{other:?}"),
    }

    // A client that sends no version gets the one the adapter follows.
    harness.messages(&body, &HeaderMap::new()).await.unwrap();
    let sent = harness.received().pop().unwrap();
    assert_eq!(sent.headers["anthropic-version"], AnthropicAdapter::API_VERSION);
    assert!(sent.headers.get("anthropic-beta").is_none());
}

#[tokio::test]
async fn a_stream_comes_back_frame_by_frame_with_its_usage() {
    let transcript = fixture("anthropic-messages/stream_thinking.sse");
    let harness = Harness::start(Reply::Sse(transcript.clone())).await;
    let body = Bytes::from_static(
        br#"{"model":"claude-sonnet-4-5","max_tokens":16000,"stream":true,"thinking":{"type":"enabled","budget_tokens":10000},"messages":[{"role":"user","content":"GCD of 1071 and 462?"}]}"#,
    );
    let frames = collect(harness.messages(&body, &client_headers()).await.unwrap()).await;
    assert!(frames.iter().all(Result::is_ok), "{frames:?}");
    let frames: Vec<RawFrame> = frames.into_iter().map(Result::unwrap).collect();
    assert_eq!(frames.len(), 11, "one frame per event");
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.bytes.to_vec()).collect();
    assert_eq!(joined, transcript, "every byte of the stream as the vendor sent it");
    assert!(
        frames
            .iter()
            .all(|f| f.bytes.starts_with(b"event: ") && f.bytes.ends_with(b"\n\n"))
    );
    let usage = frames.iter().filter_map(|f| f.usage).last();
    assert_eq!(
        usage,
        Some(TokenUsage {
            input: 35,
            cache_read: 4000,
            cache_write_5m: 200,
            cache_write_1h: 1000,
            output: 220,
            reasoning: 180,
        })
    );
    assert!(
        std::str::from_utf8(&frames[4].bytes)
            .unwrap()
            .contains("signature_delta")
    );
    let sent = harness.received().pop().unwrap();
    let expected = String::from_utf8(body.to_vec()).unwrap().replacen(
        "\"claude-sonnet-4-5\"",
        "\"claude-sonnet-4-5-20250929\"",
        1,
    );
    assert_eq!(std::str::from_utf8(&sent.body).unwrap(), expected);
}

#[tokio::test]
async fn vendor_failures_are_classified_as_the_anthropic_adapter_does() {
    let error = |kind: &str, message: &str| {
        Bytes::from(format!(
            r#"{{"type":"error","error":{{"type":"{kind}","message":"{message}"}},"request_id":"req_1"}}"#
        ))
    };
    let body = fixture("anthropic/messages_request.json");
    let harness = Harness::start(Reply::Json(
        429,
        vec![("retry-after", "7")],
        error(
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        ),
    ))
    .await;
    match harness.messages(&body, &client_headers()).await.unwrap_err() {
        ProviderError::RateLimited { retry_after, message } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
            assert!(message.contains("per-minute rate limit"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let cases = [
        (
            400,
            "invalid_request_error",
            "messages.1.content.0.thinking.signature: Invalid `signature` in `thinking` block",
        ),
        (401, "authentication_error", "invalid x-api-key"),
        (529, "overloaded_error", "Overloaded"),
        (500, "api_error", "Internal server error"),
    ];
    for (status, kind, message) in cases {
        *harness.upstream.reply.lock().unwrap() = Reply::Json(status, vec![], error(kind, message));
        let err = harness.messages(&body, &client_headers()).await.unwrap_err();
        match (status, &err) {
            (400, ProviderError::Rejected { status: 400, error }) => assert_eq!(error.error.message, message),
            (401, ProviderError::Authentication { status: 401, .. }) => {}
            (529, ProviderError::Overloaded { .. }) => {}
            (500, ProviderError::Server { status: 500, .. }) => {}
            _ => panic!("{status}: {err:?}"),
        }
        assert_eq!(err.is_retryable(), status != 400);
    }
}

#[tokio::test]
async fn broken_streams_end_with_an_error_after_the_frames_before() {
    let transcript = String::from_utf8(fixture("anthropic/stream_tool_use.sse").to_vec()).unwrap();
    let head = transcript.split("event: message_delta").next().unwrap().to_owned();
    let overloaded = format!(
        "{head}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n"
    );
    let body = fixture("anthropic/messages_request.json");
    for (stream, ends_with) in [(head.clone(), "Truncated"), (overloaded, "Overloaded")] {
        let harness = Harness::start(Reply::Sse(Bytes::from(stream))).await;
        let frames = collect(harness.messages(&body, &client_headers()).await.unwrap()).await;
        let (last, rest) = frames.split_last().unwrap();
        assert!(last.as_ref().unwrap_err().starts_with(ends_with), "{last:?}");
        let joined: Vec<u8> = rest.iter().flat_map(|f| f.as_ref().unwrap().bytes.to_vec()).collect();
        assert_eq!(joined, head.as_bytes(), "the whole frames before the break, as sent");
        let usage = rest.iter().filter_map(|f| f.as_ref().unwrap().usage).last();
        assert_eq!(usage, Some(TokenUsage::new(472, 2)), "the usage so far, for the ledger");
    }
}

#[tokio::test]
async fn a_body_without_a_plain_model_is_refused_before_anything_is_sent() {
    let harness = Harness::start(Reply::Json(200, vec![], Bytes::from_static(b"{}"))).await;
    for body in [
        &br#"{"model": 7, "max_tokens": 1, "messages": []}"#[..],
        br#"{"max_tokens": 1, "messages": [], "metadata": {"model": "x"}}"#,
        br#"{"model": "a", "model": "b"}"#,
        b"not json",
    ] {
        match harness.messages(&Bytes::copy_from_slice(body), &client_headers()).await {
            Err(ProviderError::Rejected { status: 400, error }) => {
                assert_eq!(error.error.param.as_deref(), Some("model"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(harness.received().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn count_tokens_is_passed_through_too() {
    let answer = fixture("anthropic-messages/count_tokens_response.json");
    let harness = Harness::start(Reply::Json(200, vec![], answer.clone())).await;
    let body = fixture("anthropic-messages/count_tokens_request.json");
    let passthrough = harness.adapter.messages_passthrough().unwrap();
    let count = passthrough
        .count_tokens(MessagesCall {
            body: &body,
            model: "claude-sonnet-4-5-20250929",
            key: &harness.key,
            client_headers: &client_headers(),
        })
        .await
        .unwrap();
    assert_eq!(count.input_tokens, 14);
    assert_eq!(count.body, answer);
    let sent = harness.received().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.headers["x-api-key"], "sk-ant-upstream");
    let expected = String::from_utf8(body.to_vec()).unwrap().replacen(
        "\"model\": \"claude-sonnet-4-5\"",
        "\"model\": \"claude-sonnet-4-5-20250929\"",
        1,
    );
    assert_eq!(std::str::from_utf8(&sent.body).unwrap(), expected);
}

#[test]
fn only_anthropic_adapters_pass_messages_through() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        first_byte: Duration::from_secs(1),
        idle: Duration::from_secs(1),
    };
    let anthropic: Box<dyn ChatProvider> = Box::new(AnthropicAdapter::new(
        sluice_providers::UpstreamClient::new(sluice_providers::ClientSettings::default()).unwrap(),
        AnthropicAdapter::DEFAULT_BASE_URL,
        timeouts,
    ));
    let openai: Box<dyn ChatProvider> = Box::new(OpenAiAdapter::new(
        sluice_providers::UpstreamClient::new(sluice_providers::ClientSettings::default()).unwrap(),
        "https://api.openai.com/v1",
        OpenAiFlavor::OpenAi,
        timeouts,
        true,
    ));
    assert!(anthropic.messages_passthrough().is_some());
    assert!(openai.messages_passthrough().is_none());
}
