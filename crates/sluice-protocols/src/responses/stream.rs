//! `chat.completion.chunk`s -> the Responses API's stream events, as server-sent events.
//!
//! Event shapes from OpenAI's streaming reference (developers.openai.com/api/reference/resources/responses/
//! streaming-events) and the official SDK's event types; the order is OpenAI's: `response.created`,
//! `response.in_progress`, then per output item `response.output_item.added`, its content
//! (`response.content_part.added`, `response.output_text.delta`s, `response.output_text.done`,
//! `response.content_part.done`; or `response.function_call_arguments.delta`s and `.done`; or the
//! `response.reasoning_text.*` events of a reasoning item), `response.output_item.done`; and last
//! `response.completed` (or `response.incomplete` when the output cap or a content filter cut the answer,
//! as OpenAI sends it), carrying the usage. Every event has its `sequence_number`, counted from 0, and its
//! type as the SSE `event:` name. One item is open at a time: a new one closes the one before, as OpenAI
//! streams them.
//!
//! A stream that breaks ends with [`ResponsesStream::fail`]: `response.failed`, never `response.completed`.

use bytes::BytesMut;
use serde::Serialize;
use sluice_api::{TokenUsage, Usage};

use super::{
    Item, ItemView, ResponseEcho, ResponseError, ResponseObject, ResponsesUsage, Status, item_id, output_text,
    reasoning_text, refusal_part,
};
use crate::chat::{Chunk, read_chunk, usage_of};
use crate::sse::write_event;
use crate::{FailureKind, ProtocolError, StreamFailure};

/// The content part of the open message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
}

/// The item being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Reasoning,
    /// A message, with the content part being streamed and its index.
    Message {
        part: Option<(PartKind, usize)>,
        parts: usize,
    },
    /// A function call, by its chat tool-call index.
    Call,
}

/// The translation of one stream: feed it each chunk with [`ResponsesStream::chunk`], then end it with
/// [`ResponsesStream::finish`] when the upstream stream ended cleanly, or [`ResponsesStream::fail`] when it
/// broke. Each call appends the SSE text to send to `out`; calls after the end append nothing.
#[derive(Debug)]
pub struct ResponsesStream {
    echo: ResponseEcho,
    id: String,
    created_at: u64,
    /// The model the chunks name, once one did.
    model: Option<String>,
    sequence: u64,
    started: bool,
    ended: bool,
    items: Vec<Item>,
    /// The open item is the last of `items`.
    open: Option<Open>,
    /// Chat tool-call index -> output index, for every call seen.
    calls: Vec<(u32, usize)>,
    status: Status,
    usage: Option<Usage>,
}

/// One stream event; fields are left out when the event type has none.
#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<ItemView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<Part<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<[(); 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseObject<'a>>,
}

impl<'a> Event<'a> {
    fn new(kind: &'static str, sequence_number: u64) -> Self {
        Self {
            kind,
            sequence_number,
            item_id: None,
            output_index: None,
            content_index: None,
            item: None,
            part: None,
            delta: None,
            text: None,
            refusal: None,
            arguments: None,
            logprobs: None,
            response: None,
        }
    }
}

/// A content part in `content_part.added` / `.done`.
enum Part<'a> {
    Text(&'a str),
    Refusal(&'a str),
    Reasoning(&'a str),
}

impl Serialize for Part<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Part::Text(text) => output_text(text).serialize(serializer),
            Part::Refusal(refusal) => refusal_part(refusal).serialize(serializer),
            Part::Reasoning(text) => reasoning_text(text).serialize(serializer),
        }
    }
}

impl ResponsesStream {
    /// The translation of the stream of the response `id` (such as `resp_` and the gateway's request id),
    /// created at Unix time `created_at`, for the request `echo` came from.
    pub fn new(echo: ResponseEcho, id: impl Into<String>, created_at: u64) -> Self {
        Self {
            echo,
            id: id.into(),
            created_at,
            model: None,
            sequence: 0,
            started: false,
            ended: false,
            items: Vec::new(),
            open: None,
            calls: Vec::new(),
            status: Status::InProgress,
            usage: None,
        }
    }

    /// Whether the stream has ended (with `finish` or `fail`).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Translates one chunk: the JSON of a `chat.completion.chunk`, without SSE framing. A chunk that is
    /// not one is an error and nothing is appended; end the stream with [`ResponsesStream::fail`] then.
    pub fn chunk(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.ended {
            return Ok(());
        }
        let chunk = read_chunk(data)?;
        let start = out.len();
        let result = self.apply(&chunk, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn apply(&mut self, chunk: &Chunk<'_>, out: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.model.is_none() {
            self.model = chunk.model.as_deref().filter(|m| !m.is_empty()).map(str::to_owned);
        }
        self.start(out)?;
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return Ok(());
        };
        let delta = &choice.delta;
        self.check_calls(delta)?;
        if let Some(text) = delta.reasoning_text() {
            if self.open != Some(Open::Reasoning) {
                self.open_item(
                    out,
                    |id| Item::Reasoning {
                        id,
                        text: String::new(),
                    },
                    "rs",
                    Open::Reasoning,
                )?;
                self.emit_part(out, "response.content_part.added", 0)?;
            }
            self.push_reasoning(text);
            let seq = self.next();
            let mut event = self.item_event("response.reasoning_text.delta", seq);
            event.content_index = Some(0);
            event.delta = Some(text);
            write_event(out, event.kind, &event)?;
        }
        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            self.message_delta(out, PartKind::Text, text)?;
        }
        if let Some(refusal) = delta.refusal.as_deref().filter(|t| !t.is_empty()) {
            self.message_delta(out, PartKind::Refusal, refusal)?;
        }
        for call in delta.tool_calls.as_deref().unwrap_or_default() {
            let function = call.function.as_ref();
            let name = function.and_then(|f| f.name.as_deref()).unwrap_or("");
            let arguments = function.and_then(|f| f.arguments.as_deref()).unwrap_or("");
            match self
                .calls
                .iter()
                .find(|(index, _)| *index == call.index)
                .map(|(_, at)| *at)
            {
                Some(at) if self.open == Some(Open::Call) && at + 1 == self.items.len() => {
                    if let Some(Item::FunctionCall { name: known, .. }) = self.items.last_mut() {
                        known.push_str(name);
                    }
                }
                Some(_) => unreachable_call(call.index)?,
                None => {
                    let index = self.items.len();
                    let call_id = match call.id.as_deref() {
                        Some(id) if !id.is_empty() => id.to_owned(),
                        _ => item_id("call", &self.id, index),
                    };
                    self.calls.push((call.index, index));
                    let name = name.to_owned();
                    self.open_item(
                        out,
                        |id| Item::FunctionCall {
                            id,
                            call_id,
                            name,
                            arguments: String::new(),
                        },
                        "fc",
                        Open::Call,
                    )?;
                }
            }
            if !arguments.is_empty() {
                if let Some(Item::FunctionCall { arguments: all, .. }) = self.items.last_mut() {
                    all.push_str(arguments);
                }
                let seq = self.next();
                let mut event = self.item_event("response.function_call_arguments.delta", seq);
                event.delta = Some(arguments);
                write_event(out, event.kind, &event)?;
            }
        }
        if let Some(reason) = choice.finish_reason.as_deref() {
            self.status = Status::from_finish(Some(reason));
        }
        Ok(())
    }

    /// Checks, before anything is sent, that the chunk's tool calls can be streamed as OpenAI streams
    /// items, one at a time: a call that goes on must be the item still open once the chunk's text (which
    /// comes first) has been placed.
    fn check_calls(&self, delta: &crate::chat::Delta<'_>) -> Result<(), ProtocolError> {
        let text = delta.reasoning_text().is_some()
            || delta.content.as_deref().is_some_and(|t| !t.is_empty())
            || delta.refusal.as_deref().is_some_and(|t| !t.is_empty());
        let mut open = match self.open {
            Some(Open::Call) if !text => self.calls.last().map(|(index, _)| *index),
            _ => None,
        };
        let mut new = Vec::new();
        for call in delta.tool_calls.as_deref().unwrap_or_default() {
            let known = self.calls.iter().any(|(index, _)| *index == call.index) || new.contains(&call.index);
            if known && open != Some(call.index) {
                return unreachable_call(call.index);
            }
            if !known {
                new.push(call.index);
                open = Some(call.index);
            }
        }
        Ok(())
    }

    /// Ends a stream whose upstream ended cleanly: closes the open item and sends `response.completed`
    /// (`response.incomplete` when the answer was cut by the output cap or a content filter) with the
    /// usage: the gateway's record `usage` when it has one, else the usage chunk's.
    pub fn finish(&mut self, usage: Option<&TokenUsage>, out: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.ended {
            return Ok(());
        }
        self.start(out)?;
        if self.status == Status::InProgress {
            self.status = Status::Completed;
        }
        self.close(out)?;
        self.ended = true;
        let kind = match self.status {
            Status::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        let usage = usage_of(usage, self.usage.as_ref());
        self.lifecycle(out, kind, self.status, None, usage.as_ref())
    }

    /// Ends a stream that broke: `response.failed`, with the error and the output so far (the item that
    /// was being streamed marked `incomplete`). Never fails: should the event not serialise, a fixed one
    /// is sent.
    pub fn fail(&mut self, failure: StreamFailure<'_>, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.ended = true;
        let start = out.len();
        let code = match failure.kind {
            FailureKind::RateLimited => "rate_limit_exceeded",
            FailureKind::Overloaded | FailureKind::Upstream => "server_error",
        };
        let error = ResponseError {
            code,
            message: failure.message,
        };
        let usage = self.usage.as_ref().map(TokenUsage::from_openai);
        let result = self
            .start(out)
            .and_then(|()| self.lifecycle(out, "response.failed", Status::Failed, Some(error), usage.as_ref()));
        if result.is_err() {
            out.truncate(start);
            out.extend_from_slice(b"event: response.failed\ndata: {\"type\":\"response.failed\"}\n\n");
        }
    }

    // === Events ===

    fn next(&mut self) -> u64 {
        let seq = self.sequence;
        self.sequence += 1;
        seq
    }

    /// `response.created` and `response.in_progress`, once.
    fn start(&mut self, out: &mut BytesMut) -> Result<(), ProtocolError> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        self.lifecycle(out, "response.created", Status::InProgress, None, None)?;
        self.lifecycle(out, "response.in_progress", Status::InProgress, None, None)
    }

    fn lifecycle(
        &mut self,
        out: &mut BytesMut,
        kind: &'static str,
        status: Status,
        error: Option<ResponseError<'_>>,
        usage: Option<&TokenUsage>,
    ) -> Result<(), ProtocolError> {
        let seq = self.next();
        let mut event = Event::new(kind, seq);
        event.response = Some(ResponseObject {
            id: &self.id,
            created_at: self.created_at,
            model: self.model.as_deref().unwrap_or(self.echo.model()),
            status,
            error,
            output: &self.items,
            last_item_status: match (status, self.open) {
                (Status::Failed, Some(_)) => "incomplete",
                (Status::Incomplete(_), _) => "incomplete",
                _ => "completed",
            },
            usage: usage.map(ResponsesUsage::from),
            echo: &self.echo,
        });
        write_event(out, kind, &event)
    }

    /// An event about the open item (the last one).
    fn item_event(&self, kind: &'static str, seq: u64) -> Event<'_> {
        let mut event = Event::new(kind, seq);
        event.item_id = self.items.last().map(Item::id);
        event.output_index = Some(self.items.len().saturating_sub(1));
        event
    }

    /// Closes the open item and opens a new one, made by `make` from its id.
    fn open_item(
        &mut self,
        out: &mut BytesMut,
        make: impl FnOnce(String) -> Item,
        prefix: &str,
        open: Open,
    ) -> Result<(), ProtocolError> {
        self.close(out)?;
        let index = self.items.len();
        self.items.push(make(item_id(prefix, &self.id, index)));
        self.open = Some(open);
        let seq = self.next();
        let mut event = Event::new("response.output_item.added", seq);
        event.output_index = Some(index);
        event.item = self.items.last().map(|item| ItemView {
            item,
            status: "in_progress",
            skeleton: true,
        });
        write_event(out, event.kind, &event)
    }

    /// Appends to the open message's text or refusal part, opening the message or the part as needed.
    fn message_delta(&mut self, out: &mut BytesMut, kind: PartKind, delta: &str) -> Result<(), ProtocolError> {
        let (part, parts) = match self.open {
            Some(Open::Message { part, parts }) => (part, parts),
            _ => {
                self.open_item(
                    out,
                    |id| Item::Message {
                        id,
                        text: String::new(),
                        refusal: None,
                    },
                    "msg",
                    Open::Message { part: None, parts: 0 },
                )?;
                (None, 0)
            }
        };
        let index = match part {
            Some((open, index)) if open == kind => index,
            _ => {
                self.close_part(out)?;
                let index = parts;
                self.open = Some(Open::Message {
                    part: Some((kind, index)),
                    parts: parts + 1,
                });
                if kind == PartKind::Refusal
                    && let Some(Item::Message { refusal, .. }) = self.items.last_mut()
                {
                    refusal.get_or_insert_default();
                }
                self.emit_part(out, "response.content_part.added", index)?;
                index
            }
        };
        if let Some(Item::Message { text, refusal, .. }) = self.items.last_mut() {
            match kind {
                PartKind::Text => text.push_str(delta),
                PartKind::Refusal => refusal.get_or_insert_default().push_str(delta),
            }
        }
        let seq = self.next();
        let name = match kind {
            PartKind::Text => "response.output_text.delta",
            PartKind::Refusal => "response.refusal.delta",
        };
        let mut event = self.item_event(name, seq);
        event.content_index = Some(index);
        event.delta = Some(delta);
        if kind == PartKind::Text {
            event.logprobs = Some([]);
        }
        write_event(out, name, &event)
    }

    fn push_reasoning(&mut self, delta: &str) {
        if let Some(Item::Reasoning { text, .. }) = self.items.last_mut() {
            text.push_str(delta);
        }
    }

    /// `content_part.added` / `.done` for the open item's part at `index`, with the part as it is now.
    fn emit_part(&mut self, out: &mut BytesMut, kind: &'static str, index: usize) -> Result<(), ProtocolError> {
        let seq = self.next();
        let part = match (self.items.last(), self.open) {
            (Some(Item::Reasoning { text, .. }), _) => Part::Reasoning(text),
            (
                Some(Item::Message { refusal, .. }),
                Some(Open::Message {
                    part: Some((PartKind::Refusal, _)),
                    ..
                }),
            ) => Part::Refusal(refusal.as_deref().unwrap_or("")),
            (Some(Item::Message { text, .. }), _) => Part::Text(text),
            _ => return Ok(()),
        };
        let mut event = self.item_event(kind, seq);
        event.content_index = Some(index);
        event.part = Some(part);
        write_event(out, kind, &event)
    }

    /// Closes the open message's open part: its `.done` event and `content_part.done`.
    fn close_part(&mut self, out: &mut BytesMut) -> Result<(), ProtocolError> {
        let Some(Open::Message {
            part: Some((kind, index)),
            ..
        }) = self.open
        else {
            return Ok(());
        };
        let seq = self.next();
        let name = match kind {
            PartKind::Text => "response.output_text.done",
            PartKind::Refusal => "response.refusal.done",
        };
        let mut event = self.item_event(name, seq);
        event.content_index = Some(index);
        if let Some(Item::Message { text, refusal, .. }) = self.items.last() {
            match kind {
                PartKind::Text => {
                    event.text = Some(text);
                    event.logprobs = Some([]);
                }
                PartKind::Refusal => event.refusal = Some(refusal.as_deref().unwrap_or("")),
            }
        }
        write_event(out, name, &event)?;
        self.emit_part(out, "response.content_part.done", index)?;
        if let Some(Open::Message { parts, .. }) = self.open {
            self.open = Some(Open::Message { part: None, parts });
        }
        Ok(())
    }

    /// Closes the open item: the end of its content, then `response.output_item.done`.
    fn close(&mut self, out: &mut BytesMut) -> Result<(), ProtocolError> {
        let Some(open) = self.open else {
            return Ok(());
        };
        match open {
            Open::Reasoning => {
                let seq = self.next();
                let mut event = self.item_event("response.reasoning_text.done", seq);
                event.content_index = Some(0);
                if let Some(Item::Reasoning { text, .. }) = self.items.last() {
                    event.text = Some(text);
                }
                write_event(out, event.kind, &event)?;
                self.emit_part(out, "response.content_part.done", 0)?;
            }
            Open::Message { .. } => self.close_part(out)?,
            Open::Call => {
                let seq = self.next();
                let mut event = self.item_event("response.function_call_arguments.done", seq);
                if let Some(Item::FunctionCall { arguments, .. }) = self.items.last() {
                    event.arguments = Some(arguments);
                }
                write_event(out, event.kind, &event)?;
            }
        }
        let seq = self.next();
        let status = match self.status {
            Status::Incomplete(_) => "incomplete",
            _ => "completed",
        };
        let mut event = Event::new("response.output_item.done", seq);
        event.output_index = Some(self.items.len().saturating_sub(1));
        event.item = self.items.last().map(|item| ItemView {
            item,
            status,
            skeleton: false,
        });
        write_event(out, event.kind, &event)?;
        self.open = None;
        Ok(())
    }
}

/// The error of a tool call that goes on after another item began.
fn unreachable_call(index: u32) -> Result<(), ProtocolError> {
    Err(ProtocolError::answer(format!(
        "tool call {index} went on after another output item began"
    )))
}
