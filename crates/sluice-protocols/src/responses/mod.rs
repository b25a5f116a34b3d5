//! OpenAI's Responses API (`POST /v1/responses`), served over chat completions.
//!
//! - [`parse_request`]: the request body -> a [`ChatCompletionRequest`] and the [`ResponseEcho`] (what the
//!   response object repeats of the request).
//! - [`complete`]: a `chat.completion` body -> the `response` object.
//! - [`ResponsesStream`]: `chat.completion.chunk`s -> the Responses stream events, as server-sent events.
//!
//! Item ids are made from the response id the caller gives (`resp_X` -> `msg_X_0`, `fc_X_1`, `rs_X_2`:
//! the prefix OpenAI uses for the kind, then the output index), so they are unique within the response
//! and stable across its stream events.

mod request;
mod response;
mod stream;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};
use sluice_api::{ChatCompletionRequest, TokenUsage};

pub use response::complete;
pub use stream::ResponsesStream;

use crate::ProtocolError;

/// A `POST /v1/responses` request, translated.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    /// The request for the chat completions path. A streaming request asks for the usage chunk
    /// (`stream_options.include_usage`), which `response.completed` reports.
    pub chat: ChatCompletionRequest,
    /// What the response object repeats of the request; hand it to [`complete`] or [`ResponsesStream::new`].
    pub echo: ResponseEcho,
}

/// Parses a `POST /v1/responses` body (strictly: errors name the field's path) and translates it. What
/// chat completions cannot express (built-in tools, stored conversation state, file ids...) is refused with
/// an error naming the field.
pub fn parse_request(body: &[u8]) -> Result<ResponsesRequest, ProtocolError> {
    let (chat, echo) = request::translate(body)?;
    Ok(ResponsesRequest { chat, echo })
}

/// The request settings the response object repeats, as OpenAI's does.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseEcho {
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    parallel_tool_calls: bool,
    reasoning: Value,
    temperature: Option<f64>,
    top_p: Option<f64>,
    text: Value,
    tool_choice: Value,
    tools: Value,
    user: Option<String>,
    metadata: Map<String, Value>,
    prompt_cache_key: Option<String>,
    safety_identifier: Option<String>,
}

impl ResponseEcho {
    /// The model name the client asked for.
    pub fn model(&self) -> &str {
        &self.model
    }
}

// === The output model, shared by the complete and the streamed translation ===

/// One output item.
#[derive(Debug, Clone)]
enum Item {
    /// The model's reasoning text (from servers that send `reasoning_content`).
    Reasoning { id: String, text: String },
    /// The assistant's message: text, and a refusal if the model refused.
    Message {
        id: String,
        text: String,
        refusal: Option<String>,
    },
    /// A function call.
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Item {
    fn id(&self) -> &str {
        match self {
            Item::Reasoning { id, .. } | Item::Message { id, .. } | Item::FunctionCall { id, .. } => id,
        }
    }
}

/// An item with its status, serialised as OpenAI sends it (fields in OpenAI's order).
struct ItemView<'a> {
    item: &'a Item,
    status: &'static str,
    /// As `response.output_item.added` shows it: a message without content parts yet.
    skeleton: bool,
}

impl Serialize for ItemView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", self.item.id())?;
        match self.item {
            Item::Reasoning { text, .. } => {
                map.serialize_entry("type", "reasoning")?;
                map.serialize_entry("summary", &[(); 0])?;
                if !text.is_empty() {
                    map.serialize_entry("content", &[reasoning_text(text)])?;
                }
                map.serialize_entry("status", self.status)?;
            }
            Item::Message { text, refusal, .. } => {
                map.serialize_entry("type", "message")?;
                map.serialize_entry("status", self.status)?;
                if self.skeleton {
                    map.serialize_entry("content", &[(); 0])?;
                } else {
                    map.serialize_entry("content", &MessageContent { text, refusal })?;
                }
                map.serialize_entry("role", "assistant")?;
            }
            Item::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => {
                map.serialize_entry("type", "function_call")?;
                map.serialize_entry("status", self.status)?;
                map.serialize_entry("arguments", arguments)?;
                map.serialize_entry("call_id", call_id)?;
                map.serialize_entry("name", name)?;
            }
        }
        map.end()
    }
}

/// A message's content parts: `output_text` (unless the message is only a refusal), then `refusal`.
struct MessageContent<'a> {
    text: &'a str,
    refusal: &'a Option<String>,
}

impl Serialize for MessageContent<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(None)?;
        if !self.text.is_empty() || self.refusal.is_none() {
            seq.serialize_element(&output_text(self.text))?;
        }
        if let Some(refusal) = self.refusal {
            seq.serialize_element(&refusal_part(refusal))?;
        }
        seq.end()
    }
}

/// An `output_text` content part.
#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    annotations: [(); 0],
    logprobs: [(); 0],
    text: &'a str,
}

fn output_text(text: &str) -> OutputText<'_> {
    OutputText {
        kind: "output_text",
        annotations: [],
        logprobs: [],
        text,
    }
}

/// A `refusal` content part.
#[derive(Serialize)]
struct RefusalPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    refusal: &'a str,
}

fn refusal_part(refusal: &str) -> RefusalPart<'_> {
    RefusalPart {
        kind: "refusal",
        refusal,
    }
}

/// A `reasoning_text` content part.
#[derive(Serialize)]
struct ReasoningText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

fn reasoning_text(text: &str) -> ReasoningText<'_> {
    ReasoningText {
        kind: "reasoning_text",
        text,
    }
}

/// The response's `usage`, from the gateway's record.
#[derive(Serialize)]
struct ResponsesUsage {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct InputDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutputDetails {
    reasoning_tokens: u64,
}

impl From<&TokenUsage> for ResponsesUsage {
    fn from(usage: &TokenUsage) -> Self {
        Self {
            // Every input token, cache reads and writes included, as OpenAI counts `input_tokens`.
            input_tokens: usage.prompt_tokens(),
            input_tokens_details: InputDetails {
                cached_tokens: usage.cache_read,
            },
            output_tokens: usage.output,
            output_tokens_details: OutputDetails {
                reasoning_tokens: usage.reasoning.min(usage.output),
            },
            total_tokens: usage.total(),
        }
    }
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    InProgress,
    Completed,
    /// Cut short: by the output cap (`max_output_tokens`) or a content filter (`content_filter`).
    Incomplete(&'static str),
    Failed,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete(_) => "incomplete",
            Status::Failed => "failed",
        }
    }

    /// The status a chat `finish_reason` means.
    fn from_finish(reason: Option<&str>) -> Self {
        match reason {
            Some("length") => Status::Incomplete("max_output_tokens"),
            Some("content_filter") => Status::Incomplete("content_filter"),
            _ => Status::Completed,
        }
    }
}

/// The `error` of a failed response.
#[derive(Serialize)]
struct ResponseError<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct IncompleteDetails {
    reason: &'static str,
}

/// The `response` object, borrowing everything.
struct ResponseObject<'a> {
    id: &'a str,
    created_at: u64,
    model: &'a str,
    status: Status,
    error: Option<ResponseError<'a>>,
    output: &'a [Item],
    /// The status of each item: all done but the last, which may still be open or cut short.
    last_item_status: &'static str,
    usage: Option<ResponsesUsage>,
    echo: &'a ResponseEcho,
}

impl Serialize for ResponseObject<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let echo = self.echo;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", self.id)?;
        map.serialize_entry("object", "response")?;
        map.serialize_entry("created_at", &self.created_at)?;
        map.serialize_entry("status", self.status.name())?;
        map.serialize_entry("background", &false)?;
        map.serialize_entry("error", &self.error)?;
        let incomplete = match self.status {
            Status::Incomplete(reason) => Some(IncompleteDetails { reason }),
            _ => None,
        };
        map.serialize_entry("incomplete_details", &incomplete)?;
        map.serialize_entry("instructions", &echo.instructions)?;
        map.serialize_entry("max_output_tokens", &echo.max_output_tokens)?;
        map.serialize_entry("max_tool_calls", &None::<u64>)?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("output", &OutputList(self))?;
        map.serialize_entry("parallel_tool_calls", &echo.parallel_tool_calls)?;
        map.serialize_entry("previous_response_id", &None::<&str>)?;
        map.serialize_entry("prompt_cache_key", &echo.prompt_cache_key)?;
        map.serialize_entry("reasoning", &echo.reasoning)?;
        map.serialize_entry("safety_identifier", &echo.safety_identifier)?;
        map.serialize_entry("store", &false)?;
        map.serialize_entry("temperature", &echo.temperature)?;
        map.serialize_entry("text", &echo.text)?;
        map.serialize_entry("tool_choice", &echo.tool_choice)?;
        map.serialize_entry("tools", &echo.tools)?;
        map.serialize_entry("top_p", &echo.top_p)?;
        map.serialize_entry("truncation", "disabled")?;
        map.serialize_entry("usage", &self.usage)?;
        map.serialize_entry("user", &echo.user)?;
        map.serialize_entry("metadata", &echo.metadata)?;
        map.end()
    }
}

struct OutputList<'a>(&'a ResponseObject<'a>);

impl Serialize for OutputList<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let items = self.0.output;
        let mut seq = serializer.serialize_seq(Some(items.len()))?;
        for (i, item) in items.iter().enumerate() {
            let status = if i + 1 == items.len() {
                self.0.last_item_status
            } else {
                "completed"
            };
            seq.serialize_element(&ItemView {
                item,
                status,
                skeleton: false,
            })?;
        }
        seq.end()
    }
}

/// The item id of output `index` of the response `response_id` (`resp_X` -> `{prefix}_X_{index}`).
fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{base}_{index}")
}
