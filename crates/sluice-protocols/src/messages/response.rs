//! A complete `chat.completion` -> an Anthropic `message`.
//!
//! The first choice's text becomes a `text` block (a refusal's text too, with `stop_reason: "refusal"`),
//! each tool call a `tool_use` block whose `input` is the call's arguments parsed (an object; arguments
//! that are not a JSON object, as a model cut short may write, become `{}`). `finish_reason` maps to
//! `stop_reason`: `stop` -> `end_turn`, `length` -> `max_tokens`, `tool_calls` -> `tool_use`,
//! `content_filter` -> `refusal`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use sluice_api::TokenUsage;

use super::stream::tool_id;
use super::{AnthropicUsage, stop_reason};
use crate::ProtocolError;
use crate::chat::{read_completion, usage_of};

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: AnthropicUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text { text: &'a str },
    ToolUse { id: String, name: &'a str, input: Value },
}

/// Translates a complete `chat.completion` body into the Anthropic message `id` (such as `msg_` and the
/// gateway's request id). `usage` is the gateway's record of the call when it has one, else the
/// completion's own usage is reported (zeros when it has none).
pub fn complete(body: &[u8], id: &str, usage: Option<&TokenUsage>) -> Result<Bytes, ProtocolError> {
    let completion = read_completion(body)?;
    let choice = completion
        .choices
        .iter()
        .find(|c| c.index == 0)
        .or(completion.choices.first())
        .ok_or_else(|| ProtocolError::answer("the completion has no choices"))?;
    let message = &choice.message;
    let mut content = Vec::new();
    if let Some(text) = message.content.as_deref().filter(|t| !t.is_empty()) {
        content.push(Block::Text { text });
    }
    if let Some(refusal) = message.refusal.as_deref().filter(|t| !t.is_empty()) {
        content.push(Block::Text { text: refusal });
    }
    for call in message.tool_calls.as_deref().unwrap_or_default() {
        let input = match serde_json::from_str::<Value>(&call.function.arguments) {
            Ok(Value::Object(map)) => Value::Object(map),
            _ => Value::Object(serde_json::Map::new()),
        };
        let block = content.len();
        content.push(Block::ToolUse {
            id: match call.id.as_deref() {
                Some(call_id) if !call_id.is_empty() => call_id.to_owned(),
                _ => tool_id(id, block),
            },
            name: &call.function.name,
            input,
        });
    }
    let has_refusal = message.refusal.as_deref().is_some_and(|r| !r.is_empty());
    let stop = match stop_reason(choice.finish_reason.as_deref()) {
        "end_turn" if has_refusal => "refusal",
        other => other,
    };
    let usage = usage_of(usage, completion.usage.as_ref()).unwrap_or_default();
    let message = Message {
        id,
        kind: "message",
        role: "assistant",
        model: &completion.model,
        content,
        stop_reason: stop,
        stop_sequence: None,
        usage: AnthropicUsage::from(&usage),
    };
    serde_json::to_vec(&message)
        .map(Bytes::from)
        .map_err(|e| ProtocolError::answer(format!("could not serialise the message: {e}")))
}
