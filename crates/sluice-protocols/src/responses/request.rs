//! `POST /v1/responses` request body -> a chat completions request.
//!
//! Shapes from OpenAI's API reference (developers.openai.com/api/reference/resources/responses/methods/create)
//! and the official Python SDK's `ResponseCreateParams`: `input` is a string or a list of items: messages
//! (`type` optional; roles `user`, `system`, `developer`, `assistant`; content a string or parts
//! `input_text`, `input_image`, and on assistant messages `output_text` and `refusal`), `function_call`,
//! `function_call_output` and `reasoning` items from earlier turns. Codex sends the same shape with
//! `store: false`, `include: ["reasoning.encrypted_content"]`, `prompt_cache_key` and `reasoning.summary`.
//!
//! Everything that changes what is generated and that chat completions cannot express is refused with a
//! 400 naming the field; options that only ask for more output detail than Sluice can give (`include`,
//! `reasoning.summary`, `max_tool_calls` without built-in tools) are accepted and have no effect.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_api::{
    ChatCompletionRequest, ChatMessage, ContentPart, FunctionCall, FunctionDefinition, ImageUrl, MessageContent, Role,
    StreamOptions, Tool, ToolCall, ToolChoice, parse_json,
};

use super::ResponseEcho;
use crate::ProtocolError;
use crate::text_or::TextOr;

/// The message every refusal of stored state carries.
const STATELESS: &str = "Sluice keeps no conversation state: send the whole conversation in `input`, with `store` false or \
     left out.";

// === Wire types ===

#[derive(Deserialize)]
struct RawRequest {
    model: String,
    #[serde(default)]
    input: Option<TextOr<RawItem>>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Option<Vec<RawTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    text: Option<RawText>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    reasoning: Option<RawReasoning>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
    /// `include_obfuscation` only; nothing to do.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted and ignored: it asks for padding Sluice does not add")]
    stream_options: Option<Value>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<Value>,
    #[serde(default)]
    conversation: Option<Value>,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(default)]
    truncation: Option<String>,
    #[serde(default)]
    top_logprobs: Option<u32>,
    /// Only limits built-in tool calls, which are refused anyway.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted and ignored: built-in tools are refused")]
    max_tool_calls: Option<u64>,
    /// Extra output data to include (encrypted reasoning, logprobs, built-in tool results); Sluice has
    /// none of it to give.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted and ignored: there is no such data to include")]
    include: Option<Vec<String>>,
    #[serde(default)]
    prompt_cache_key: Option<String>,
    #[serde(default)]
    prompt_cache_retention: Option<String>,
    #[serde(default)]
    safety_identifier: Option<String>,
    #[serde(default)]
    service_tier: Option<String>,
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// One input item, every kind's fields in one struct so serde reads it in one pass with paths in its
/// errors; the kind is checked afterwards. Fields of earlier outputs that chat completions has no use for
/// (`id`, `status`, `phase`, a reasoning item's `summary`...) are ignored.
#[derive(Deserialize)]
struct RawItem {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<TextOr<RawPart>>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(default)]
    output: Option<TextOr<RawPart>>,
}

/// One content part, every kind's fields in one struct.
#[derive(Deserialize)]
struct RawPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    image_url: Option<String>,
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

/// A tool: `{"type": "function", "name", "description", "parameters", "strict"}`, or a built-in one.
#[derive(Deserialize)]
struct RawTool {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawText {
    #[serde(default)]
    format: Option<RawFormat>,
    #[serde(default)]
    verbosity: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReasoning {
    #[serde(default)]
    effort: Option<String>,
    /// A summary of the reasoning: chat completions has none to give, so none is sent.
    #[serde(default)]
    summary: Option<String>,
    /// The deprecated name of `summary`.
    #[serde(default)]
    generate_summary: Option<String>,
}

// === Translation ===

/// Parses a `POST /v1/responses` body and translates it into a chat completions request, keeping what the
/// response object must echo.
pub(super) fn translate(body: &[u8]) -> Result<(ChatCompletionRequest, ResponseEcho), ProtocolError> {
    let raw: RawRequest = parse_json(body)?;
    refuse_unknown(&raw.unknown)?;
    refuse_state(&raw)?;
    if raw.background == Some(true) {
        return Err(ProtocolError::unsupported(
            "background",
            "Background responses need stored state, which Sluice does not keep; stream the response instead.",
        ));
    }
    if raw.truncation.as_deref().is_some_and(|t| t != "disabled") {
        return Err(ProtocolError::unsupported(
            "truncation",
            "Only `truncation: \"disabled\"` is supported: Sluice does not drop conversation items to fit a \
             context window.",
        ));
    }
    if raw.top_logprobs.is_some_and(|n| n > 0) {
        return Err(ProtocolError::unsupported(
            "top_logprobs",
            "Log probabilities are not returned by Sluice's Responses API.",
        ));
    }

    let mut messages = Vec::new();
    if let Some(instructions) = &raw.instructions {
        messages.push(message(Role::System, Some(MessageContent::Text(instructions.clone()))));
    }
    match raw.input {
        None => {}
        Some(TextOr::Text(text)) => messages.push(message(Role::User, Some(MessageContent::Text(text)))),
        Some(TextOr::List(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                push_item(&mut messages, item, i)?;
            }
        }
    }
    if messages.is_empty() {
        return Err(ProtocolError::invalid(
            "input",
            "`input` is required and must not be empty.",
        ));
    }

    let tools = match &raw.tools {
        None => None,
        Some(tools) => Some(
            tools
                .iter()
                .enumerate()
                .map(|(i, tool)| function_tool(tool, i))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let tool_choice = raw.tool_choice.as_ref().map(tool_choice).transpose()?;
    let response_format = match raw.text.as_ref().and_then(|t| t.format.as_ref()) {
        None => None,
        Some(format) => response_format(format)?,
    };

    let mut extra = Map::new();
    let effort = raw.reasoning.as_ref().and_then(|r| r.effort.clone());
    if let Some(effort) = effort {
        extra.insert("reasoning_effort".to_owned(), Value::String(effort));
    }
    if let Some(verbosity) = raw.text.as_ref().and_then(|t| t.verbosity.clone()) {
        extra.insert("verbosity".to_owned(), Value::String(verbosity));
    }
    if let Some(metadata) = &raw.metadata {
        extra.insert("metadata".to_owned(), Value::Object(metadata.clone()));
    }
    if let Some(parallel) = raw.parallel_tool_calls {
        extra.insert("parallel_tool_calls".to_owned(), Value::Bool(parallel));
    }
    for (name, value) in [
        ("prompt_cache_key", &raw.prompt_cache_key),
        ("prompt_cache_retention", &raw.prompt_cache_retention),
        ("safety_identifier", &raw.safety_identifier),
        ("service_tier", &raw.service_tier),
    ] {
        if let Some(value) = value {
            extra.insert(name.to_owned(), Value::String(value.clone()));
        }
    }

    let stream = raw.stream.unwrap_or(false);
    let echo = ResponseEcho {
        model: raw.model.clone(),
        instructions: raw.instructions.clone(),
        max_output_tokens: raw.max_output_tokens,
        parallel_tool_calls: raw.parallel_tool_calls.unwrap_or(true),
        reasoning: json!({
            "effort": raw.reasoning.as_ref().and_then(|r| r.effort.as_deref()),
            "summary": raw.reasoning.as_ref().and_then(|r| r.summary.as_deref().or(r.generate_summary.as_deref())),
        }),
        temperature: raw.temperature,
        top_p: raw.top_p,
        text: echo_text(raw.text.as_ref()),
        tool_choice: raw
            .tool_choice
            .clone()
            .unwrap_or_else(|| Value::String("auto".to_owned())),
        tools: echo_tools(raw.tools.as_deref()),
        user: raw.user.clone(),
        metadata: raw.metadata.clone().unwrap_or_default(),
        prompt_cache_key: raw.prompt_cache_key.clone(),
        safety_identifier: raw.safety_identifier.clone(),
    };
    let chat = ChatCompletionRequest {
        model: raw.model,
        messages,
        stream: stream.then_some(true),
        // The usage of a stream arrives in its last chunk only when asked for.
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        max_tokens: None,
        max_completion_tokens: raw.max_output_tokens,
        temperature: raw.temperature,
        top_p: raw.top_p,
        n: None,
        stop: None,
        tools,
        tool_choice,
        user: raw.user,
        response_format,
        extra,
    };
    Ok((chat, echo))
}

fn refuse_unknown(unknown: &Map<String, Value>) -> Result<(), ProtocolError> {
    match unknown.iter().find(|(_, value)| !value.is_null()) {
        None => Ok(()),
        Some((name, _)) => Err(ProtocolError::unsupported(
            name.as_str(),
            format!("Unsupported parameter: `{name}` is not supported by Sluice's Responses API."),
        )),
    }
}

fn refuse_state(raw: &RawRequest) -> Result<(), ProtocolError> {
    let set = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    if set(&raw.previous_response_id) {
        return Err(ProtocolError::unsupported("previous_response_id", STATELESS));
    }
    if set(&raw.conversation) {
        return Err(ProtocolError::unsupported("conversation", STATELESS));
    }
    // Left out, `store` means what the client's SDK sends by default: accepted, nothing is stored.
    if raw.store == Some(true) {
        return Err(ProtocolError::unsupported("store", STATELESS));
    }
    if set(&raw.prompt) {
        return Err(ProtocolError::unsupported(
            "prompt",
            "Stored prompts are not supported here; use Sluice's prompt templates (`POST /v1/prompts/{name}`) or \
             send the text in `input`.",
        ));
    }
    Ok(())
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

/// Appends the chat message(s) one input item means.
fn push_item(messages: &mut Vec<ChatMessage>, item: RawItem, i: usize) -> Result<(), ProtocolError> {
    let kind = item.kind.as_deref().unwrap_or("message");
    match kind {
        "message" => {
            let role = match item.role.as_deref() {
                Some("user") => Role::User,
                Some("system") => Role::System,
                Some("developer") => Role::Developer,
                Some("assistant") => Role::Assistant,
                Some(other) => {
                    return Err(ProtocolError::invalid(
                        format!("input[{i}].role"),
                        format!(
                            "`{other}` is not a message role: expected `user`, `system`, `developer` or `assistant`."
                        ),
                    ));
                }
                None => return Err(missing(format!("input[{i}].role"))),
            };
            let content = match item.content {
                None => return Err(missing(format!("input[{i}].content"))),
                Some(content) => content,
            };
            let mut chat = message(role, None);
            match (role, content) {
                (_, TextOr::Text(text)) => chat.content = Some(MessageContent::Text(text)),
                (Role::Assistant, TextOr::List(parts)) => {
                    let mut text = String::new();
                    let mut refusal: Option<String> = None;
                    for (j, part) in parts.into_iter().enumerate() {
                        match part.kind.as_str() {
                            "output_text" | "input_text" => text.push_str(&part_text(part.text, i, j)?),
                            "refusal" => refusal
                                .get_or_insert_default()
                                .push_str(part.refusal.as_deref().unwrap_or("")),
                            other => return Err(unsupported_part(other, i, j)),
                        }
                    }
                    chat.content = Some(MessageContent::Text(text));
                    if let Some(refusal) = refusal {
                        chat.extra.insert("refusal".to_owned(), Value::String(refusal));
                    }
                }
                (_, TextOr::List(parts)) => {
                    let parts = parts
                        .into_iter()
                        .enumerate()
                        .map(|(j, part)| input_part(part, &format!("input[{i}].content[{j}]")))
                        .collect::<Result<Vec<_>, _>>()?;
                    chat.content = Some(MessageContent::Parts(parts));
                }
            }
            messages.push(chat);
        }
        "function_call" => {
            let call_id = item.call_id.ok_or_else(|| missing(format!("input[{i}].call_id")))?;
            let name = item.name.ok_or_else(|| missing(format!("input[{i}].name")))?;
            let call = ToolCall {
                id: call_id,
                kind: "function".to_owned(),
                function: FunctionCall {
                    name,
                    arguments: item.arguments.unwrap_or_default(),
                },
            };
            // The calls of one turn, and the text the model wrote before them, are one assistant message in
            // chat completions.
            match messages.last_mut() {
                Some(last) if last.role == Role::Assistant => last.tool_calls.get_or_insert_default().push(call),
                _ => {
                    let mut chat = message(Role::Assistant, None);
                    chat.tool_calls = Some(vec![call]);
                    messages.push(chat);
                }
            }
        }
        "function_call_output" => {
            let call_id = item.call_id.ok_or_else(|| missing(format!("input[{i}].call_id")))?;
            let content = match item.output {
                None => return Err(missing(format!("input[{i}].output"))),
                Some(TextOr::Text(text)) => MessageContent::Text(text),
                Some(TextOr::List(parts)) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, part) in parts.into_iter().enumerate() {
                        let path = format!("input[{i}].output[{j}]");
                        match part.kind.as_str() {
                            "input_text" | "output_text" => {
                                texts.push(text_part(part.text.ok_or_else(|| missing(format!("{path}.text")))?))
                            }
                            other => {
                                return Err(ProtocolError::unsupported(
                                    format!("{path}.type"),
                                    format!(
                                        "`{other}` parts in a function call's output cannot be expressed in chat completions, whose tool results are text."
                                    ),
                                ));
                            }
                        }
                    }
                    MessageContent::Parts(texts)
                }
            };
            let mut chat = message(Role::Tool, Some(content));
            chat.tool_call_id = Some(call_id);
            messages.push(chat);
        }
        // A model's reasoning from an earlier turn (Codex sends it back every turn). Chat completions has no
        // place for it and the upstream did not produce it in a form it could read back, so it is left out.
        "reasoning" => {}
        "item_reference" => return Err(ProtocolError::unsupported(format!("input[{i}].type"), STATELESS)),
        other => {
            return Err(ProtocolError::unsupported(
                format!("input[{i}].type"),
                format!(
                    "`{other}` items cannot be expressed in chat completions; Sluice serves messages, function calls and their outputs."
                ),
            ));
        }
    }
    Ok(())
}

fn missing(param: String) -> ProtocolError {
    let message = format!("Missing required parameter: `{param}`.");
    ProtocolError::invalid(param, message)
}

fn part_text(text: Option<String>, i: usize, j: usize) -> Result<String, ProtocolError> {
    text.ok_or_else(|| missing(format!("input[{i}].content[{j}].text")))
}

fn unsupported_part(kind: &str, i: usize, j: usize) -> ProtocolError {
    ProtocolError::unsupported(
        format!("input[{i}].content[{j}].type"),
        format!("`{kind}` content parts cannot be expressed in chat completions."),
    )
}

fn text_part(text: String) -> ContentPart {
    ContentPart {
        kind: "text".to_owned(),
        text: Some(text),
        image_url: None,
        extra: Map::new(),
    }
}

/// A user, system or developer message's part: text or an image.
fn input_part(part: RawPart, path: &str) -> Result<ContentPart, ProtocolError> {
    match part.kind.as_str() {
        "input_text" | "output_text" => Ok(text_part(part.text.ok_or_else(|| missing(format!("{path}.text")))?)),
        "input_image" => {
            if part.file_id.is_some() {
                return Err(ProtocolError::unsupported(
                    format!("{path}.file_id"),
                    "Images by file id need OpenAI's file storage; send the image as `image_url` (a URL or a data URL).",
                ));
            }
            let url = part.image_url.ok_or_else(|| missing(format!("{path}.image_url")))?;
            Ok(ContentPart {
                kind: "image_url".to_owned(),
                text: None,
                image_url: Some(ImageUrl {
                    url,
                    detail: part.detail,
                    extra: Map::new(),
                }),
                extra: Map::new(),
            })
        }
        other => Err(ProtocolError::unsupported(
            format!("{path}.type"),
            format!(
                "`{other}` content parts cannot be expressed in chat completions; Sluice takes `input_text` and `input_image`."
            ),
        )),
    }
}

fn function_tool(tool: &RawTool, i: usize) -> Result<Tool, ProtocolError> {
    match tool.kind.as_str() {
        "function" => {}
        // Free-form tools (Codex's `apply_patch` on some models): client-run, but with a grammar instead of
        // a JSON schema, which chat completions' function tools cannot carry.
        "custom" => {
            return Err(ProtocolError::unsupported(
                format!("tools[{i}].type"),
                "Custom (free-form) tools cannot be expressed as chat completions function tools; Sluice serves \
                 `function` tools.",
            ));
        }
        other => {
            return Err(ProtocolError::unsupported(
                format!("tools[{i}].type"),
                format!(
                    "The built-in tool `{other}` is run by OpenAI's platform and cannot be served through chat \
                     completions; Sluice serves `function` tools."
                ),
            ));
        }
    }
    let name = tool.name.clone().ok_or_else(|| missing(format!("tools[{i}].name")))?;
    Ok(Tool {
        kind: "function".to_owned(),
        function: FunctionDefinition {
            name,
            description: tool.description.clone(),
            parameters: tool.parameters.clone().filter(|p| !p.is_null()),
            strict: tool.strict,
        },
        extra: Map::new(),
    })
}

fn tool_choice(choice: &Value) -> Result<ToolChoice, ProtocolError> {
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(ToolChoice::Mode(mode.clone()))
        }
        Value::String(mode) => Err(ProtocolError::invalid(
            "tool_choice",
            format!("`{mode}` is not a tool choice: expected `auto`, `none`, `required` or a function."),
        )),
        Value::Object(object) => match object.get("type").and_then(Value::as_str) {
            Some("function") => match object.get("name").and_then(Value::as_str) {
                Some(name) => Ok(ToolChoice::Named(
                    json!({"type": "function", "function": {"name": name}}),
                )),
                None => Err(missing("tool_choice.name".to_owned())),
            },
            Some(other) => Err(ProtocolError::unsupported(
                "tool_choice.type",
                format!("A `{other}` tool choice cannot be expressed in chat completions; use a mode or a function."),
            )),
            None => Err(missing("tool_choice.type".to_owned())),
        },
        _ => Err(ProtocolError::invalid(
            "tool_choice",
            "`tool_choice` must be a string or an object.",
        )),
    }
}

fn response_format(format: &RawFormat) -> Result<Option<Value>, ProtocolError> {
    match format.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let name = format
                .name
                .as_deref()
                .ok_or_else(|| missing("text.format.name".to_owned()))?;
            let schema = format
                .schema
                .as_ref()
                .ok_or_else(|| missing("text.format.schema".to_owned()))?;
            let mut json_schema = json!({"name": name, "schema": schema});
            if let Some(description) = &format.description {
                json_schema["description"] = Value::String(description.clone());
            }
            if let Some(strict) = format.strict {
                json_schema["strict"] = Value::Bool(strict);
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": json_schema})))
        }
        other => Err(ProtocolError::invalid(
            "text.format.type",
            format!("`{other}` is not a text format: expected `text`, `json_object` or `json_schema`."),
        )),
    }
}

fn echo_text(text: Option<&RawText>) -> Value {
    let format = match text.and_then(|t| t.format.as_ref()) {
        None => json!({"type": "text"}),
        Some(format) => {
            let mut echo = json!({"type": format.kind});
            for (key, value) in [
                ("name", format.name.as_ref()),
                ("description", format.description.as_ref()),
            ] {
                if let Some(value) = value {
                    echo[key] = Value::String(value.clone());
                }
            }
            if let Some(schema) = &format.schema {
                echo["schema"] = schema.clone();
            }
            if let Some(strict) = format.strict {
                echo["strict"] = Value::Bool(strict);
            }
            echo
        }
    };
    let mut echo = json!({"format": format});
    if let Some(verbosity) = text.and_then(|t| t.verbosity.as_ref()) {
        echo["verbosity"] = Value::String(verbosity.clone());
    }
    echo
}

fn echo_tools(tools: Option<&[RawTool]>) -> Value {
    Value::Array(
        tools
            .unwrap_or_default()
            .iter()
            .map(|tool| {
                json!({
                    "type": tool.kind,
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                    "strict": tool.strict,
                })
            })
            .collect(),
    )
}
