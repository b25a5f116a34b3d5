//! Chat completions: the request, the response, and the stream chunks.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json_text::JsonText;

/// Unknown fields of an object, kept so they reach the upstream unchanged.
pub type Extra = Map<String, Value>;

/// `POST /v1/chat/completions` request body.
///
/// The fields the gateway reads or translates are typed; every other field lands in `extra` and is
/// forwarded as the client sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model name as the client sends it (a configured model name, not a vendor id).
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Whether to answer as a server-sent event stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stream options, notably `include_usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Completion token cap (legacy name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Completion token cap (current name, required by reasoning models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Number of choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Whether and which tool the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// An end-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`; kept as JSON, adapters read what they need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Every other field, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatCompletionRequest {
    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for the final usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The completion cap the client set, under either name.
    pub fn completion_cap(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// A view of a request as it goes to an OpenAI-format upstream: the vendor's model id instead of the
/// client's model name, and usage requested in streams so the gateway can meter. It borrows everything, so
/// building it copies nothing.
#[derive(Debug, Serialize)]
pub struct UpstreamChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<UpstreamStreamOptions<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
    #[serde(flatten)]
    extra: &'a Extra,
}

#[derive(Debug, Serialize)]
struct UpstreamStreamOptions<'a> {
    include_usage: bool,
    #[serde(flatten)]
    extra: Option<&'a Extra>,
}

impl<'a> UpstreamChatRequest<'a> {
    /// Views `request` for the upstream model `model`. With `request_stream_usage`, a streaming request
    /// asks the upstream for its final usage chunk whatever the client said (servers that reject
    /// `stream_options` get `false`, and the client's own options are then forwarded unchanged).
    pub fn new(request: &'a ChatCompletionRequest, model: &'a str, request_stream_usage: bool) -> Self {
        let stream_options = match (&request.stream_options, request.is_stream() && request_stream_usage) {
            (options, true) => Some(UpstreamStreamOptions {
                include_usage: true,
                extra: options.as_ref().map(|o| &o.extra),
            }),
            (Some(options), false) => Some(UpstreamStreamOptions {
                include_usage: options.include_usage.unwrap_or(false),
                extra: Some(&options.extra),
            }),
            (None, false) => None,
        };
        Self {
            model,
            messages: &request.messages,
            stream: request.stream,
            stream_options,
            max_tokens: request.max_tokens,
            max_completion_tokens: request.max_completion_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            n: request.n,
            stop: request.stop.as_ref(),
            tools: request.tools.as_deref(),
            tool_choice: request.tool_choice.as_ref(),
            user: request.user.as_deref(),
            response_format: request.response_format.as_ref(),
            extra: &request.extra,
        }
    }
}

/// `stream_options` of a request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Ask for a final chunk carrying the usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other options, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Who speaks in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the application.
    System,
    /// Instructions from the developer (newer name for system on reasoning models).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
    /// A function's result (deprecated form of `tool`).
    Function,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// Text or content parts; absent on assistant messages that only call tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// An optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Message content: a plain string or a list of typed parts.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed parts: text, images, audio, files.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content: the string, or the text parts joined.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            MessageContent::Text(text) => text.as_str().into(),
            MessageContent::Parts(parts) => {
                let mut text = String::new();
                for part in parts.iter().filter_map(|p| p.text.as_deref()) {
                    text.push_str(part);
                }
                text.into()
            }
        }
    }
}

// The string or the array as it is; a long string is escaped by `json_text`, several bytes at a time.
impl Serialize for MessageContent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            MessageContent::Text(text) => JsonText(text).serialize(serializer),
            MessageContent::Parts(parts) => parts.serialize(serializer),
        }
    }
}

// A hand-written visitor instead of `untagged`: no buffering, and a message that says what is accepted.
impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = MessageContent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MessageContent::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MessageContent::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(MessageContent::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// One typed part of message content. Part types the gateway does not translate (audio, files...) keep
/// their fields in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`, `input_audio`, `file`...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The image of an `image_url` part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An image reference: an http(s) URL or a `data:` URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// The URL.
    pub url: String,
    /// `low`, `high` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Stop sequences: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `function` (the only kind chat completions define).
    #[serde(rename = "type")]
    pub kind: String,
    /// The function's declaration.
    pub function: FunctionDefinition,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A function declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// The function's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters as a JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Whether the schema must be followed exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: a mode string or a named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `auto`, `none` or `required`.
    Mode(String),
    /// `{"type": "function", "function": {"name": ...}}`.
    Named(Value),
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, echoed by the `tool` message that answers it.
    pub id: String,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

/// The function a tool call invokes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments as a JSON string.
    pub arguments: String,
}

/// Token usage as OpenAI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// Prompt tokens served from the vendor's cache, where reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Completion tokens spent on reasoning, where reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// Breakdown of prompt tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Tokens read from the vendor's prompt cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

/// Breakdown of completion tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Tokens the model spent reasoning, included in `completion_tokens`.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Usage with the total filled in.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            // Saturating: counts come from vendors, and a sum past `u64::MAX` must not wrap (or panic).
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }
}

/// A non-streaming chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    /// The completion's id.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The generated choices.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Other fields, forwarded untouched.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One choice of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the choices.
    pub index: u32,
    /// The generated message.
    pub message: ResponseMessage,
    /// `stop`, `length`, `tool_calls`, `content_filter`.
    pub finish_reason: Option<String>,
    /// Log probabilities; `null` unless requested.
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// The message of a choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: Role,
    /// The text, `null` when the model only called tools.
    pub content: Option<String>,
    /// Tool calls the model made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The model's refusal, if it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// One `chat.completion.chunk` of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The completion's id, the same on every chunk.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// The choices' deltas; empty on the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Set on the final usage chunk only; `null` elsewhere when usage was requested.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One choice's delta in a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice.
    pub index: u32,
    /// What is new.
    pub delta: ChunkDelta,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<String>,
}

/// The new part of a streamed message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChunkDelta {
    /// Sent on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// New tool call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_round_trip_at_every_level() {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "be brief", "x_message_tag": 7},
                {"role": "user", "content": [
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}
                ]}
            ],
            "seed": 42,
            "logit_bias": {"50256": -100},
            "stream_options": {"include_usage": false, "include_obfuscation": false},
            "metadata": {"team": "search"}
        });
        let request: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(serde_json::to_value(&request).unwrap(), body);
    }

    #[test]
    fn upstream_view_swaps_model_and_forces_stream_usage() {
        let request: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "fast",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_obfuscation": false},
            "temperature": 0.2,
            "seed": 1
        }))
        .unwrap();
        let view = serde_json::to_value(UpstreamChatRequest::new(&request, "gpt-4o-mini", true)).unwrap();
        assert_eq!(
            view,
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": true,
                "stream_options": {"include_usage": true, "include_obfuscation": false},
                "temperature": 0.2,
                "seed": 1
            })
        );
        // Without forcing, the client's options are forwarded as they were.
        let view = serde_json::to_value(UpstreamChatRequest::new(&request, "m", false)).unwrap();
        assert_eq!(
            view["stream_options"],
            json!({"include_usage": false, "include_obfuscation": false})
        );
    }

    #[test]
    fn upstream_view_matches_the_request_for_every_typed_field() {
        let body = json!({
            "model": "m",
            "messages": [{"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
            "max_tokens": 5, "max_completion_tokens": 6, "temperature": 0.5, "top_p": 0.9, "n": 2,
            "stop": ["x"], "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": "auto", "user": "u", "response_format": {"type": "json_object"}
        });
        let request: ChatCompletionRequest = serde_json::from_value(body).unwrap();
        let direct = serde_json::to_value(&request).unwrap();
        let view = serde_json::to_value(UpstreamChatRequest::new(&request, "m", true)).unwrap();
        assert_eq!(direct, view);
    }

    #[test]
    fn content_accepts_string_or_parts_and_rejects_others() {
        let text: MessageContent = serde_json::from_value(json!("hello")).unwrap();
        assert_eq!(text.text(), "hello");
        let parts: MessageContent =
            serde_json::from_value(json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])).unwrap();
        assert_eq!(parts.text(), "ab");
        let err = serde_json::from_value::<MessageContent>(json!(42)).unwrap_err();
        assert!(
            err.to_string().contains("a string or an array of content parts"),
            "{err}"
        );
    }

    /// A fuzzing regression (an input of the `gemini_response` target, `fuzz/`): vendor counts whose sum
    /// passes `u64::MAX` panicked with overflow checks and wrapped to a tiny total without.
    #[test]
    fn usage_total_saturates() {
        assert_eq!(Usage::new(u64::MAX, 1).total_tokens, u64::MAX);
        assert_eq!(Usage::new(2, 3).total_tokens, 5);
    }
}
