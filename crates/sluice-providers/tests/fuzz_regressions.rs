//! Inputs the fuzz targets (`fuzz/`, see its README) found to break the stream driver, the translators
//! or the error classification, kept as tests. Each names the target and the artifact it came from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::convert::Infallible;
use std::time::Duration;

use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sluice_api::TokenUsage;
use sluice_providers::internals::{self, Translator};
use sluice_providers::limits::MAX_WAIT;
use sluice_providers::{ProviderError, StreamEvent, VENDORS, VendorSpec};

fn spec(kind: &str) -> &'static VendorSpec {
    sluice_providers::vendor(kind).unwrap()
}

fn translator(kind: &str) -> Translator {
    spec(kind).translator()
}

/// Runs `pieces` through the adapters' SSE driver and `translator`, to the end of the stream.
async fn drive(pieces: Vec<Vec<u8>>, translator: Translator) -> Vec<Result<StreamEvent, String>> {
    let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<Vec<u8>, Infallible>));
    internals::sse_events(body, Duration::from_secs(5), translator)
        .map(|item| item.map_err(|e| format!("{e:?}")))
        .collect()
        .await
}

fn data(items: &[Result<StreamEvent, String>]) -> Vec<String> {
    items
        .iter()
        .map(|item| String::from_utf8(item.as_ref().unwrap().data.to_vec()).unwrap())
        .collect()
}

const BOM: &[u8] = b"\xef\xbb\xbf";

const OPENAI_STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",",
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",",
    "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

/// `sse`, crash-3747e82e: eventsource-stream 0.2.3 skips a leading byte order mark as if it were one
/// byte long and panics slicing inside it. The SSE format allows one mark at the start, to be skipped.
#[tokio::test]
async fn a_stream_starting_with_a_byte_order_mark_is_read_not_a_panic() {
    let plain = drive(vec![OPENAI_STREAM.as_bytes().to_vec()], translator("openai")).await;
    assert_eq!(plain.len(), 2);
    assert!(plain.iter().all(Result::is_ok), "{plain:?}");
    let marked = [BOM, OPENAI_STREAM.as_bytes()].concat();
    assert_eq!(drive(vec![marked.clone()], translator("openai")).await, plain);
    for at in 1..=5 {
        let pieces = vec![marked[..at].to_vec(), marked[at..].to_vec()];
        assert_eq!(drive(pieces, translator("openai")).await, plain, "cut at {at}");
    }
    let bytes = marked.iter().map(|b| vec![*b]).collect();
    assert_eq!(drive(bytes, translator("openai")).await, plain, "one byte at a time");

    // The fuzzer's input: pieces of 1 and 6 bytes, over a body of every kind of line.
    let body = "\u{feff}: comment\r\nevent: e\rid: 1\nretry: 10\ndata\ndata:x\ndata:  two spaces\r\n\r\n\
                data: a\ndata: b\n\nunknown: y\n\ndata: last\r";
    let mut pieces = Vec::new();
    let mut rest = body.as_bytes();
    for length in [1, 6].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(length.min(rest.len()));
        pieces.push(piece.to_vec());
        rest = tail;
    }
    let events = drive(pieces, Translator::raw()).await;
    assert_eq!(data(&events), ["\nx\n two spaces", "a\nb"]);
}

/// Only the first mark is the format's: a second one belongs to the first line's field name, so that
/// line is an unknown field and its event has no data.
#[tokio::test]
async fn only_the_first_byte_order_mark_is_skipped() {
    let body = [BOM, BOM, b"data: a\n\ndata: b\n\n"].concat();
    let events = drive(vec![body], Translator::raw()).await;
    assert_eq!(data(&events), ["b"]);
}

/// A body that ends inside what could have been a mark is incomplete UTF-8, as before the mark was
/// skipped by the driver.
#[tokio::test]
async fn a_body_cut_inside_a_byte_order_mark_is_incomplete_utf8() {
    let events = drive(vec![b"\xef".to_vec(), b"\xbb".to_vec()], Translator::raw()).await;
    assert_eq!(events.len(), 1);
    assert!(events[0].as_ref().unwrap_err().starts_with("Truncated"), "{events:?}");
}

/// `openai_stream`, crash-04951eae and crash-955bd19d: the OpenAI translator checked the event's data
/// trimmed but forwarded it whole, inside the one `data:` line the server frames a chunk in. An event
/// spread over several `data:` lines kept its line breaks (the client read cut JSON; here a trailing empty
/// `data` line), and spaces `trim` takes but JSON does not allow (a form feed, U+00A0) stayed around it.
#[tokio::test]
async fn openai_chunks_go_on_as_the_json_read_on_one_line() {
    let body = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\r\n",
        "data:  \"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\nb\"},\"finish_reason\":null}]}\r\n",
        "data\r\n\r\n",
        "data: \u{a0}{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\u{c}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,",
        "\"total_tokens\":3}}\n\n",
    );
    let events = drive(vec![body.as_bytes().to_vec()], translator("openai")).await;
    assert_eq!(events.len(), 3, "{events:?}");
    for event in events.iter().map(|e| e.as_ref().unwrap()) {
        assert!(!event.data.contains(&b'\n'), "{event:?}");
        serde_json::from_slice::<Value>(&event.data).unwrap();
    }
    let first: Value = serde_json::from_slice(&events[0].as_ref().unwrap().data).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "a\nb");
    let second = &events[1].as_ref().unwrap().data;
    assert!(second.starts_with(b"{") && second.ends_with(b"}"), "{second:?}");
    let last = events[2].as_ref().unwrap();
    assert!(last.usage_only);
    assert_eq!(last.usage, Some(TokenUsage::new(2, 1)));
}

/// `anthropic_response`, `gemini_response`: token counts whose sum passes `u64::MAX` panicked with
/// overflow checks, and wrapped to a tiny count without.
#[tokio::test]
async fn token_counts_past_u64_max_saturate() {
    let body = json!({"id": "msg_1", "model": "m", "content": [{"type": "text", "text": "hi"}],
        "usage": {"input_tokens": u64::MAX, "cache_read_input_tokens": 1, "output_tokens": 2}});
    let (_, usage) = internals::anthropic_response(body.to_string().as_bytes()).unwrap();
    let usage = usage.unwrap();
    assert_eq!((usage.prompt_tokens(), usage.total()), (u64::MAX, u64::MAX));

    for meta in [
        json!({"promptTokenCount": u64::MAX, "toolUsePromptTokenCount": 1}),
        json!({"promptTokenCount": u64::MAX, "candidatesTokenCount": 1}),
        json!({"candidatesTokenCount": u64::MAX, "thoughtsTokenCount": 1}),
    ] {
        let body = json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}],
            "usageMetadata": meta});
        let (completion, usage) = internals::gemini_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(completion.usage.unwrap().total_tokens, u64::MAX, "{meta}");
        assert_eq!(usage.unwrap().total(), u64::MAX, "{meta}");
    }

    let stream = format!(
        "data: {}\n\ndata: {}\n\n",
        json!({"type": "message_start", "message": {"id": "m1", "model": "m",
            "usage": {"input_tokens": u64::MAX, "cache_creation_input_tokens": u64::MAX}}}),
        json!({"type": "message_stop"}),
    );
    let events = drive(vec![stream.into_bytes()], translator("anthropic")).await;
    assert_eq!(
        events.last().unwrap().as_ref().unwrap().usage.unwrap().prompt_tokens(),
        u64::MAX
    );
}

/// `gemini_stream` and `upstream_error`: a `RetryInfo` delay too long for a `Duration` ("1e300s") panicked
/// in `Duration::from_secs_f64`; it is now the longest wait the gateway takes, an hour.
#[tokio::test]
async fn a_gemini_retry_delay_too_long_for_a_duration_is_an_hour() {
    let error = json!({"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1e300s"}]});
    let stream = format!("data: {}\n\n", json!({"error": error}));
    let events = drive(vec![stream.into_bytes()], translator("gemini")).await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0]
            .as_ref()
            .unwrap_err()
            .starts_with("RateLimited { retry_after: Some(3600s)"),
        "{events:?}"
    );

    let body = json!({"error": error}).to_string();
    let (error, _) = spec("gemini").upstream_error(429, &HeaderMap::new(), body.as_bytes());
    assert_eq!(error.retry_after(), Some(MAX_WAIT), "{error:?}");
}

/// `upstream_error`: the same panic from rate-limit headers: `retry-after`, `retry-after-ms` and OpenAI's
/// Go-style reset durations too long for a `Duration`. They are now an hour, the longest wait taken.
#[test]
fn retry_headers_too_long_for_a_duration_are_an_hour() {
    let mut headers = HeaderMap::new();
    headers.insert("retry-after-ms", HeaderValue::from_static("1e300"));
    headers.insert("retry-after", HeaderValue::from_static("1e300"));
    headers.insert(
        "x-ratelimit-reset-requests",
        HeaderValue::from_static("99999999999999999999999h"),
    );
    headers.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("20ms"));
    for vendor in VENDORS {
        let (error, _) = vendor.upstream_error(429, &headers, b"{}");
        match error {
            ProviderError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(MAX_WAIT), "{vendor:?}");
            }
            other => panic!("{vendor:?}: {other:?}"),
        }
    }
    assert_eq!(
        sluice_providers::limits::parse_go_duration("99999999999999999999999h"),
        Some(MAX_WAIT)
    );
}
