//! Token counting speed: English prompts of 100, 2k and 32k tokens, pathological inputs, chat requests and
//! streamed completions, for each encoding. Results and the machine they ran on: `docs/benchmarks.md`.
//!
//! `cargo bench -p sluice-tokens -- --warm-up-time 1 --measurement-time 3`
//!
//! Times are the CPU time of the benchmark thread (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the machines
//! this runs on are shared, and time the core spent on other processes is not counting's.

#![expect(
    clippy::panic,
    reason = "inputs are built in code: a failure is a bug of the benchmark itself"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use criterion::{Bencher, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde_json::json;
use sluice_api::ChatCompletionRequest;
use sluice_tokens::{CompletionCounter, EncodingName, count_chat, count_chat_offloaded, count_text, fits, upper_bound};

/// Deterministic xorshift, so every run measures the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Runs `f` `iterations` times and answers the thread's CPU time for them (wall time where the clock is
/// missing).
fn cpu_timed<R>(iterations: u64, mut f: impl FnMut() -> R) -> Duration {
    let wall = Instant::now();
    let cpu = ThreadTime::try_now();
    for _ in 0..iterations {
        black_box(f());
    }
    match cpu.and_then(|start| start.try_elapsed()) {
        Ok(elapsed) => elapsed,
        Err(_) => wall.elapsed(),
    }
}

fn measure<R>(b: &mut Bencher<'_>, mut f: impl FnMut() -> R) {
    b.iter_custom(|iterations| cpu_timed(iterations, &mut f));
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "request",
    "gateway",
    "budget",
    "tokens",
    "provider",
    "response",
    "configuration",
    "license",
    "software",
    "distribution",
    "however",
    "particularly",
    "understanding",
    "conspicuously",
    "implementation",
    "availability",
    "performance",
    "customer",
    "documentation",
    "reasonable",
    "analysis",
    "between",
    "through",
    "without",
    "important",
    "different",
    "following",
    "information",
    "government",
    "development",
    "experience",
    "question",
    "problem",
    "system",
    "program",
    "because",
    "should",
    "people",
    "could",
    "about",
    "other",
    "their",
    "these",
    "first",
    "world",
    "after",
    "where",
    "while",
    "before",
    "summarize",
    "explain",
    "example",
    "assistant",
    "carefully",
    "answer",
    "context",
    "previous",
    "message",
];
const PUNCTUATION: &[&str] = &[",", ",", ";", ":", " -", ""];

/// Pseudo-English prose of at most `tokens` o200k tokens (and close to it): sentences of common words with
/// capitals, punctuation, numbers and paragraphs.
fn english(tokens: u64) -> String {
    let mut rng = Rng(0x5EED_F00D);
    let mut text = String::new();
    // English runs at about 4.5 bytes a token: generate more, then cut.
    while (text.len() as u64) < tokens * 6 {
        let words = 6 + rng.next() % 18;
        for i in 0..words {
            let word = rng.pick(WORDS);
            if i == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    text.extend(first.to_uppercase());
                    text.push_str(chars.as_str());
                }
            } else {
                text.push(' ');
                if rng.next().is_multiple_of(40) {
                    text.push_str(&(rng.next() % 10_000).to_string());
                    text.push(' ');
                }
                text.push_str(word);
            }
            if i + 1 < words && rng.next().is_multiple_of(9) {
                text.push_str(rng.pick(PUNCTUATION));
            }
        }
        text.push_str(if rng.next().is_multiple_of(5) { ".\n\n" } else { ". " });
    }
    let cuts: Vec<usize> = text.match_indices(' ').map(|(i, _)| i).collect();
    let fitting = cuts.partition_point(|&cut| count_text(&text[..cut], EncodingName::O200kBase).tokens <= tokens);
    text.truncate(cuts[fitting.saturating_sub(1)]);
    text
}

/// `chars` random Unicode scalar values, from every plane.
fn random_unicode(chars: usize, seed: u64) -> String {
    let mut rng = Rng(seed);
    std::iter::from_fn(|| Some(char::from_u32((rng.next() % 0x11_0000) as u32)))
        .flatten()
        .take(chars)
        .collect()
}

/// The longest prefix of `text` with at most `tokens` o200k tokens.
fn prefix_with_tokens(text: &str, tokens: u64) -> &str {
    let ends: Vec<usize> = text.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
    let fitting = ends.partition_point(|&end| count_text(&text[..end], EncodingName::O200kBase).tokens <= tokens);
    &text[..ends[fitting.saturating_sub(1)]]
}

fn chat_request(content: &str) -> ChatCompletionRequest {
    serde_json::from_value(json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly and cite the context."},
        {"role": "user", "content": content}
    ]}))
    .unwrap_or_else(|err| panic!("a valid request: {err}"))
}

fn texts(c: &mut Criterion) {
    // Counting itself: every count below starts from the text, not from the cache of long texts.
    sluice_tokens::set_text_cache(false);
    let english_100 = english(100);
    let english_2k = english(2_000);
    let english_32k = english(32_000);
    let unicode = random_unicode(100_000, 7);
    let unicode_2k = prefix_with_tokens(&unicode[..20_000], 2_000).to_owned();
    let pathological: Vec<(&str, String)> = vec![
        ("one-char-10k", "a".repeat(10_000)),
        ("one-char-100k", "a".repeat(100_000)),
        ("spaces-100k", " ".repeat(100_000) + "x"),
        ("mixed-whitespace-100k", " \t \u{a0}\n".repeat(20_000)),
        ("random-unicode-10k", random_unicode(10_000, 11)),
        ("random-unicode-100k", unicode.clone()),
        ("random-unicode-2k-tokens", unicode_2k),
    ];

    let mut group = c.benchmark_group("count_text");
    group.sampling_mode(SamplingMode::Flat);
    for name in EncodingName::ALL {
        name.preload();
        for (label, text) in [
            ("english-100", &english_100),
            ("english-2k", &english_2k),
            ("english-32k", &english_32k),
        ] {
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_with_input(BenchmarkId::new(name.as_str(), label), text, |b, text| {
                measure(b, || count_text(black_box(text), name))
            });
        }
        // A fresh thread per count: nothing cached from an earlier run (the multi-token piece cache is
        // per thread).
        group.throughput(Throughput::Bytes(english_2k.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(name.as_str(), "english-2k-cold"),
            &english_2k,
            |b, text| b.iter_custom(|iterations| cold_runs(iterations, text, name)),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("pathological");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    for name in EncodingName::ALL {
        for (label, text) in &pathological {
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_with_input(BenchmarkId::new(name.as_str(), label), text, |b, text| {
                measure(b, || count_text(black_box(text), name))
            });
        }
    }
    group.finish();
}

fn cold_runs(iterations: u64, text: &str, name: EncodingName) -> Duration {
    let text: Arc<str> = text.into();
    (0..iterations)
        .map(|_| {
            let text = text.clone();
            std::thread::spawn(move || cpu_timed(1, || count_text(&text, name)))
                .join()
                .unwrap_or_default()
        })
        .sum()
}

fn chat(c: &mut Criterion) {
    let request = chat_request(&english(2_000));
    let mut group = c.benchmark_group("chat-2k");
    group.sampling_mode(SamplingMode::Flat);
    sluice_tokens::set_text_cache(false);
    group.bench_function("count_chat", |b| {
        measure(b, || count_chat(black_box(&request), EncodingName::O200kBase))
    });
    // The same prompt again, as a system prompt or an agent's conversation comes back: from the cache.
    sluice_tokens::set_text_cache(true);
    group.bench_function("count_chat-again", |b| {
        measure(b, || count_chat(black_box(&request), EncodingName::O200kBase))
    });
    sluice_tokens::set_text_cache(false);
    group.bench_function("upper_bound", |b| {
        measure(b, || upper_bound(black_box(&request), EncodingName::O200kBase))
    });
    group.bench_function("fits-limit-500", |b| {
        measure(b, || fits(black_box(&request), EncodingName::O200kBase, 500))
    });
    group.finish();

    // Wall time: the offloaded count runs on a blocking thread, whose CPU time the bench thread does not see.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|err| panic!("a runtime: {err}"));
    let mut group = c.benchmark_group("offloaded-wall-time");
    group.sampling_mode(SamplingMode::Flat);
    for (label, request) in [
        ("100-inline", chat_request(&english(100))),
        ("2k-blocking-pool", request),
    ] {
        let shared = Arc::new(request);
        group.bench_function(label, |b| {
            b.iter(|| runtime.block_on(count_chat_offloaded(shared.clone(), EncodingName::O200kBase)))
        });
    }
    group.finish();
}

fn stream(c: &mut Criterion) {
    let text = english(2_000);
    // Deltas of about one token as vendors stream them (" word"), and arbitrary 3-byte cuts.
    let mut cuts: Vec<usize> = text.match_indices(' ').map(|(i, _)| i).collect();
    cuts.push(text.len());
    let words: Vec<&str> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .zip(cuts.iter().copied())
        .map(|(a, b)| &text[a..b])
        .collect();
    let bytes: Vec<&str> = text
        .as_bytes()
        .chunks(3)
        .filter_map(|chunk| std::str::from_utf8(chunk).ok())
        .collect();
    let mut group = c.benchmark_group("stream-2k");
    group.sampling_mode(SamplingMode::Flat);
    for name in EncodingName::ALL {
        for (label, deltas) in [("word-deltas", &words), ("3-byte-deltas", &bytes)] {
            group.throughput(Throughput::Elements(deltas.len() as u64));
            group.bench_function(
                BenchmarkId::new(name.as_str(), format!("{}-{label}", deltas.len())),
                |b| {
                    measure(b, || {
                        let mut counter = CompletionCounter::new(name);
                        for delta in deltas.iter() {
                            counter.push(black_box(delta));
                        }
                        counter.tokens()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, texts, chat, stream);
criterion_main!(benches);
