//! OpenAI chat request -> Anthropic Messages request.
//!
//! Shapes from Anthropic's API reference (`POST /v1/messages`, platform.claude.com/docs/en/api/messages)
//! and its tool-use, vision and structured-outputs guides. The translated request borrows every string
//! it can from the client's request.
//!
//! What does not map one to one, and what was chosen:
//! - `system` and `developer` messages, wherever they stand, become the top-level `system`, joined by a
//!   blank line (a list of text blocks instead when a part carries `cache_control`, which is kept).
//! - Anthropic wants alternating turns: consecutive turns of the same role are merged into one, and
//!   `tool` messages become `tool_result` blocks of a user turn, placed before any text of that turn as
//!   Anthropic requires.
//! - `response_format: json_schema` becomes `output_config.format` (Anthropic's JSON outputs);
//!   `json_object` has no equivalent and is an unsupported parameter.
//! - `parallel_tool_calls: false` becomes `tool_choice.disable_parallel_tool_use`; `top_k` (an Anthropic
//!   parameter some clients send) is forwarded; `safety_identifier` stands in for `user`.
//! - Parameters Anthropic cannot honour (`n` > 1, `seed`, `logprobs`, penalties, `logit_bias`, any other
//!   unknown field) are refused with a 400 naming them, or dropped and listed when the deployment allows
//!   it. Fields that only matter to OpenAI's platform (`store`, `metadata`, `service_tier`...) are
//!   dropped silently, as are `name` on messages and `detail` on images.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use sluice_api::{ChatCompletionRequest, ChatMessage, ErrorBody, MessageContent, Role, Stop, ToolChoice};

use super::content::{Block, content_blocks};
use crate::params::Unsupported;
use crate::{ChatCall, ProviderError};

/// `max_tokens` when neither the client nor the deployment set one (Anthropic requires it).
pub(crate) const FALLBACK_MAX_TOKENS: u32 = 4096;

// === Wire types ===

/// The body of `POST /v1/messages`.
#[derive(Debug, Serialize)]
pub(crate) struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<System<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<AnthropicTool<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<AnthropicToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum System<'a> {
    Text(String),
    Blocks(Vec<Block<'a>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum TurnRole {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
struct Turn<'a> {
    role: TurnRole,
    content: Vec<Block<'a>>,
}

#[derive(Debug, Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

#[derive(Debug, Serialize)]
struct AnthropicTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Debug, Serialize)]
struct AnthropicToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

#[derive(Debug, Serialize)]
struct OutputConfig<'a> {
    format: JsonFormat<'a>,
}

#[derive(Debug, Serialize)]
struct JsonFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'a Value,
}

/// A translated request and the client parameters dropped on the way.
#[derive(Debug)]
pub(crate) struct Translated<'a> {
    /// The Anthropic request body.
    pub(crate) body: MessagesRequest<'a>,
    /// Parameters the client set that Anthropic cannot honour, dropped because the deployment allows it.
    pub(crate) dropped: Vec<&'a str>,
}

// === Translation ===

pub(super) fn invalid(param: impl Into<String>, message: impl Into<String>) -> ProviderError {
    ProviderError::Rejected {
        status: 400,
        error: ErrorBody::new(
            "invalid_request_error",
            message,
            Some(param.into()),
            Some("invalid_value".to_owned()),
        ),
    }
}

/// Client parameters read from `extra` by the translation itself.
const TRANSLATED: &[&str] = &["parallel_tool_calls", "top_k", "safety_identifier"];

/// Translates one call to an Anthropic Messages request. With `drop_unsupported`, parameters Anthropic
/// cannot honour are dropped and listed instead of refused.
pub(crate) fn translate<'a>(call: &ChatCall<'a>, drop_unsupported: bool) -> Result<Translated<'a>, ProviderError> {
    let request: &'a ChatCompletionRequest = call.request;
    let mut unsupported = Unsupported::new("Anthropic Messages", drop_unsupported);
    if request.n.is_some_and(|n| n > 1) {
        unsupported.refuse("n")?;
    }
    unsupported.check_extra(request, TRANSLATED, &[])?;
    let output_config = match &request.response_format {
        None => None,
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => None,
            Some("json_schema") => {
                let schema = format.get("json_schema").and_then(|s| s.get("schema")).ok_or_else(|| {
                    invalid(
                        "response_format.json_schema.schema",
                        "a json_schema response format needs a schema",
                    )
                })?;
                Some(OutputConfig {
                    format: JsonFormat {
                        kind: "json_schema",
                        schema,
                    },
                })
            }
            Some("json_object") => {
                unsupported.refuse("response_format")?;
                None
            }
            _ => {
                return Err(invalid(
                    "response_format.type",
                    "expected text, json_object or json_schema",
                ));
            }
        },
    };

    let (system, messages) = translate_messages(&request.messages)?;
    let tools = translate_tools(request)?;
    let tool_choice = match &tools {
        Some(_) => translate_tool_choice(request)?,
        None => None,
    };
    let top_k = match request.extra.get("top_k") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or_else(|| invalid("top_k", "top_k must be a positive integer"))?,
        ),
    };
    let user = request
        .user
        .as_deref()
        .or_else(|| request.extra.get("safety_identifier").and_then(Value::as_str));
    let stop_sequences = match &request.stop {
        None => None,
        Some(Stop::One(one)) => Some(vec![one.as_str()]),
        Some(Stop::Many(many)) if many.is_empty() => None,
        Some(Stop::Many(many)) => Some(many.iter().map(String::as_str).collect()),
    };

    let body = MessagesRequest {
        model: call.model,
        max_tokens: request
            .completion_cap()
            .or(call.default_max_tokens)
            .unwrap_or(FALLBACK_MAX_TOKENS),
        messages,
        system,
        stop_sequences,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k,
        metadata: user.map(|user_id| Metadata { user_id }),
        tools,
        tool_choice,
        output_config,
        stream: request.is_stream(),
    };
    Ok(Translated {
        body,
        dropped: unsupported.into_dropped(),
    })
}

/// Splits the conversation into the top-level system prompt and alternating user/assistant turns.
fn translate_messages(messages: &[ChatMessage]) -> Result<(Option<System<'_>>, Vec<Turn<'_>>), ProviderError> {
    let mut system: Vec<Block<'_>> = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        match message.role {
            Role::System | Role::Developer => {
                for block in content_blocks(message.content.as_ref(), i)? {
                    match block {
                        Block::Text { .. } => system.push(block),
                        _ => {
                            return Err(invalid(
                                format!("messages[{i}].content"),
                                "system messages may only hold text",
                            ));
                        }
                    }
                }
            }
            Role::User => push_turn(&mut turns, TurnRole::User, content_blocks(message.content.as_ref(), i)?),
            Role::Assistant => {
                let mut blocks = content_blocks(message.content.as_ref(), i)?;
                for (j, call) in message.tool_calls.iter().flatten().enumerate() {
                    blocks.push(Block::ToolUse {
                        id: &call.id,
                        name: &call.function.name,
                        input: parse_arguments(&call.function.arguments, i, j)?,
                    });
                }
                push_turn(&mut turns, TurnRole::Assistant, blocks);
            }
            Role::Tool => {
                let tool_use_id = message.tool_call_id.as_deref().ok_or_else(|| {
                    invalid(
                        format!("messages[{i}].tool_call_id"),
                        "a tool message needs tool_call_id",
                    )
                })?;
                let content = message.content.as_ref().map(MessageContent::text).unwrap_or_default();
                push_turn(
                    &mut turns,
                    TurnRole::User,
                    vec![Block::ToolResult { tool_use_id, content }],
                );
            }
            Role::Function => {
                return Err(invalid(
                    format!("messages[{i}].role"),
                    "the deprecated function role cannot be sent to Anthropic; use tool messages",
                ));
            }
        }
    }
    let system = if system.is_empty() {
        None
    } else if system.iter().any(|b| {
        matches!(
            b,
            Block::Text {
                cache_control: Some(_),
                ..
            }
        )
    }) {
        Some(System::Blocks(system))
    } else {
        let texts: Vec<&str> = system
            .iter()
            .filter_map(|b| match b {
                Block::Text { text, .. } => Some(text.as_ref()),
                _ => None,
            })
            .collect();
        Some(System::Text(texts.join("\n\n")))
    };
    Ok((system, turns))
}

/// Appends blocks to the conversation, merging into the last turn when it has the same role. Tool
/// results go before any other block of their turn.
fn push_turn<'a>(turns: &mut Vec<Turn<'a>>, role: TurnRole, blocks: Vec<Block<'a>>) {
    if blocks.is_empty() {
        return;
    }
    let turn = match turns.last_mut() {
        Some(last) if last.role == role => last,
        _ => {
            turns.push(Turn {
                role,
                content: Vec::with_capacity(blocks.len()),
            });
            match turns.last_mut() {
                Some(turn) => turn,
                None => return,
            }
        }
    };
    for block in blocks {
        if matches!(block, Block::ToolResult { .. }) {
            let at = turn
                .content
                .iter()
                .take_while(|b| matches!(b, Block::ToolResult { .. }))
                .count();
            turn.content.insert(at, block);
        } else {
            turn.content.push(block);
        }
    }
}

/// An assistant tool call's arguments, which OpenAI carries as a JSON string and Anthropic as an object.
fn parse_arguments(arguments: &str, message: usize, call: usize) -> Result<Value, ProviderError> {
    let param = || format!("messages[{message}].tool_calls[{call}].function.arguments");
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(invalid(param(), "tool call arguments must be a JSON object")),
        Err(e) => Err(invalid(param(), format!("tool call arguments are not valid JSON: {e}"))),
    }
}

fn translate_tools(request: &ChatCompletionRequest) -> Result<Option<Vec<AnthropicTool<'_>>>, ProviderError> {
    let Some(tools) = request.tools.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(invalid(
                format!("tools[{i}].type"),
                format!(
                    "tools of type '{}' are not supported by the Anthropic Messages API",
                    tool.kind
                ),
            ));
        }
        let function = &tool.function;
        let input_schema = match &function.parameters {
            Some(schema) if !schema.is_null() => Cow::Borrowed(schema),
            // Anthropic requires a schema; OpenAI's default is a function without parameters.
            _ => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
        };
        out.push(AnthropicTool {
            name: &function.name,
            description: function.description.as_deref(),
            input_schema,
            strict: function.strict,
        });
    }
    Ok(Some(out))
}

fn translate_tool_choice(request: &ChatCompletionRequest) -> Result<Option<AnthropicToolChoice<'_>>, ProviderError> {
    let disable_parallel = request.extra.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let (kind, name) = match &request.tool_choice {
        None if disable_parallel => ("auto", None),
        None => return Ok(None),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => ("auto", None),
            "none" => ("none", None),
            "required" => ("any", None),
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "expected auto, none, required or a named function",
                ));
            }
        },
        Some(ToolChoice::Named(value)) => {
            let name = value
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| value.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    invalid(
                        "tool_choice",
                        "expected {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    )
                })?;
            ("tool", Some(name))
        }
    };
    Ok(Some(AnthropicToolChoice {
        kind,
        name,
        // `none` takes no such option.
        disable_parallel_tool_use: disable_parallel && kind != "none",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UpstreamKey;
    use secrecy::SecretString;
    use serde_json::json;

    fn translate_json(body: Value, default_max_tokens: Option<u32>, drop: bool) -> Result<Value, ProviderError> {
        let request: ChatCompletionRequest = serde_json::from_value(body).unwrap();
        let key = UpstreamKey::new("anthropic#0", SecretString::from("k"));
        let call = ChatCall {
            request: &request,
            model: "claude-sonnet-4-5",
            key: &key,
            default_max_tokens,
            drop_unsupported: drop,
        };
        translate(&call, drop).map(|t| {
            let mut value = serde_json::to_value(&t.body).unwrap();
            if !t.dropped.is_empty() {
                value["_dropped"] = json!(t.dropped);
            }
            value
        })
    }

    fn ok(body: Value) -> Value {
        translate_json(body, None, false).unwrap()
    }

    fn rejected(body: Value) -> (String, String) {
        match translate_json(body, None, false) {
            Err(ProviderError::Rejected { status: 400, error }) => {
                (error.error.param.unwrap_or_default(), error.error.message)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_request_with_sampling_parameters() {
        let out = ok(json!({
            "model": "smart", "messages": [{"role": "user", "content": "Hello, Claude"}],
            "max_tokens": 300, "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "user-42",
            "stream": true, "stream_options": {"include_usage": true}, "n": 1,
            "frequency_penalty": 0, "presence_penalty": 0.0, "logprobs": false, "store": false
        }));
        assert_eq!(
            out,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 300,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]}],
                "stop_sequences": ["END"],
                "temperature": 0.5,
                "top_p": 0.9,
                "metadata": {"user_id": "user-42"},
                "stream": true
            })
        );
    }

    #[test]
    fn max_tokens_comes_from_client_then_deployment_then_fallback() {
        let body = |extra: Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };
        let max = |v: Value, default| translate_json(v, default, false).unwrap()["max_tokens"].clone();
        assert_eq!(
            max(body(json!({"max_completion_tokens": 77, "max_tokens": 5})), Some(1000)),
            json!(77)
        );
        assert_eq!(max(body(json!({"max_tokens": 5})), Some(1000)), json!(5));
        assert_eq!(max(body(json!({})), Some(1000)), json!(1000));
        assert_eq!(max(body(json!({})), None), json!(4096));
    }

    #[test]
    fn system_and_developer_messages_become_the_top_level_system() {
        let out = ok(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "Never mention cats."}
        ]}));
        assert_eq!(
            out["system"],
            json!("Be brief.\n\nAnswer in French.\n\nNever mention cats.")
        );
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
        );
        // A cache breakpoint on a system part keeps the blocks.
        let cached = ok(json!({"model": "m", "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Long manual", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"}
        ]}));
        assert_eq!(
            cached["system"],
            json!([
                {"type": "text", "text": "Long manual", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be brief."}
            ])
        );
        let (param, _) = rejected(json!({"model": "m", "messages": [
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
        ]}));
        assert_eq!(param, "messages[0].content");
    }

    #[test]
    fn consecutive_same_role_turns_are_merged() {
        let out = ok(json!({"model": "m", "messages": [
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "four"},
            {"role": "user", "content": "five"}
        ]}));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}]},
                {"role": "user", "content": [{"type": "text", "text": "five"}]}
            ])
        );
    }

    #[test]
    fn tools_and_tool_round_trip() {
        let out = ok(json!({"model": "m",
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a given location",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}, "strict": true}},
                {"type": "function", "function": {"name": "now"}}
            ],
            "messages": [
                {"role": "user", "content": "Weather in SF and NYC?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\": \"San Francisco, CA\"}"}},
                    {"id": "toolu_01B", "type": "function", "function": {"name": "now", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_01A", "content": "15 degrees"},
                {"role": "tool", "tool_call_id": "toolu_01B", "content": [{"type": "text", "text": "noon"}]},
                {"role": "user", "content": "Thanks, and tomorrow?"}
            ]
        }));
        assert_eq!(
            out["tools"],
            json!([
                {"name": "get_weather", "description": "Get the current weather in a given location",
                 "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}, "strict": true},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}}
            ])
        );
        assert!(out.get("tool_choice").is_none());
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather in SF and NYC?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "San Francisco, CA"}},
                    {"type": "tool_use", "id": "toolu_01B", "name": "now", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "15 degrees"},
                    {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "noon"},
                    {"type": "text", "text": "Thanks, and tomorrow?"}
                ]}
            ])
        );
    }

    #[test]
    fn tool_results_go_before_text_in_their_turn() {
        let out = ok(json!({"model": "m", "messages": [
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "user", "content": "also this"},
            {"role": "tool", "tool_call_id": "t1", "content": "done"}
        ]}));
        assert_eq!(
            out["messages"][1]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "t1", "content": "done"},
                {"type": "text", "text": "also this"}
            ])
        );
    }

    #[test]
    fn bad_tool_messages_are_refused_naming_the_field() {
        let (param, message) = rejected(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{\"x\": "}}]}
        ]}));
        assert_eq!(param, "messages[1].tool_calls[1].function.arguments");
        assert!(message.contains("not valid JSON"), "{message}");
        let (param, _) = rejected(json!({"model": "m", "messages": [
            {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}
        ]}));
        assert_eq!(param, "messages[0].tool_calls[0].function.arguments");
        let (param, _) = rejected(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}));
        assert_eq!(param, "messages[0].tool_call_id");
        let (param, _) =
            rejected(json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}));
        assert_eq!(param, "messages[0].role");
    }

    #[test]
    fn tool_choice_variants() {
        let choice = |tool_choice: Value, parallel: Option<bool>| {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]});
            if !tool_choice.is_null() {
                body["tool_choice"] = tool_choice;
            }
            if let Some(p) = parallel {
                body["parallel_tool_calls"] = json!(p);
            }
            ok(body).get("tool_choice").cloned()
        };
        assert_eq!(choice(json!("auto"), None), Some(json!({"type": "auto"})));
        assert_eq!(choice(json!("none"), None), Some(json!({"type": "none"})));
        assert_eq!(choice(json!("required"), None), Some(json!({"type": "any"})));
        assert_eq!(
            choice(json!({"type": "function", "function": {"name": "get_weather"}}), None),
            Some(json!({"type": "tool", "name": "get_weather"}))
        );
        assert_eq!(choice(Value::Null, None), None);
        assert_eq!(choice(Value::Null, Some(true)), None);
        assert_eq!(
            choice(Value::Null, Some(false)),
            Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
        );
        assert_eq!(
            choice(json!("required"), Some(false)),
            Some(json!({"type": "any", "disable_parallel_tool_use": true}))
        );
        assert_eq!(choice(json!("none"), Some(false)), Some(json!({"type": "none"})));
        // Without tools there is nothing to choose from: no tool_choice is sent.
        let out = ok(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "none"}));
        assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
        let (param, _) = rejected(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}));
        assert_eq!(param, "tool_choice");
    }

    #[test]
    fn json_schema_response_format_becomes_output_config() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": false});
        let out = ok(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": schema}}}));
        assert_eq!(
            out["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}})
        );
        let text = ok(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}}),
        );
        assert!(text.get("output_config").is_none());
        let (param, _) = rejected(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}));
        assert_eq!(param, "response_format.json_schema.schema");
    }

    #[test]
    fn unsupported_parameters_are_refused_or_dropped() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "n": 2, "seed": 7, "logit_bias": {"50256": -100}, "response_format": {"type": "json_object"},
            "metadata": {"team": "a"}, "top_k": 5, "safety_identifier": "hash-1", "frequency_penalty": null});
        let (param, message) = rejected(body.clone());
        assert_eq!(param, "n");
        assert!(message.contains("Anthropic"), "{message}");
        let out = translate_json(body, None, true).unwrap();
        let mut dropped: Vec<String> = serde_json::from_value(out["_dropped"].clone()).unwrap();
        dropped.sort();
        assert_eq!(dropped, ["logit_bias", "n", "response_format", "seed"]);
        assert_eq!(out["top_k"], json!(5));
        assert_eq!(out["metadata"], json!({"user_id": "hash-1"}));
        assert!(out.get("output_config").is_none() && out.get("seed").is_none());
        let (param, _) =
            rejected(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"}));
        assert_eq!(param, "reasoning_effort");
    }
}
