//! What the fuzz targets share: how an input becomes a body cut into pieces, the stream driver, the
//! properties every translated stream must have, and a reference SSE parser.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::IgnoredAny;
use serde_json::Value;
use sluice_providers::StreamEvent;
use sluice_providers::internals::{self, Translator};

/// One item of a translated stream, with the error as its `Debug` text so items compare.
pub type Item = Result<StreamEvent, String>;

/// Reads a stream target's input: `[n] [n lengths] body`. The first byte's low four bits give how many
/// piece lengths follow (each byte `b` meaning `b + 1` bytes); the lengths repeat until the body is cut
/// whole. No lengths: the body arrives in one piece. `\x01\x00` + body sends it one byte at a time.
pub fn split_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    let n = usize::from(first & 0x0f).min(rest.len());
    rest.split_at(n)
}

/// `body` cut by the repeating piece `lengths` (see [`split_input`]).
pub fn cut(body: &[u8], lengths: &[u8]) -> Vec<Bytes> {
    if lengths.is_empty() {
        return vec![Bytes::copy_from_slice(body)];
    }
    let mut pieces = Vec::new();
    let mut rest = body;
    for &length in lengths.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((usize::from(length) + 1).min(rest.len()));
        pieces.push(Bytes::copy_from_slice(piece));
        rest = tail;
    }
    pieces
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Runs `pieces` through the adapters' SSE driver and `translator` to the end of the stream.
pub fn drive(pieces: Vec<Bytes>, translator: Translator) -> Vec<Item> {
    let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<Bytes, Infallible>));
    runtime().block_on(async move {
        let mut stream = internals::sse_events(body, Duration::from_secs(3600), translator);
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            out.push(item.map_err(|e| format!("{e:?}")));
            assert!(out.len() <= 1 << 20, "the stream does not end");
        }
        out
    })
}

/// The stream translator of the registry's vendor `kind` (`openai`, `anthropic`, ...).
pub fn translator(kind: &str) -> Translator {
    sluice_providers::vendor(kind)
        .unwrap_or_else(|| panic!("`{kind}` is not in sluice_providers::VENDORS"))
        .translator()
}

/// Drives a stream target's input through vendor `kind`'s translator, whole and cut as it says, asserts
/// both give the same items and that they have the shape every stream must have, and returns them.
pub fn check_stream(data: &[u8], kind: &str) -> Vec<Item> {
    let (lengths, body) = split_input(data);
    let whole = drive(cut(body, &[]), translator(kind));
    let pieces = drive(cut(body, lengths), translator(kind));
    assert_eq!(whole, pieces, "cutting the body into pieces changed the stream");
    check_items(&whole);
    whole
}

/// What holds for every stream the gateway forwards: an error only as the last item; each chunk is one
/// line of JSON (the server frames it as a single `data:` line); a usage-only chunk carries usage.
pub fn check_items(items: &[Item]) {
    if let Some(at) = items.iter().position(Result::is_err) {
        assert_eq!(at + 1, items.len(), "items after an error: {items:?}");
    }
    for event in items.iter().filter_map(|i| i.as_ref().ok()) {
        assert!(
            !event.data.iter().any(|b| matches!(b, b'\n' | b'\r')),
            "a chunk with a line break would break the client's SSE framing: {event:?}"
        );
        // JSON syntax only: the OpenAI translator forwards the vendor's chunk as it is, and a strict
        // decoder (`Value`) also refuses escapes such as a lone surrogate that JSON's grammar allows.
        serde_json::from_slice::<IgnoredAny>(&event.data).expect("every chunk is JSON");
        assert!(!event.usage_only || event.usage.is_some(), "{event:?}");
        assert!(!event.estimated, "{event:?}");
    }
}

/// The data of the events a WHATWG-conforming parser dispatches for `text` (a connection that closes
/// there: an event not ended by a blank line is dropped).
///
/// One known difference with the gateway's parser (`sluice_providers::sse`) is kept: a CR as the very last
/// byte may be the first half of a CRLF, so the parser waits for the next byte and never ends that line if
/// the stream closes.
pub fn reference_events(text: &str) -> Vec<String> {
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut events = Vec::new();
    let mut data = String::new();
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let after = &rest[end..];
        let eol = if after.starts_with("\r\n") {
            2
        } else if after == "\r" {
            break;
        } else {
            1
        };
        rest = &after[eol..];
        if line.is_empty() {
            if !data.is_empty() {
                if data.ends_with('\n') {
                    data.pop();
                }
                events.push(std::mem::take(&mut data));
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            data.push_str(value);
            data.push('\n');
        }
    }
    events
}

/// Whether two JSON values are equal, floats within a relative 1e-12 (serde_json's default float
/// parsing may be one unit in the last place off its own output).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The chunks the OpenAI adapter's real SSE driver and translator hand on for a stream target's input
/// (`[n] [n lengths] body`, see [`split_input`]), whole and cut, which must agree; then what broke the
/// stream, if it broke (the failure's `Debug` text).
pub fn chat_chunks(data: &[u8]) -> (Vec<Bytes>, Option<String>) {
    let (lengths, body) = split_input(data);
    let whole = drive(cut(body, &[]), translator("openai"));
    let pieces = drive(cut(body, lengths), translator("openai"));
    assert_eq!(whole, pieces, "cutting the body into pieces changed the stream");
    let mut chunks = Vec::new();
    for item in whole {
        match item {
            Ok(event) => chunks.push(event.data),
            Err(err) => return (chunks, Some(err)),
        }
    }
    (chunks, None)
}

/// One event of the SSE text a protocol translator produced: its `event:` name and its data as JSON.
pub fn produced_events(text: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(text).expect("the translators write UTF-8");
    assert!(text.is_empty() || text.ends_with("\n\n"), "an unterminated event: {text}");
    text.split_terminator("\n\n")
        .map(|frame| {
            let (event, data) = frame.split_once('\n').expect("two lines");
            let name = event.strip_prefix("event: ").expect("an event line");
            let data = data.strip_prefix("data: ").expect("a data line");
            assert!(!data.contains(['\n', '\r']), "one data line: {frame}");
            let value: Value = serde_json::from_str(data).expect("the data is JSON");
            (name.to_owned(), value)
        })
        .collect()
}
