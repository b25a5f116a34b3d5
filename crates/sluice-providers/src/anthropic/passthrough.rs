//! The Messages pass-through to Anthropic: the client's body byte for byte (model swapped), the answer
//! byte for byte, the usage read on the way.
//!
//! Usage, from Anthropic's API reference and prompt caching guide: `message_start` carries the input
//! counts (`input_tokens` uncached, `cache_read_input_tokens`, `cache_creation_input_tokens` with its
//! split by lifetime in `cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`) and a
//! first `output_tokens`; `message_delta` carries the cumulative `output_tokens` (and, on newer models,
//! final input counts and `output_tokens_details.thinking_tokens`), each replacing the earlier value.
//! Cache writes without a split are 5-minute writes, the default lifetime. Errors are classified by the
//! adapter's own `error` module, so a pass-through fails over exactly as a translated call does.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use serde::Deserialize;
use sluice_api::TokenUsage;

use super::AnthropicAdapter;
use super::error::{AnthropicError, classify_stream_error, error_from_response, rate_limit_snapshot};
use crate::error::error_chain;
use crate::model_field::swap_model;
use crate::passthrough::{
    FrameStream, MessagesBody, MessagesCall, MessagesPassthrough, MessagesReply, RawFrame, TokenCount,
};
use crate::sse::MAX_EVENT_BYTES;
use crate::sse_frames::{FrameSplitter, fields};
use crate::transport::{self, MAX_RESPONSE_BYTES};
use crate::{BoxFuture, ProviderError, TimeoutPhase};

impl AnthropicAdapter {
    /// The HTTP request of a pass-through call to `url`: the body with the vendor's model, our key, the
    /// client's `anthropic-version` and `anthropic-beta`.
    fn passthrough_request(
        &self,
        url: &str,
        call: &MessagesCall<'_>,
    ) -> Result<crate::client::UpstreamRequest, ProviderError> {
        let body = swap_model(call.body, call.model)?;
        let version = call
            .client_headers
            .get("anthropic-version")
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(Self::API_VERSION));
        let mut request = self
            .client
            .post(crate::client::uri(url)?)
            .header("x-api-key", transport::key_header(call.key, "")?)
            .header("anthropic-version", version)
            .header(CONTENT_TYPE, "application/json");
        for beta in call.client_headers.get_all("anthropic-beta") {
            request = request.header("anthropic-beta", beta.clone());
        }
        Ok(request.body(body))
    }
}

impl MessagesPassthrough for AnthropicAdapter {
    fn messages<'a>(&'a self, call: MessagesCall<'a>) -> BoxFuture<'a, Result<MessagesReply, ProviderError>> {
        Box::pin(async move {
            let request = self.passthrough_request(&self.endpoint, &call)?;
            let response = transport::send(request, &self.timeouts).await?;
            let limits = rate_limit_snapshot(response.headers(), SystemTime::now());
            if !response.status().is_success() {
                return Err(error_from_response(response, self.timeouts.idle).await);
            }
            let streaming = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
            if streaming {
                let frames = frames(transport::body_stream(response), self.timeouts.idle);
                return Ok(MessagesReply {
                    body: MessagesBody::Stream(frames),
                    limits,
                });
            }
            let body = transport::read_body(response, self.timeouts.idle, MAX_RESPONSE_BYTES).await?;
            let usage = complete_usage(&body)?;
            Ok(MessagesReply {
                body: MessagesBody::Complete { body, usage },
                limits,
            })
        })
    }

    fn count_tokens<'a>(&'a self, call: MessagesCall<'a>) -> BoxFuture<'a, Result<TokenCount, ProviderError>> {
        Box::pin(async move {
            let url = format!("{}/count_tokens", self.endpoint);
            let request = self.passthrough_request(&url, &call)?;
            let response = transport::send(request, &self.timeouts).await?;
            let limits = rate_limit_snapshot(response.headers(), SystemTime::now());
            if !response.status().is_success() {
                return Err(error_from_response(response, self.timeouts.idle).await);
            }
            let body = transport::read_body(response, self.timeouts.idle, MAX_RESPONSE_BYTES).await?;
            #[derive(Deserialize)]
            struct Count {
                input_tokens: u64,
            }
            let count: Count = serde_json::from_slice(&body).map_err(|e| ProviderError::Protocol {
                detail: format!("the count_tokens answer has no input_tokens: {e}"),
            })?;
            Ok(TokenCount {
                body,
                input_tokens: count.input_tokens,
                limits,
            })
        })
    }
}

// === Usage ===

/// Anthropic's usage object as the pass-through reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
struct OutputDetails {
    #[serde(default)]
    thinking_tokens: Option<u64>,
}

impl WireUsage {
    /// Takes the counts a later event reports: they are cumulative, so each replaces the earlier one.
    fn update(&mut self, later: WireUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.cache_creation = later.cache_creation.or(self.cache_creation);
        self.output_tokens_details = later.output_tokens_details.or(self.output_tokens_details);
    }

    /// The usage by billing category.
    pub(crate) fn token_usage(&self) -> TokenUsage {
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        let (write_5m, write_1h) = match self.cache_creation {
            Some(split) => {
                let hour = split.ephemeral_1h_input_tokens.unwrap_or(0);
                let five = split.ephemeral_5m_input_tokens.unwrap_or(0);
                // Whatever of the total the split does not account for was written for the default 5 minutes.
                (five.max(written.saturating_sub(hour)), hour)
            }
            None => (written, 0),
        };
        let output = self.output_tokens.unwrap_or(0);
        TokenUsage {
            input: self.input_tokens.unwrap_or(0),
            cache_read: self.cache_read_input_tokens.unwrap_or(0),
            cache_write_5m: write_5m,
            cache_write_1h: write_1h,
            output,
            reasoning: self
                .output_tokens_details
                .and_then(|d| d.thinking_tokens)
                .unwrap_or(0)
                .min(output),
        }
    }
}

/// The usage of a complete `message` body, read without altering it. A body that is not JSON is a
/// protocol error; one without usage has none.
fn complete_usage(body: &[u8]) -> Result<Option<TokenUsage>, ProviderError> {
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        usage: Option<WireUsage>,
    }
    let message: Message = serde_json::from_slice(body).map_err(|e| ProviderError::Protocol {
        detail: format!("the response body is not an Anthropic message: {e}"),
    })?;
    Ok(message.usage.map(|u| u.token_usage()))
}

// === Streams ===

/// What the pass-through reads of a frame's data: its type, the usage it carries, an error.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: Option<ProbeMessage>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<AnthropicError>,
}

#[derive(Deserialize)]
struct ProbeMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// What a frame means for the stream.
enum Frame {
    /// Forward it; its usage changed the call's if `usage` is set.
    Forward(RawFrame),
    /// Forward it: it is `message_stop`, the end of a whole answer.
    Last(RawFrame),
    /// The vendor's `error` event: the stream ends with this error.
    Failed(ProviderError),
}

/// Reads one frame, updating the call's usage.
fn read_frame(bytes: Bytes, usage: &mut WireUsage) -> Frame {
    let (_, data) = fields(&bytes);
    // Frames whose data is not a JSON event (comments, blank lines, what the gateway does not know) are
    // forwarded as they are: the pass-through reads only what it needs.
    let Ok(probe) = serde_json::from_slice::<Probe>(&data) else {
        return Frame::Forward(RawFrame { bytes, usage: None });
    };
    let reported = match probe.kind.as_str() {
        "message_start" => probe.message.and_then(|m| m.usage),
        "message_delta" => probe.usage,
        "message_stop" => return Frame::Last(RawFrame { bytes, usage: None }),
        "error" => return Frame::Failed(classify_stream_error(probe.error.unwrap_or_default())),
        _ => None,
    };
    let changed = reported.map(|later| {
        usage.update(later);
        usage.token_usage()
    });
    Frame::Forward(RawFrame { bytes, usage: changed })
}

/// The frames of an SSE body, waiting at most `idle` between reads. The stream ends after `message_stop`,
/// or with an error: the vendor's `error` event, a body that ends or fails before `message_stop`, an idle
/// timeout.
pub(crate) fn frames<S, B, E>(body: S, idle: Duration) -> FrameStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    struct State<S> {
        body: std::pin::Pin<Box<S>>,
        splitter: FrameSplitter,
        usage: WireUsage,
        ended: bool,
    }
    let state = State {
        body: Box::pin(body),
        splitter: FrameSplitter::new(),
        usage: WireUsage::default(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(state, move |mut s| async move {
        if s.ended {
            return None;
        }
        loop {
            if let Some(bytes) = s.splitter.next_frame() {
                let item = match read_frame(bytes, &mut s.usage) {
                    Frame::Forward(frame) => Ok(frame),
                    Frame::Last(frame) => {
                        s.ended = true;
                        Ok(frame)
                    }
                    Frame::Failed(err) => {
                        s.ended = true;
                        Err(err)
                    }
                };
                return Some((item, s));
            }
            // No whole frame is buffered: what is, is one unfinished frame, bounded as the parser bounds
            // an event, so a vendor that never ends a frame cannot grow the buffer without end.
            if s.splitter.rest().len() > MAX_EVENT_BYTES {
                s.ended = true;
                let detail = format!("an event stream frame is larger than {MAX_EVENT_BYTES} bytes");
                return Some((Err(ProviderError::Protocol { detail }), s));
            }
            let error = match tokio::time::timeout(idle, s.body.next()).await {
                Ok(Some(Ok(piece))) => {
                    s.splitter.push(piece.as_ref());
                    continue;
                }
                Err(_) => ProviderError::Timeout {
                    phase: TimeoutPhase::Idle,
                    after: idle,
                },
                Ok(Some(Err(e))) => ProviderError::Truncated {
                    detail: error_chain(&e),
                },
                Ok(None) => ProviderError::Truncated {
                    detail: format!(
                        "the stream ended without message_stop ({} bytes of an unfinished event)",
                        s.splitter.rest().len()
                    ),
                },
            };
            s.ended = true;
            return Some((Err(error), s));
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    const THINKING: &str = include_str!("../../../../tests/fixtures/anthropic-messages/stream_thinking.sse");
    const TOOL_USE: &str = include_str!("../../../../tests/fixtures/anthropic/stream_tool_use.sse");

    async fn drive(pieces: Vec<Vec<u8>>) -> Vec<Result<RawFrame, String>> {
        let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<Vec<u8>, Infallible>));
        frames(body, Duration::from_secs(5))
            .map(|item| item.map_err(|e| format!("{e:?}")))
            .collect()
            .await
    }

    /// The usage the last frame that carried one reports.
    fn last_usage(items: &[Result<RawFrame, String>]) -> Option<TokenUsage> {
        items.iter().filter_map(|i| i.as_ref().ok()?.usage).last()
    }

    #[tokio::test]
    async fn frames_are_the_body_and_the_usage_is_read_however_it_is_cut() {
        let thinking_usage = TokenUsage {
            input: 35,
            cache_read: 4000,
            cache_write_5m: 200,
            cache_write_1h: 1000,
            output: 220,
            reasoning: 180,
        };
        let tool_usage = TokenUsage::new(472, 89);
        for (transcript, usage) in [(THINKING, thinking_usage), (TOOL_USE, tool_usage)] {
            let whole = drive(vec![transcript.as_bytes().to_vec()]).await;
            assert!(whole.iter().all(Result::is_ok), "{whole:?}");
            let joined: Vec<u8> = whole.iter().flat_map(|f| f.as_ref().unwrap().bytes.to_vec()).collect();
            assert_eq!(joined, transcript.as_bytes(), "every byte forwarded as it came");
            assert!(whole.iter().all(|f| f.as_ref().unwrap().bytes.starts_with(b"event: ")));
            assert_eq!(last_usage(&whole), Some(usage));
            let bytes = transcript.as_bytes();
            let one_byte: Vec<Vec<u8>> = bytes.iter().map(|b| vec![*b]).collect();
            assert_eq!(drive(one_byte).await, whole, "one byte at a time");
            for at in 1..bytes.len() {
                assert_eq!(
                    drive(vec![bytes[..at].to_vec(), bytes[at..].to_vec()]).await,
                    whole,
                    "cut at {at}"
                );
            }
        }
    }

    #[tokio::test]
    async fn message_start_gives_input_and_message_delta_the_output() {
        let items = drive(vec![THINKING.as_bytes().to_vec()]).await;
        let usages: Vec<TokenUsage> = items.iter().filter_map(|i| i.as_ref().unwrap().usage).collect();
        assert_eq!(usages.len(), 2);
        assert_eq!(
            (usages[0].input, usages[0].cache_write_1h, usages[0].output),
            (35, 1000, 1)
        );
        assert_eq!((usages[1].output, usages[1].reasoning), (220, 180));
    }

    #[tokio::test]
    async fn a_frame_that_never_ends_is_refused_past_the_event_limit() {
        let start = TOOL_USE.split("event: content_block_start").next().unwrap();
        let mut pieces = vec![start.as_bytes().to_vec()];
        let line = vec![b'x'; 1 << 20];
        pieces.extend(std::iter::repeat_n(line, MAX_EVENT_BYTES / (1 << 20) + 2));
        let items = drive(pieces).await;
        let (last, rest) = items.split_last().unwrap();
        assert!(
            !rest.is_empty() && rest.iter().all(Result::is_ok),
            "the frames before it pass"
        );
        let last = last.as_ref().unwrap_err();
        assert!(
            last.starts_with("Protocol") && last.contains("frame is larger than"),
            "{last}"
        );
    }

    #[tokio::test]
    async fn errors_cuts_and_silence_end_the_stream_with_an_error() {
        let cut = TOOL_USE.split("event: message_delta").next().unwrap();
        let items = drive(vec![cut.as_bytes().to_vec()]).await;
        let (last, rest) = items.split_last().unwrap();
        assert!(rest.iter().all(Result::is_ok));
        assert!(last.as_ref().unwrap_err().starts_with("Truncated"), "{last:?}");
        assert_eq!(last_usage(&items), Some(TokenUsage::new(472, 2)), "the usage so far");

        let failed = format!(
            "{cut}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        );
        let items = drive(vec![failed.into_bytes()]).await;
        assert!(items.last().unwrap().as_ref().unwrap_err().starts_with("Overloaded"));
        assert_eq!(
            items.iter().filter(|i| i.is_err()).count(),
            1,
            "nothing after the error"
        );

        let body = futures_util::stream::pending::<Result<Vec<u8>, Infallible>>();
        tokio::time::pause();
        let mut stream = frames(body, Duration::from_secs(3));
        assert!(matches!(
            stream.next().await,
            Some(Err(ProviderError::Timeout {
                phase: TimeoutPhase::Idle,
                ..
            }))
        ));
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn complete_usage_splits_cache_writes_by_lifetime() {
        let body = include_bytes!("../../../../tests/fixtures/anthropic-messages/message_cache_usage.json");
        assert_eq!(
            complete_usage(body).unwrap(),
            Some(TokenUsage {
                input: 2048,
                cache_read: 1800,
                cache_write_5m: 148,
                cache_write_1h: 100,
                output: 503,
                reasoning: 0,
            })
        );
        // Without a split every write is a 5-minute one; a split short of the total gives 5 minutes the rest.
        let body = br#"{"usage": {"input_tokens": 1, "cache_creation_input_tokens": 30, "output_tokens": 2}}"#;
        assert_eq!(complete_usage(body).unwrap().unwrap().cache_write_5m, 30);
        let body =
            br#"{"usage": {"cache_creation_input_tokens": 30, "cache_creation": {"ephemeral_1h_input_tokens": 10}}}"#;
        let usage = complete_usage(body).unwrap().unwrap();
        assert_eq!((usage.cache_write_5m, usage.cache_write_1h), (20, 10));
        assert_eq!(complete_usage(br#"{"id": "m"}"#).unwrap(), None);
        assert!(matches!(complete_usage(b"<html>"), Err(ProviderError::Protocol { .. })));
    }
}
