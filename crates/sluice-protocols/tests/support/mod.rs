//! What the protocol tests share: the fixtures, the gateway's path from a vendor's SSE body to the chunks
//! the translators get, and a reader for the SSE text they produce.
#![allow(dead_code, reason = "each test file uses part of this")]

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;
use sluice_protocols::{FailureKind, StreamFailure};
use sluice_providers::internals;

/// The vendors whose recorded streams the tests replay, by their registry kind.
#[derive(Debug, Clone, Copy)]
pub enum Vendor {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Vendor {
    /// The vendor's stream translator, as its adapter starts it.
    fn translator(self) -> internals::Translator {
        let kind = match self {
            Vendor::OpenAi => "openai",
            Vendor::Anthropic => "anthropic",
            Vendor::Gemini => "gemini",
        };
        sluice_providers::vendor(kind)
            .unwrap_or_else(|| panic!("{kind} is registered"))
            .translator()
    }
}

/// `tests/fixtures/<path>` at the repository root.
pub fn fixture_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path)
}

/// The bytes of `tests/fixtures/<path>`.
pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(fixture_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The JSON of `tests/fixtures/<path>`.
pub fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

/// Compares `actual` with the expected output kept in `tests/fixtures/<path>`; with `SLUICE_BLESS=1` the
/// file is (re)written instead, to be reviewed in the diff.
pub fn assert_golden(path: &str, actual: &[u8]) {
    let file = fixture_path(path);
    if std::env::var("SLUICE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&file, actual).unwrap();
        return;
    }
    let expected = std::fs::read(&file).unwrap_or_else(|e| panic!("{path}: {e} (SLUICE_BLESS=1 writes it)"));
    if expected != actual {
        panic!(
            "{path} differs:\n--- expected\n{}\n--- actual\n{}",
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(actual)
        );
    }
}

/// One step of a translated stream, as the gateway drives a translator.
pub enum Step {
    /// A chunk's JSON.
    Chunk(Bytes),
    /// The upstream stream broke, with this failure.
    Failed(FailureKind, String),
}

/// What the gateway hands a protocol translator for a vendor's SSE body cut into `pieces`: the chunks of
/// the adapters' real SSE driver and `vendor`'s translator, then the failure if the stream broke.
pub async fn upstream_steps(vendor: Vendor, pieces: Vec<Vec<u8>>) -> Vec<Step> {
    let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<Vec<u8>, Infallible>));
    let mut stream = internals::sse_events(body, Duration::from_secs(5), vendor.translator());
    let mut steps = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => steps.push(Step::Chunk(event.data)),
            Err(err) => {
                let kind = match err {
                    sluice_providers::ProviderError::RateLimited { .. } => FailureKind::RateLimited,
                    sluice_providers::ProviderError::Overloaded { .. } => FailureKind::Overloaded,
                    _ => FailureKind::Upstream,
                };
                steps.push(Step::Failed(kind, err.to_string()));
            }
        }
    }
    steps
}

/// A protocol stream translator, as the tests drive it.
pub trait Translate {
    fn chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), sluice_protocols::ProtocolError>;
    fn finish(&mut self, out: &mut BytesMut);
    fn fail(&mut self, failure: StreamFailure<'_>, out: &mut BytesMut);
}

impl Translate for sluice_protocols::responses::ResponsesStream {
    fn chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), sluice_protocols::ProtocolError> {
        sluice_protocols::responses::ResponsesStream::chunk(self, data, out)
    }
    fn finish(&mut self, out: &mut BytesMut) {
        sluice_protocols::responses::ResponsesStream::finish(self, None, out).unwrap();
    }
    fn fail(&mut self, failure: StreamFailure<'_>, out: &mut BytesMut) {
        sluice_protocols::responses::ResponsesStream::fail(self, failure, out);
    }
}

impl Translate for sluice_protocols::messages::MessagesStream {
    fn chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), sluice_protocols::ProtocolError> {
        sluice_protocols::messages::MessagesStream::chunk(self, data, out)
    }
    fn finish(&mut self, out: &mut BytesMut) {
        sluice_protocols::messages::MessagesStream::finish(self, None, out).unwrap();
    }
    fn fail(&mut self, failure: StreamFailure<'_>, out: &mut BytesMut) {
        sluice_protocols::messages::MessagesStream::fail(self, failure, out);
    }
}

/// The SSE text `translator` produces for `steps`, driven as the gateway drives it: each chunk, then
/// `finish` after a clean end or `fail` after a break (or after a chunk it could not translate).
pub fn translate(mut translator: impl Translate, steps: &[Step]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut sent = Vec::new();
    for step in steps {
        match step {
            Step::Chunk(data) => {
                if let Err(err) = translator.chunk(data, &mut out) {
                    let message = err.to_string();
                    translator.fail(
                        StreamFailure {
                            kind: FailureKind::Upstream,
                            message: &message,
                        },
                        &mut out,
                    );
                    sent.extend_from_slice(&out.split());
                    return sent;
                }
            }
            Step::Failed(kind, message) => {
                translator.fail(StreamFailure { kind: *kind, message }, &mut out);
                sent.extend_from_slice(&out.split());
                return sent;
            }
        }
        // What the server would write now.
        sent.extend_from_slice(&out.split());
    }
    translator.finish(&mut out);
    sent.extend_from_slice(&out.split());
    sent
}

/// The pieces of `bytes` to feed the driver: whole, one byte at a time, and in two at every byte.
pub fn cuts(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut cuts = vec![vec![bytes.to_vec()], bytes.iter().map(|b| vec![*b]).collect()];
    for at in 1..bytes.len() {
        cuts.push(vec![bytes[..at].to_vec(), bytes[at..].to_vec()]);
    }
    cuts
}

/// One event of produced SSE text.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

/// Reads SSE text the translators produced, checking its framing: `event: <name>\ndata: <json>\n\n` per
/// event, the data on one line.
pub fn events(text: &[u8]) -> Vec<Event> {
    let text = std::str::from_utf8(text).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"), "unterminated event: {text}");
    text.split_terminator("\n\n")
        .map(|frame| {
            let (event, data) = frame.split_once('\n').unwrap_or_else(|| panic!("one line: {frame}"));
            let name = event
                .strip_prefix("event: ")
                .unwrap_or_else(|| panic!("no event line: {frame}"));
            let data = data
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("no data line: {frame}"));
            assert!(!data.contains('\n'), "{frame}");
            Event {
                name: name.to_owned(),
                data: serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")),
            }
        })
        .collect()
}
