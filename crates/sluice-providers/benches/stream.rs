//! Stream translation per vendor: a 20-chunk answer in OpenAI, Anthropic and Gemini format, as the
//! gateway receives it and turns it into OpenAI chunks. Results: `docs/benchmarks.md`.
//!
//! `stream_20_chunks` measures the public adapters: each adapter's `chat` against a loopback server that
//! answers every request with a canned stream, drained to the end. Beside it, `raw_http` fetches the same
//! bytes with the same HTTP client and no SSE parsing or translation; the difference is the adapter's own
//! work per stream (building the request, SSE parsing, translation). `chunk` measures that work one event
//! at a time: each vendor's real stream translator (`openai::stream`, `anthropic::stream`,
//! `gemini::stream`, reached through `sluice_providers::internals`) on one content event of these
//! streams, and encoding and decoding an OpenAI chunk.
//!
//! `cargo bench -p sluice-providers --bench stream -- --warm-up-time 1 --measurement-time 2`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::json;
use sluice_api::{ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, ChunkDelta, Role};
use sluice_providers::{
    AnthropicAdapter, ChatCall, ChatProvider, GeminiAdapter, OpenAiAdapter, OpenAiFlavor, ReplyBody, Timeouts,
    UpstreamKey,
};

/// Content chunks per stream, as the end-to-end benchmark's simulated upstream sends.
const CHUNKS: usize = 20;

fn word(i: usize) -> &'static str {
    const WORDS: &[&str] = &[
        " the",
        " river",
        " carries",
        " water",
        " from",
        " mountains",
        " to",
        " the",
        " sea",
    ];
    WORDS[i % WORDS.len()]
}

/// A 20-chunk OpenAI stream with a finish chunk, a usage chunk and `[DONE]`.
fn openai_stream() -> String {
    let mut out = String::new();
    let head = r#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","#;
    out.push_str(&format!(
        "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
    ));
    for i in 0..CHUNKS {
        let text = word(i);
        out.push_str(&format!(
            "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    out.push_str(&format!(
        "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n"
    ));
    out.push_str(&format!(
        "data: {head}\"choices\":[],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":20,\"total_tokens\":32}}}}\n\n"
    ));
    out.push_str("data: [DONE]\n\n");
    out
}

/// A 20-chunk Anthropic Messages stream, shaped as Anthropic's own (see `tests/fixtures/anthropic`).
fn anthropic_stream() -> String {
    let mut out = String::new();
    let mut event = |name: &str, data: serde_json::Value| {
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_bench", "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    );
    event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    event("ping", json!({"type": "ping"}));
    for i in 0..CHUNKS {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word(i)}}),
        );
    }
    event("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
    event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 20}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    out
}

/// A 20-chunk Gemini `streamGenerateContent?alt=sse` stream (see `tests/fixtures/gemini`).
fn gemini_stream() -> String {
    let mut out = String::new();
    for i in 0..CHUNKS {
        let last = i + 1 == CHUNKS;
        let mut candidate = json!({"content": {"parts": [{"text": word(i)}], "role": "model"}, "index": 0});
        let mut usage = json!({"promptTokenCount": 12, "totalTokenCount": 12});
        if last {
            candidate["finishReason"] = json!("STOP");
            usage = json!({"promptTokenCount": 12, "candidatesTokenCount": 20, "totalTokenCount": 32});
        }
        let data = json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash",
            "responseId": "bench"});
        out.push_str(&format!("data: {data}\n\n"));
    }
    out
}

/// Serves `body` as a `text/event-stream` answer to every request, on keep-alive connections, from a
/// background thread; returns the base URL.
fn serve(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let response: Arc<[u8]> = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(connection) = connection else { continue };
            let response = Arc::clone(&response);
            std::thread::spawn(move || answer_all(connection, &response));
        }
    });
    format!("http://{address}")
}

/// Answers each request on one connection until the client closes it.
fn answer_all(connection: TcpStream, response: &[u8]) {
    connection.set_nodelay(true).unwrap();
    let mut writer = connection.try_clone().unwrap();
    let mut reader = BufReader::new(connection);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() || writer.write_all(response).is_err() {
            return;
        }
    }
}

fn request() -> ChatCompletionRequest {
    serde_json::from_value(json!({
        "model": "bench",
        "messages": [{"role": "user", "content": "Where does the river go?"}],
        "max_tokens": 64,
        "stream": true,
    }))
    .unwrap()
}

/// Drains one stream through `adapter`, returning the number of chunks.
async fn drain(adapter: &dyn ChatProvider, request: &ChatCompletionRequest, key: &UpstreamKey) -> usize {
    let call = ChatCall {
        request,
        model: "bench-model",
        key,
        default_max_tokens: Some(64),
        drop_unsupported: false,
    };
    let reply = adapter.chat(call).await.unwrap();
    let ReplyBody::Stream(mut events) = reply.body else {
        unreachable!("a streaming request answers with a stream")
    };
    let mut chunks = 0;
    while let Some(event) = events.next().await {
        black_box(event.unwrap());
        chunks += 1;
    }
    chunks
}

/// Fetches the same stream with reqwest, no SSE parsing: a floor under the adapters.
async fn raw(client: &reqwest::Client, url: &str, body: &[u8]) -> usize {
    let response = client.post(url).body(body.to_vec()).send().await.unwrap();
    let mut bytes = response.bytes_stream();
    let mut total = 0;
    while let Some(chunk) = bytes.next().await {
        total += chunk.unwrap().len();
    }
    total
}

fn bench_adapters(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw_client = reqwest::Client::new();
    let client = sluice_providers::UpstreamClient::new(sluice_providers::ClientSettings::default()).unwrap();
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(30),
        idle: Duration::from_secs(30),
    };
    let key = UpstreamKey::new("bench#0", SecretString::from("sk-bench"));
    let request = request();

    let openai_base = serve(openai_stream());
    let anthropic_base = serve(anthropic_stream());
    let gemini_base = serve(gemini_stream());
    let vendors: Vec<(&str, Box<dyn ChatProvider>, String, usize)> = vec![
        (
            "openai",
            Box::new(OpenAiAdapter::new(
                client.clone(),
                &openai_base,
                OpenAiFlavor::OpenAi,
                timeouts,
                true,
            )),
            format!("{openai_base}/chat/completions"),
            openai_stream().len(),
        ),
        (
            "anthropic",
            Box::new(AnthropicAdapter::new(client.clone(), &anthropic_base, timeouts)),
            format!("{anthropic_base}/v1/messages"),
            anthropic_stream().len(),
        ),
        (
            "gemini",
            Box::new(GeminiAdapter::new(client.clone(), &gemini_base, timeouts)),
            format!("{gemini_base}/v1beta/models/bench-model:streamGenerateContent?alt=sse"),
            gemini_stream().len(),
        ),
    ];
    let raw_body = serde_json::to_vec(&request).unwrap();
    let mut group = c.benchmark_group("stream_20_chunks");
    for (vendor, adapter, url, bytes) in &vendors {
        group.throughput(Throughput::Bytes(*bytes as u64));
        let chunks = runtime.block_on(drain(adapter.as_ref(), &request, &key));
        assert!(chunks >= CHUNKS, "{vendor}: {chunks} chunks");
        group.bench_function(format!("{vendor}/adapter"), |b| {
            b.iter(|| runtime.block_on(drain(adapter.as_ref(), &request, &key)));
        });
        group.bench_function(format!("{vendor}/raw_http"), |b| {
            b.iter(|| runtime.block_on(raw(&raw_client, url, &raw_body)));
        });
    }
    group.finish();
}

/// The data of the `data:` lines of `stream`, in order.
fn data_lines(stream: &str) -> Vec<String> {
    stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn bench_chunks(c: &mut Criterion) {
    let event = data_lines(&openai_stream())[2].clone();
    let mut group = c.benchmark_group("chunk");
    // Each vendor's translator on one content event, with the state the events before it left (the
    // event's `String` is made outside the measurement, as the SSE parser hands it over).
    let vendors = [
        ("openai", data_lines(&openai_stream()), 2),
        ("anthropic", data_lines(&anthropic_stream()), 3),
        ("gemini", data_lines(&gemini_stream()), 1),
    ];
    for (vendor, events, at) in vendors {
        let mut translator = sluice_providers::vendor(vendor).unwrap().translator();
        let mut out = VecDeque::new();
        for earlier in &events[..at] {
            translator.event(earlier.clone(), &mut out).unwrap();
        }
        group.bench_function(format!("{vendor}_event"), |b| {
            b.iter_batched(
                || events[at].clone(),
                |data| {
                    out.clear();
                    translator.event(data, &mut out).unwrap();
                    assert_eq!(out.len(), 1);
                    black_box(&out);
                },
                BatchSize::SmallInput,
            );
        });
    }
    let chunk = ChatCompletionChunk {
        id: "msg_bench".to_owned(),
        object: "chat.completion.chunk".to_owned(),
        created: 1_700_000_000,
        model: "claude-sonnet-4-5".to_owned(),
        choices: vec![ChunkChoice {
            index: 0,
            delta: ChunkDelta {
                role: Some(Role::Assistant),
                content: Some(" river".to_owned()),
                tool_calls: None,
            },
            finish_reason: None,
        }],
        usage: None,
    };
    group.bench_function("encode_openai_chunk", |b| {
        b.iter(|| serde_json::to_vec(black_box(&chunk)).unwrap());
    });
    group.bench_function("decode_openai_chunk_full", |b| {
        b.iter(|| serde_json::from_str::<ChatCompletionChunk>(black_box(&event)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench_adapters, bench_chunks);
criterion_main!(benches);
