//! A complete `chat.completion` -> the Responses API's `response` object.
//!
//! The first choice becomes the output: its reasoning text (where the server sent one) a `reasoning`
//! item, its text and refusal a `message` item, each tool call a `function_call` item, in that order. A
//! `length` finish makes the response `incomplete` with `incomplete_details.reason = "max_output_tokens"`,
//! a `content_filter` finish with `"content_filter"`.

use bytes::Bytes;
use sluice_api::TokenUsage;

use super::{Item, ResponseEcho, ResponseObject, ResponsesUsage, Status, item_id};
use crate::ProtocolError;
use crate::chat::{CompletionMessage, read_completion, usage_of};

/// Translates a complete `chat.completion` body into the `response` object `id` (such as `resp_` and the
/// gateway's request id), created at Unix time `created_at`. `usage` is the gateway's record of the call
/// when it has one (it may know cache writes the OpenAI usage object cannot carry); without it the
/// completion's own usage is reported.
pub fn complete(
    body: &[u8],
    echo: &ResponseEcho,
    id: &str,
    created_at: u64,
    usage: Option<&TokenUsage>,
) -> Result<Bytes, ProtocolError> {
    let completion = read_completion(body)?;
    let choice = completion
        .choices
        .iter()
        .find(|c| c.index == 0)
        .or(completion.choices.first())
        .ok_or_else(|| ProtocolError::answer("the completion has no choices"))?;
    let output = items(&choice.message, id);
    let status = Status::from_finish(choice.finish_reason.as_deref());
    let usage = usage_of(usage, completion.usage.as_ref());
    let model = if completion.model.is_empty() {
        echo.model()
    } else {
        &completion.model
    };
    let object = ResponseObject {
        id,
        created_at,
        model,
        status,
        error: None,
        output: &output,
        last_item_status: match status {
            Status::Incomplete(_) => "incomplete",
            _ => "completed",
        },
        usage: usage.as_ref().map(ResponsesUsage::from),
        echo,
    };
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|e| ProtocolError::answer(format!("could not serialise the response: {e}")))
}

/// The output items of a complete message.
fn items(message: &CompletionMessage<'_>, id: &str) -> Vec<Item> {
    let mut output = Vec::new();
    if let Some(text) = message.reasoning_text() {
        output.push(Item::Reasoning {
            id: item_id("rs", id, output.len()),
            text: text.to_owned(),
        });
    }
    let text = message.content.as_deref().unwrap_or("");
    let refusal = message.refusal.as_deref().filter(|r| !r.is_empty());
    let calls = message.tool_calls.as_deref().unwrap_or_default();
    if !text.is_empty() || refusal.is_some() || calls.is_empty() {
        output.push(Item::Message {
            id: item_id("msg", id, output.len()),
            text: text.to_owned(),
            refusal: refusal.map(str::to_owned),
        });
    }
    for call in calls {
        let index = output.len();
        output.push(Item::FunctionCall {
            id: item_id("fc", id, index),
            call_id: match call.id.as_deref() {
                Some(call_id) if !call_id.is_empty() => call_id.to_owned(),
                _ => item_id("call", id, index),
            },
            name: call.function.name.clone().into_owned(),
            arguments: call.function.arguments.clone().into_owned(),
        });
    }
    output
}
