//! `chat.completion.chunk`s -> Anthropic's stream events, as server-sent events.
//!
//! Event shapes from Anthropic's streaming guide (platform.claude.com/docs/en/build-with-claude/streaming):
//! `message_start` (the message with empty content), then per content block `content_block_start`,
//! `content_block_delta`s (`text_delta`, or `input_json_delta` with `partial_json` for a `tool_use` block),
//! `content_block_stop`; then `message_delta` with the `stop_reason` and the usage (cumulative, input
//! included, as Anthropic's final counts are) and `message_stop`. One block is open at a time, as Anthropic
//! streams them. A stream that breaks ends with an `error` event ([`MessagesStream::fail`]).

use bytes::BytesMut;
use serde::Serialize;
use serde_json::Value;
use sluice_api::{TokenUsage, Usage};

use super::{AnthropicUsage, error_event, stop_reason};
use crate::chat::{read_chunk, usage_of};
use crate::sse::write_event;
use crate::{ProtocolError, StreamFailure};

/// The block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    /// A `tool_use` block, by its chat tool-call index.
    Tool(u32),
}

/// The translation of one stream: feed it each chunk with [`MessagesStream::chunk`], then end it with
/// [`MessagesStream::finish`] when the upstream stream ended cleanly, or [`MessagesStream::fail`] when it
/// broke. Each call appends the SSE text to send to `out`; calls after the end append nothing.
#[derive(Debug)]
pub struct MessagesStream {
    id: String,
    /// The requested model, reported until a chunk names the one that answers.
    model: String,
    prompt_tokens: Option<u64>,
    started: bool,
    ended: bool,
    /// Blocks started so far; the open one is the last.
    blocks: usize,
    open: Option<Open>,
    /// Chat tool-call indexes seen, in order.
    calls: Vec<u32>,
    finish_reason: Option<String>,
    refused: bool,
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessage<'a>,
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: StartUsage,
}

#[derive(Serialize)]
struct StartUsage {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    content_block: StartBlock<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text { text: &'static str },
    ToolUse { id: &'a str, name: &'a str, input: Value },
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    delta: Delta<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct BlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
}

#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: AnthropicUsage,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct MessageStop {
    #[serde(rename = "type")]
    kind: &'static str,
}

impl MessagesStream {
    /// The translation of the stream of the message `id` (such as `msg_` and the gateway's request id) for
    /// a request of `model`. `prompt_tokens` is the gateway's count of the prompt, if it made one, for
    /// `message_start` (the upstream's count arrives only with the last chunk, and `message_delta` reports
    /// it).
    pub fn new(id: impl Into<String>, model: impl Into<String>, prompt_tokens: Option<u64>) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            prompt_tokens,
            started: false,
            ended: false,
            blocks: 0,
            open: None,
            calls: Vec::new(),
            finish_reason: None,
            refused: false,
            usage: None,
        }
    }

    /// Whether the stream has ended (with `finish` or `fail`).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Translates one chunk: the JSON of a `chat.completion.chunk`, without SSE framing. A chunk that is
    /// not one is an error and nothing is appended; end the stream with [`MessagesStream::fail`] then.
    pub fn chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.ended {
            return Ok(());
        }
        let chunk = read_chunk(data)?;
        let start = out.len();
        if !self.started
            && let Some(model) = chunk.model.as_deref().filter(|m| !m.is_empty())
        {
            self.model = model.to_owned();
        }
        let result = self.apply(&chunk, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn apply(&mut self, chunk: &crate::chat::Chunk<'_>, out: &mut BytesMut) -> Result<(), ProtocolError> {
        self.start(out)?;
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return Ok(());
        };
        let delta = &choice.delta;
        self.check_calls(delta)?;
        for (text, refusal) in [(delta.content.as_deref(), false), (delta.refusal.as_deref(), true)] {
            let Some(text) = text.filter(|t| !t.is_empty()) else {
                continue;
            };
            self.refused |= refusal;
            if self.open != Some(Open::Text) {
                self.open_block(out, Open::Text, StartBlock::Text { text: "" })?;
            }
            self.delta(out, Delta::TextDelta { text })?;
        }
        for call in delta.tool_calls.as_deref().unwrap_or_default() {
            let function = call.function.as_ref();
            if !self.calls.contains(&call.index) {
                let id = match call.id.as_deref() {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => tool_id(&self.id, self.blocks),
                };
                let name = function.and_then(|f| f.name.as_deref()).unwrap_or("");
                self.calls.push(call.index);
                let block = StartBlock::ToolUse {
                    id: &id,
                    name,
                    input: Value::Object(serde_json::Map::new()),
                };
                self.open_block(out, Open::Tool(call.index), block)?;
            }
            if let Some(arguments) = function.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
                self.delta(
                    out,
                    Delta::InputJsonDelta {
                        partial_json: arguments,
                    },
                )?;
            }
        }
        if let Some(reason) = choice.finish_reason.as_deref() {
            self.finish_reason = Some(reason.to_owned());
        }
        Ok(())
    }

    /// Checks, before anything is sent, that the chunk's tool calls can be streamed as Anthropic streams
    /// blocks, one at a time: a call that goes on must be the block still open once the chunk's text (which
    /// comes first) has been placed.
    fn check_calls(&self, delta: &crate::chat::Delta<'_>) -> Result<(), ProtocolError> {
        let text = delta.content.as_deref().is_some_and(|t| !t.is_empty())
            || delta.refusal.as_deref().is_some_and(|t| !t.is_empty());
        let mut open = match self.open {
            Some(Open::Tool(index)) if !text => Some(index),
            _ => None,
        };
        let mut new = Vec::new();
        for call in delta.tool_calls.as_deref().unwrap_or_default() {
            let known = self.calls.contains(&call.index) || new.contains(&call.index);
            if known && open != Some(call.index) {
                return Err(ProtocolError::answer(format!(
                    "tool call {} went on after another content block began",
                    call.index
                )));
            }
            if !known {
                new.push(call.index);
                open = Some(call.index);
            }
        }
        Ok(())
    }

    /// Ends a stream whose upstream ended cleanly: closes the open block, then `message_delta` with the
    /// stop reason and the usage (the gateway's record `usage` when it has one, else the usage chunk's) and
    /// `message_stop`.
    pub fn finish(&mut self, usage: Option<&TokenUsage>, out: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.ended {
            return Ok(());
        }
        self.start(out)?;
        self.close(out)?;
        self.ended = true;
        let stop = match stop_reason(self.finish_reason.as_deref()) {
            "end_turn" if self.refused => "refusal",
            other => other,
        };
        let usage = usage_of(usage, self.usage.as_ref()).unwrap_or_default();
        let delta = MessageDelta {
            kind: "message_delta",
            delta: StopDelta {
                stop_reason: stop,
                stop_sequence: None,
            },
            usage: AnthropicUsage::from(&usage),
        };
        write_event(out, "message_delta", &delta)?;
        write_event(out, "message_stop", &MessageStop { kind: "message_stop" })
    }

    /// Ends a stream that broke with Anthropic's `error` event (`overloaded_error`, `rate_limit_error` or
    /// `api_error` by the failure's kind). The open block is left open, as Anthropic's own broken streams
    /// leave it.
    pub fn fail(&mut self, failure: StreamFailure<'_>, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ended = true;
        out.extend_from_slice(&error_event(failure.kind, failure.message));
    }

    // === Events ===

    fn start(&mut self, out: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let start = MessageStart {
            kind: "message_start",
            message: StartMessage {
                id: &self.id,
                kind: "message",
                role: "assistant",
                model: &self.model,
                content: [],
                stop_reason: None,
                stop_sequence: None,
                usage: StartUsage {
                    input_tokens: self.prompt_tokens.unwrap_or(0),
                    output_tokens: 0,
                },
            },
        };
        write_event(out, "message_start", &start)
    }

    fn open_block(&mut self, out: &mut BytesMut, open: Open, block: StartBlock<'_>) -> Result<(), ProtocolError> {
        self.close(out)?;
        let start = BlockStart {
            kind: "content_block_start",
            index: self.blocks,
            content_block: block,
        };
        write_event(out, "content_block_start", &start)?;
        self.blocks += 1;
        self.open = Some(open);
        Ok(())
    }

    fn delta(&mut self, out: &mut BytesMut, delta: Delta<'_>) -> Result<(), ProtocolError> {
        let event = BlockDelta {
            kind: "content_block_delta",
            index: self.blocks.saturating_sub(1),
            delta,
        };
        write_event(out, "content_block_delta", &event)
    }

    fn close(&mut self, out: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.open.take().is_none() {
            return Ok(());
        }
        let stop = BlockStop {
            kind: "content_block_stop",
            index: self.blocks.saturating_sub(1),
        };
        write_event(out, "content_block_stop", &stop)
    }
}

/// The id of a tool call the upstream named none for: made from the message id and the block index.
pub(super) fn tool_id(message_id: &str, block: usize) -> String {
    let base = message_id.strip_prefix("msg_").unwrap_or(message_id);
    format!("toolu_{base}_{block}")
}
