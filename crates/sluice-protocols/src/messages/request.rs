//! Anthropic `POST /v1/messages` (and `/v1/messages/count_tokens`) request body -> a chat completions
//! request, for upstreams that speak chat completions or Gemini.
//!
//! Shapes from Anthropic's API reference (platform.claude.com/docs/en/api/messages) and the official
//! Python SDK's `MessageCreateParams`: `system` is a string or text blocks; message `content` a string or
//! blocks (`text`, `image` with a base64 or URL `source`, `tool_use` on assistant turns, `tool_result` on
//! user turns, `thinking` and `redacted_thinking` from earlier assistant turns).
//!
//! How each part maps:
//! - `system` -> a system message; a user turn's `tool_result` blocks -> `tool` messages (first, as chat
//!   completions wants results right after the call), its other blocks -> one user message; an assistant
//!   turn's text -> the content, its `tool_use` blocks -> `tool_calls`. A `tool_result` with
//!   `is_error: true` has its text prefixed `Error: `, chat completions having no such flag.
//! - `thinking` and `redacted_thinking` blocks of earlier turns are left out: they are Anthropic's, signed
//!   for Anthropic, and chat completions has no place for them.
//! - `max_tokens` -> `max_completion_tokens`, `stop_sequences` -> `stop`, `metadata.user_id` -> `user`,
//!   `top_k` -> `top_k` (for the adapters that can honour it), `tool_choice` `auto`/`any`/`none`/`tool` ->
//!   `auto`/`required`/`none`/the named function, `disable_parallel_tool_use` -> `parallel_tool_calls:
//!   false`.
//! - `thinking: {"type": "enabled", "budget_tokens": N}` -> `reasoning_effort` `low` below 4,096 tokens,
//!   `medium` below 16,384, else `high`; `output_config.effort` -> `reasoning_effort` as it is (it wins
//!   over `thinking`); `output_config.format` (a JSON schema) -> `response_format`.
//! - `cache_control` (on the request or a block) and `service_tier` are hints for Anthropic's platform and
//!   are left out.
//!
//! Refused with a 400 naming the field: server tools (`web_search_...`, `bash_...`, ...), document,
//! search-result and other block kinds chat completions has no equivalent for, images by file id or in
//! tool results, and any top-level field not listed here (`container`, `mcp_servers`,
//! `context_management`...).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_api::{
    ChatCompletionRequest, ChatMessage, ContentPart, FunctionCall, FunctionDefinition, ImageUrl, MessageContent, Role,
    Stop, StreamOptions, Tool, ToolCall, ToolChoice, parse_json,
};

use crate::ProtocolError;
use crate::text_or::TextOr;

// === Wire types ===

#[derive(Deserialize)]
struct RawRequest {
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    messages: Vec<RawMessage>,
    #[serde(default)]
    system: Option<TextOr<RawBlock>>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default)]
    tools: Option<Vec<RawTool>>,
    #[serde(default)]
    tool_choice: Option<RawToolChoice>,
    #[serde(default)]
    thinking: Option<RawThinking>,
    #[serde(default)]
    output_config: Option<RawOutputConfig>,
    /// Anthropic's capacity choice; meaningless elsewhere.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted and ignored: a hint for Anthropic's platform")]
    service_tier: Option<String>,
    /// Automatic prompt caching; other upstreams cache by themselves or not at all.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted and ignored: a hint for Anthropic's platform")]
    cache_control: Option<Value>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    content: TextOr<RawBlock>,
}

/// One content block, every kind's fields in one struct; `cache_control`, `citations` and the like are
/// ignored.
#[derive(Deserialize)]
struct RawBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    source: Option<RawSource>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    tool_use_id: Option<String>,
    #[serde(default)]
    content: Option<TextOr<RawBlock>>,
    #[serde(default)]
    is_error: Option<bool>,
}

#[derive(Deserialize)]
struct RawSource {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    #[serde(default)]
    user_id: Option<String>,
}

/// A client tool (`{"name", "description", "input_schema"}`, `type` absent or `custom`) or a server tool.
#[derive(Deserialize)]
struct RawTool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThinking {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    budget_tokens: Option<u32>,
    /// How thinking is shown; there is none to show from other upstreams.
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "accepted and ignored: no thinking blocks come from other upstreams"
    )]
    display: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputConfig {
    #[serde(default)]
    effort: Option<String>,
    #[serde(default)]
    format: Option<RawOutputFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    schema: Option<Value>,
}

// === Translation ===

/// What is being translated: a message request (`max_tokens` required) or a token count (no
/// `max_tokens`, no stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Messages,
    CountTokens,
}

/// Parses a Messages API body and translates it into a chat completions request.
pub(super) fn translate(body: &[u8], endpoint: Endpoint) -> Result<ChatCompletionRequest, ProtocolError> {
    let raw: RawRequest = parse_json(body)?;
    if let Some((name, _)) = raw.unknown.iter().find(|(_, value)| !value.is_null()) {
        return Err(ProtocolError::unsupported(
            name.as_str(),
            format!("`{name}` is not supported when the model is served by a non-Anthropic upstream."),
        ));
    }
    let max_tokens = match (endpoint, raw.max_tokens) {
        (Endpoint::Messages, None) => {
            return Err(ProtocolError::invalid("max_tokens", "max_tokens: Field required"));
        }
        (Endpoint::Messages, Some(0)) => {
            return Err(ProtocolError::invalid("max_tokens", "max_tokens: must be at least 1"));
        }
        (_, max_tokens) => max_tokens,
    };

    let mut messages = Vec::with_capacity(raw.messages.len() + 1);
    if let Some(system) = raw.system {
        messages.push(system_message(system)?);
    }
    for (i, message) in raw.messages.into_iter().enumerate() {
        match message.role.as_str() {
            "user" => push_user(&mut messages, message.content, i)?,
            "assistant" => messages.push(assistant(message.content, i)?),
            other => {
                return Err(ProtocolError::invalid(
                    format!("messages[{i}].role"),
                    format!("messages.{i}.role: `{other}` is not a role: expected `user` or `assistant`"),
                ));
            }
        }
    }

    let tools = raw
        .tools
        .map(|tools| {
            tools
                .into_iter()
                .enumerate()
                .map(|(i, tool)| function_tool(tool, i))
                .collect()
        })
        .transpose()?;
    let mut extra = Map::new();
    let tool_choice = match raw.tool_choice {
        None => None,
        Some(choice) => {
            if choice.disable_parallel_tool_use == Some(true) {
                extra.insert("parallel_tool_calls".to_owned(), Value::Bool(false));
            }
            Some(match choice.kind.as_str() {
                "auto" => ToolChoice::Mode("auto".to_owned()),
                "any" => ToolChoice::Mode("required".to_owned()),
                "none" => ToolChoice::Mode("none".to_owned()),
                "tool" => {
                    let name = choice.name.ok_or_else(|| {
                        ProtocolError::invalid("tool_choice.name", "tool_choice.name: Field required")
                    })?;
                    ToolChoice::Named(json!({"type": "function", "function": {"name": name}}))
                }
                other => {
                    return Err(ProtocolError::invalid(
                        "tool_choice.type",
                        format!("tool_choice.type: `{other}` is not one of `auto`, `any`, `tool`, `none`"),
                    ));
                }
            })
        }
    };
    if let Some(top_k) = raw.top_k {
        extra.insert("top_k".to_owned(), Value::from(top_k));
    }
    let effort = match &raw.thinking {
        Some(thinking) => thinking_effort(thinking)?,
        None => None,
    };
    let effort = raw.output_config.as_ref().and_then(|c| c.effort.as_deref()).or(effort);
    if let Some(effort) = effort {
        extra.insert("reasoning_effort".to_owned(), Value::String(effort.to_owned()));
    }
    let response_format = match raw.output_config.and_then(|c| c.format) {
        None => None,
        Some(format) if format.kind == "json_schema" => {
            let schema = format.schema.ok_or_else(|| {
                ProtocolError::invalid(
                    "output_config.format.schema",
                    "output_config.format.schema: Field required",
                )
            })?;
            Some(json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}))
        }
        Some(format) => {
            return Err(ProtocolError::invalid(
                "output_config.format.type",
                format!("output_config.format.type: `{}` is not `json_schema`", format.kind),
            ));
        }
    };

    let stream = endpoint == Endpoint::Messages && raw.stream == Some(true);
    Ok(ChatCompletionRequest {
        model: raw.model,
        messages,
        stream: stream.then_some(true),
        // The usage of a stream arrives in its last chunk only when asked for.
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        max_tokens: None,
        max_completion_tokens: max_tokens,
        temperature: raw.temperature,
        top_p: raw.top_p,
        n: None,
        stop: raw.stop_sequences.filter(|s| !s.is_empty()).map(Stop::Many),
        tools,
        tool_choice,
        user: raw.metadata.and_then(|m| m.user_id),
        response_format,
        extra,
    })
}

fn message(role: Role, content: Option<MessageContent>) -> ChatMessage {
    ChatMessage {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Map::new(),
    }
}

fn text_part(text: String) -> ContentPart {
    ContentPart {
        kind: "text".to_owned(),
        text: Some(text),
        image_url: None,
        extra: Map::new(),
    }
}

fn missing(param: String) -> ProtocolError {
    // Anthropic's own wording: the dotted path, then `Field required`.
    let message = format!("{}: Field required", dotted(&param));
    ProtocolError::invalid(param, message)
}

/// `messages[0].content[1]` as Anthropic writes paths in its messages: `messages.0.content.1`.
fn dotted(path: &str) -> String {
    path.replace('[', ".").replace(']', "")
}

fn unsupported_block(kind: &str, path: &str) -> ProtocolError {
    ProtocolError::unsupported(
        format!("{path}.type"),
        format!(
            "{}.type: `{kind}` blocks cannot be translated for a non-Anthropic upstream",
            dotted(path)
        ),
    )
}

fn system_message(system: TextOr<RawBlock>) -> Result<ChatMessage, ProtocolError> {
    let content = match system {
        TextOr::Text(text) => MessageContent::Text(text),
        TextOr::List(blocks) => MessageContent::Parts(
            blocks
                .into_iter()
                .enumerate()
                .map(|(i, block)| match block.kind.as_str() {
                    "text" => Ok(text_part(
                        block.text.ok_or_else(|| missing(format!("system[{i}].text")))?,
                    )),
                    other => Err(unsupported_block(other, &format!("system[{i}]"))),
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(message(Role::System, Some(content)))
}

/// A user turn: its tool results as `tool` messages, then the rest as one user message.
fn push_user(messages: &mut Vec<ChatMessage>, content: TextOr<RawBlock>, i: usize) -> Result<(), ProtocolError> {
    let blocks = match content {
        TextOr::Text(text) => {
            messages.push(message(Role::User, Some(MessageContent::Text(text))));
            return Ok(());
        }
        TextOr::List(blocks) => blocks,
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.into_iter().enumerate() {
        let path = format!("messages[{i}].content[{j}]");
        match block.kind.as_str() {
            "text" => parts.push(text_part(block.text.ok_or_else(|| missing(format!("{path}.text")))?)),
            "image" => parts.push(image_part(block.source, &path)?),
            "tool_result" => {
                let call_id = block
                    .tool_use_id
                    .ok_or_else(|| missing(format!("{path}.tool_use_id")))?;
                let mut text = String::new();
                if block.is_error == Some(true) {
                    text.push_str("Error: ");
                }
                match block.content {
                    None => {}
                    Some(TextOr::Text(content)) => text.push_str(&content),
                    Some(TextOr::List(inner)) => {
                        for (k, block) in inner.into_iter().enumerate() {
                            let inner_path = format!("{path}.content[{k}]");
                            match block.kind.as_str() {
                                "text" => {
                                    text.push_str(&block.text.ok_or_else(|| missing(format!("{inner_path}.text")))?)
                                }
                                other => {
                                    return Err(ProtocolError::unsupported(
                                        format!("{inner_path}.type"),
                                        format!(
                                            "{}.type: `{other}` blocks in a tool result cannot be translated for a \
                                             non-Anthropic upstream, whose tool results are text",
                                            dotted(&inner_path)
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                }
                let mut tool = message(Role::Tool, Some(MessageContent::Text(text)));
                tool.tool_call_id = Some(call_id);
                messages.push(tool);
            }
            other => return Err(unsupported_block(other, &path)),
        }
    }
    if !parts.is_empty() {
        messages.push(message(Role::User, Some(MessageContent::Parts(parts))));
    }
    Ok(())
}

fn image_part(source: Option<RawSource>, path: &str) -> Result<ContentPart, ProtocolError> {
    let source = source.ok_or_else(|| missing(format!("{path}.source")))?;
    let url = match source.kind.as_str() {
        "base64" => {
            let media_type = source
                .media_type
                .ok_or_else(|| missing(format!("{path}.source.media_type")))?;
            let data = source.data.ok_or_else(|| missing(format!("{path}.source.data")))?;
            format!("data:{media_type};base64,{data}")
        }
        "url" => source.url.ok_or_else(|| missing(format!("{path}.source.url")))?,
        other => {
            return Err(ProtocolError::unsupported(
                format!("{path}.source.type"),
                format!(
                    "{}.source.type: `{other}` image sources cannot be translated for a non-Anthropic upstream; \
                     send the image as base64 or a URL",
                    dotted(path)
                ),
            ));
        }
    };
    Ok(ContentPart {
        kind: "image_url".to_owned(),
        text: None,
        image_url: Some(ImageUrl {
            url,
            detail: None,
            extra: Map::new(),
        }),
        extra: Map::new(),
    })
}

fn assistant(content: TextOr<RawBlock>, i: usize) -> Result<ChatMessage, ProtocolError> {
    let blocks = match content {
        TextOr::Text(text) => return Ok(message(Role::Assistant, Some(MessageContent::Text(text)))),
        TextOr::List(blocks) => blocks,
    };
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for (j, block) in blocks.into_iter().enumerate() {
        let path = format!("messages[{i}].content[{j}]");
        match block.kind.as_str() {
            "text" => text
                .get_or_insert_default()
                .push_str(&block.text.ok_or_else(|| missing(format!("{path}.text")))?),
            "tool_use" => {
                let id = block.id.ok_or_else(|| missing(format!("{path}.id")))?;
                let name = block.name.ok_or_else(|| missing(format!("{path}.name")))?;
                let arguments = match block.input {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(input) => input.to_string(),
                };
                calls.push(ToolCall {
                    id,
                    kind: "function".to_owned(),
                    function: FunctionCall { name, arguments },
                });
            }
            // Signed by Anthropic for Anthropic: no other upstream can read them back.
            "thinking" | "redacted_thinking" => {}
            other => return Err(unsupported_block(other, &path)),
        }
    }
    let mut chat = message(Role::Assistant, text.map(MessageContent::Text));
    if !calls.is_empty() {
        chat.tool_calls = Some(calls);
    }
    Ok(chat)
}

fn function_tool(tool: RawTool, i: usize) -> Result<Tool, ProtocolError> {
    if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
        return Err(ProtocolError::unsupported(
            format!("tools[{i}].type"),
            format!(
                "tools.{i}.type: the server tool `{kind}` is run by Anthropic and cannot be served by a \
                 non-Anthropic upstream"
            ),
        ));
    }
    let name = tool.name.ok_or_else(|| missing(format!("tools[{i}].name")))?;
    let schema = tool
        .input_schema
        .ok_or_else(|| missing(format!("tools[{i}].input_schema")))?;
    Ok(Tool {
        kind: "function".to_owned(),
        function: FunctionDefinition {
            name,
            description: tool.description,
            parameters: Some(schema),
            strict: tool.strict,
        },
        extra: Map::new(),
    })
}

/// The `reasoning_effort` a thinking configuration means, if any.
fn thinking_effort(thinking: &RawThinking) -> Result<Option<&'static str>, ProtocolError> {
    match thinking.kind.as_str() {
        "enabled" => {
            let budget = thinking.budget_tokens.ok_or_else(|| {
                ProtocolError::invalid("thinking.budget_tokens", "thinking.budget_tokens: Field required")
            })?;
            Ok(Some(match budget {
                0..4096 => "low",
                4096..16384 => "medium",
                _ => "high",
            }))
        }
        // `adaptive`: the model decides how much to think, as it does without a setting.
        "disabled" | "adaptive" => Ok(None),
        other => Err(ProtocolError::invalid(
            "thinking.type",
            format!("thinking.type: `{other}` is not one of `enabled`, `disabled`, `adaptive`"),
        )),
    }
}
