//! OpenAI-format SSE streams, event by event.
//!
//! The translation is a pure function of one event and a small state, so it is tested on recorded
//! streams without a network. The chunk's bytes are forwarded as the vendor sent them.

use std::borrow::Cow;
use std::collections::VecDeque;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use sluice_api::{TokenUsage, Usage};

use super::chunk_scan;
use crate::transport::{Flow, SseTranslator};
use crate::{ProviderError, StreamEvent};

/// What one upstream event means for the client's stream.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Forward this chunk.
    Chunk(StreamEvent),
    /// `[DONE]`: the stream is complete.
    Done,
    /// Nothing to forward (an empty keep-alive event).
    Skip,
}

/// What the translation remembers between events.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    /// A choice reported its finish reason, so the answer is whole even if `[DONE]` never comes.
    finished: bool,
    /// Recognises ordinary chunks, each resumed where it stops repeating the last.
    scanner: chunk_scan::ChunkScanner,
}

#[derive(Deserialize)]
struct ChunkProbe<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChoiceProbe<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChoiceProbe<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

/// Translates one event's data.
pub(crate) fn step(data: String, state: &mut StreamState) -> Result<Step, ProviderError> {
    let trimmed = data.trim();
    if trimmed == "[DONE]" {
        return Ok(Step::Done);
    }
    if trimmed.is_empty() {
        return Ok(Step::Skip);
    }
    let (usage, usage_only) = match state.scanner.ordinary(trimmed.as_bytes()) {
        Some(found) => {
            state.finished |= found.finished;
            (None, false)
        }
        None => probe(trimmed, state)?,
    };
    // The chunk goes on as the JSON that was read, and as one line, the `data:` line the server frames it
    // in: without the spaces around it that `trim` takes and JSON does not allow (a form feed, U+00A0...),
    // and with the line breaks of an event spread over several `data:` lines (joined with `\n` by the SSE
    // parser; JSON allows none inside a string, so they are whitespace between tokens) made spaces.
    let cleaned = (trimmed.len() != data.len() || memchr::memchr(b'\n', trimmed.as_bytes()).is_some())
        .then(|| trimmed.replace('\n', " "));
    let data = cleaned.unwrap_or(data);
    Ok(Step::Chunk(StreamEvent {
        data: Bytes::from(data),
        usage,
        usage_only,
        estimated: false,
    }))
}

/// Reads a chunk that is not [`chunk_scan::ordinary`]: its usage, and whether it reports nothing else;
/// an error event or malformed JSON is an error.
fn probe(json: &str, state: &mut StreamState) -> Result<(Option<TokenUsage>, bool), ProviderError> {
    let probe: ChunkProbe<'_> = serde_json::from_str(json).map_err(|e| ProviderError::Protocol {
        detail: format!("malformed stream event: {e}"),
    })?;
    if probe.error.is_some() {
        let body = super::error::parse_error_body(500, json.as_bytes());
        return Err(ProviderError::Server {
            status: 500,
            message: body.error.message,
        });
    }
    if probe.choices.iter().any(|c| c.finish_reason.is_some()) {
        state.finished = true;
    }
    let usage_only = probe.usage.is_some() && probe.choices.is_empty();
    Ok((probe.usage.as_ref().map(TokenUsage::from_openai), usage_only))
}

/// Whether [`chunk_scan::ordinary`] and the full probe agree on each line of `text`, and whether a
/// [`chunk_scan::ChunkScanner`] given the lines one after another answers as a scan of each alone: when
/// the scan answers, the probe reads a chunk with no usage and the same finish. For the fuzz target
/// `chunk_scan` and the tests.
pub(crate) fn scan_agrees(text: &str) -> bool {
    let mut scanner = chunk_scan::ChunkScanner::default();
    text.split('\n').all(|json| {
        let alone = chunk_scan::ordinary(json.as_bytes());
        if scanner.ordinary(json.as_bytes()) != alone {
            return false;
        }
        let Some(found) = alone else {
            return true;
        };
        let mut state = StreamState::default();
        matches!(probe(json, &mut state), Ok((None, false))) && state.finished == found.finished
    })
}

impl SseTranslator for StreamState {
    fn event(&mut self, data: String, out: &mut VecDeque<StreamEvent>) -> Result<Flow, ProviderError> {
        match step(data, self)? {
            Step::Chunk(event) => out.push_back(event),
            Step::Done => return Ok(Flow::End),
            Step::Skip => {}
        }
        Ok(Flow::Continue)
    }

    fn close(&mut self, _out: &mut VecDeque<StreamEvent>) -> Result<(), ProviderError> {
        // A server that closes after the last finish reason but without `[DONE]` has still sent a whole
        // answer; one that closes before has not.
        if self.finished {
            Ok(())
        } else {
            Err(ProviderError::Truncated {
                detail: "the stream ended without [DONE]".to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_openai_stream_translates() {
        let events = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hi \"there\""},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
            "[DONE]",
        ];
        let mut state = StreamState::default();
        let steps: Vec<Step> = events
            .iter()
            .map(|e| step((*e).to_owned(), &mut state).unwrap())
            .collect();
        for (i, s) in steps.iter().take(3).enumerate() {
            match s {
                Step::Chunk(event) => {
                    assert_eq!(event.data, events[i].as_bytes(), "chunk bytes are forwarded untouched");
                    assert!(!event.usage_only);
                    assert_eq!(event.usage, None);
                }
                other => panic!("{other:?}"),
            }
        }
        match &steps[3] {
            Step::Chunk(event) => {
                assert!(event.usage_only);
                assert_eq!(event.usage, Some(TokenUsage::new(9, 3)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(steps[4], Step::Done);
        assert!(state.finished);
    }

    #[test]
    fn documented_usage_chunk_is_read_by_billing_category() {
        let transcript = include_str!("../../../../tests/fixtures/openai/stream_usage.sse");
        let mut state = StreamState::default();
        let mut reported = Vec::new();
        for data in transcript.lines().filter_map(|l| l.strip_prefix("data: ")) {
            if let Step::Chunk(event) = step(data.to_owned(), &mut state).unwrap()
                && let Some(usage) = event.usage
            {
                reported.push((usage, event.usage_only, event.data));
            }
        }
        let [(usage, usage_only, data)] = reported.as_slice() else {
            panic!("{reported:?}")
        };
        assert_eq!(
            *usage,
            TokenUsage {
                input: 86,
                cache_read: 1920,
                cache_write_5m: 0,
                cache_write_1h: 0,
                output: 300,
                reasoning: 256,
            }
        );
        assert!(usage_only);
        // The client gets the vendor's chunk, its details included.
        let chunk: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(chunk["usage"]["prompt_tokens_details"]["cached_tokens"], 1920);
        assert_eq!(chunk["usage"]["completion_tokens_details"]["reasoning_tokens"], 256);
    }

    #[test]
    fn malformed_and_error_events_fail() {
        let mut state = StreamState::default();
        assert!(matches!(
            step("{not json".to_owned(), &mut state),
            Err(ProviderError::Protocol { .. })
        ));
        match step(
            r#"{"error": {"message": "overloaded mid-stream", "type": "server_error"}}"#.to_owned(),
            &mut state,
        ) {
            Err(ProviderError::Server { message, .. }) => assert_eq!(message, "overloaded mid-stream"),
            other => panic!("{other:?}"),
        }
        assert_eq!(step("  ".to_owned(), &mut state).unwrap(), Step::Skip);
    }

    #[test]
    fn the_scan_and_the_probe_agree_on_recorded_and_odd_chunks() {
        let transcript = include_str!("../../../../tests/fixtures/openai/stream_usage.sse");
        let mut scanned = 0;
        for data in transcript.lines().filter_map(|l| l.strip_prefix("data: ")) {
            assert!(scan_agrees(data), "{data}");
            scanned += usize::from(chunk_scan::ordinary(data.as_bytes()).is_some());
        }
        assert!(scanned > 1, "the scan recognises the ordinary chunks of a real stream");
        // The same chunks one after another, each scan resumed from the last one's.
        let chunks: Vec<&str> = transcript.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
        assert!(scan_agrees(&chunks.join("\n")));
        for data in [
            r#"{"choices":[{"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":null,"error":null}"#,
            r#"{"choices":[{"finish_reason":null,"x":[1,{"y":"\ud800"}]}]}"#,
            r#" {"choices" : [ ] } "#,
        ] {
            assert!(chunk_scan::ordinary(data.as_bytes()).is_some(), "{data}");
            assert!(scan_agrees(data), "{data}");
        }
    }
}
