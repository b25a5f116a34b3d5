//! Request parse and re-serialise: the work the gateway does on every chat completion body before it goes
//! upstream. A ~500-token chat request (system and user message, sampling parameters) and the same with
//! a tool definition and unknown fields that pass through. Results: `docs/benchmarks.md`.
//!
//! `cargo bench -p sluice-api --bench parse -- --warm-up-time 1 --measurement-time 2`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use sluice_api::{ChatCompletionRequest, UpstreamChatRequest, parse_json};

/// About `tokens` tokens of English-like text (roughly four bytes a token), the same on every run.
fn prose(tokens: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "river",
        "carries",
        "water",
        "from",
        "mountains",
        "to",
        "sea",
        "and",
        "every",
        "town",
        "along",
        "its",
        "banks",
        "depends",
        "on",
        "seasonal",
        "floods",
        "that",
        "bring",
        "fertile",
        "silt",
        "farmers",
        "measure",
        "rainfall",
        "carefully",
        "because",
        "harvests",
        "follow",
        "it",
    ];
    let mut text = String::with_capacity(tokens * 5);
    let mut state: u32 = 7;
    while text.len() < tokens * 4 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        text.push_str(WORDS[(state >> 16) as usize % WORDS.len()]);
        text.push(if (state >> 8).is_multiple_of(11) { '.' } else { ' ' });
    }
    text
}

/// A ~500-token chat request as a client sends it.
fn plain_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in plain English."},
            {"role": "user", "content": prose(480)},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
    }))
    .unwrap()
}

/// The same with a tool, a response format and fields the gateway does not know (passed through).
fn rich_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in plain English."},
            {"role": "user", "content": prose(400)},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "lookup", "arguments": "{\"river\":\"Rhine\"}"}
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": prose(60)},
        ],
        "tools": [{"type": "function", "function": {
            "name": "lookup", "description": "Look a river up.",
            "parameters": {"type": "object", "properties": {"river": {"type": "string"}}, "required": ["river"]}
        }}],
        "tool_choice": "auto",
        "max_tokens": 64,
        "temperature": 0.2,
        "stream": true,
        "seed": 42,
        "logit_bias": {"1234": -100},
        "metadata": {"team": "search", "trace": "abc123"},
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    for (name, body) in [("plain_500_tokens", plain_body()), ("tools_and_extra", rich_body())] {
        let mut group = c.benchmark_group(format!("chat_request/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("parse", |b| {
            b.iter(|| parse_json::<ChatCompletionRequest>(black_box(&body)).unwrap());
        });
        let request: ChatCompletionRequest = parse_json(&body).unwrap();
        group.bench_function("reserialise", |b| {
            b.iter(|| {
                let upstream = UpstreamChatRequest::new(black_box(&request), "gpt-4o-mini-2024-07-18", true);
                serde_json::to_vec(&upstream).unwrap()
            });
        });
        group.bench_function("parse_and_reserialise", |b| {
            b.iter(|| {
                let request: ChatCompletionRequest = parse_json(black_box(&body)).unwrap();
                let upstream = UpstreamChatRequest::new(&request, "gpt-4o-mini-2024-07-18", true);
                serde_json::to_vec(&upstream).unwrap()
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
