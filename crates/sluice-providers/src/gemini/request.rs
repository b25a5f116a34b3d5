//! An OpenAI chat request as Gemini's `GenerateContentRequest`.
//!
//! - `system` and `developer` messages go to `systemInstruction` (one text part each, wherever they were).
//! - `user` turns keep role `user`, `assistant` turns become `model`; consecutive turns of one role merge
//!   into one `Content`, which also puts parallel function responses in one turn as Gemini expects.
//! - Content parts as [`super::content`] translates them (text, images, audio, files).
//! - Assistant `tool_calls` become `functionCall` parts (`args` parsed from the JSON text, with Gemini's id and
//!   thought signature when the tool call id carries them, see [`super`]); `tool` messages become
//!   `functionResponse` parts in a `user` turn, named after the call they answer.
//! - `generationConfig`: `temperature`, `topP`, `maxOutputTokens` (the client's cap, else the deployment's),
//!   `stopSequences`, `candidateCount` (`n`), `seed`, `presencePenalty`, `frequencyPenalty`, and
//!   `responseMimeType` with `responseJsonSchema` for `response_format`.
//! - `tools` become one `Tool` of `functionDeclarations` with `parametersJsonSchema` (full JSON Schema, as
//!   OpenAI clients write it); `tool_choice` becomes `toolConfig.functionCallingConfig`.
//!
//! Anything Gemini cannot take is refused with a 400 naming the field, before a call is spent. OpenAI
//! parameters with no Gemini equivalent (`logit_bias`, `logprobs`, `reasoning_effort`...) are refused by
//! the adapter unless the deployment drops them (`crate::params`); `user` and `parallel_tool_calls` change
//! nothing in the answer and are left out.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value, json};
use sluice_api::{ChatCompletionRequest, ChatMessage, ErrorBody, MessageContent, Role, Stop, ToolChoice};

use super::content::{content_parts, system_parts};
use crate::ProviderError;

/// The signature Google documents for function calls Gemini did not produce (another vendor's turns,
/// hand-built histories): Gemini 3 refuses a function call turn whose first call has no signature.
const FOREIGN_SIGNATURE: &str = "skip_thought_signature_validator";

// === wire types ===

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GeminiRequest<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
}

#[derive(Debug, Serialize)]
struct Content<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

#[derive(Debug, Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Part<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) text: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) inline_data: Option<Blob<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) file_data: Option<FileData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) function_call: Option<FunctionCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) function_response: Option<FunctionResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) thought_signature: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Blob<'a> {
    pub(super) mime_type: &'a str,
    pub(super) data: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FileData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mime_type: Option<&'static str>,
    pub(super) file_uri: &'a str,
}

#[derive(Debug, Serialize)]
pub(super) struct FunctionCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) id: Option<&'a str>,
    pub(super) name: &'a str,
    pub(super) args: Value,
}

#[derive(Debug, Serialize)]
pub(super) struct FunctionResponse<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) id: Option<&'a str>,
    pub(super) name: &'a str,
    pub(super) response: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Tool<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<Vec<&'a str>>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_none()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
            && self.response_json_schema.is_none()
    }
}

// === translation ===

/// A 400 the client sees, naming the field in OpenAI's terms.
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

/// Translates a request; `default_max_tokens` is the deployment's cap for clients that set none.
pub(crate) fn translate(
    request: &ChatCompletionRequest,
    default_max_tokens: Option<u32>,
) -> Result<GeminiRequest<'_>, ProviderError> {
    let mut system: Vec<Part<'_>> = Vec::new();
    let mut contents: Vec<Content<'_>> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let (role, parts) = match message.role {
            Role::System | Role::Developer => {
                system.extend(system_parts(message, i)?);
                continue;
            }
            Role::User => ("user", content_parts(message.content.as_ref(), i)?),
            Role::Assistant => ("model", assistant_parts(message, i)?),
            Role::Tool | Role::Function => ("user", vec![function_response(request, message, i)?]),
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => contents.push(Content { role, parts }),
        }
    }
    if contents.is_empty() {
        return Err(invalid(
            "messages",
            "Gemini needs at least one user or assistant message besides system messages",
        ));
    }
    for content in contents.iter_mut().filter(|c| c.role == "model") {
        sign_foreign_calls(&mut content.parts);
    }
    let (tools, tool_config) = tools(request)?;
    Ok(GeminiRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(SystemInstruction { parts: system }),
        tools,
        tool_config,
        generation_config: generation_config(request, default_max_tokens)?,
    })
}

fn assistant_parts(message: &ChatMessage, i: usize) -> Result<Vec<Part<'_>>, ProviderError> {
    let mut parts = content_parts(message.content.as_ref(), i)?;
    for (j, call) in message.tool_calls.iter().flatten().enumerate() {
        let decoded = super::decode_tool_call_id(&call.id);
        parts.push(Part {
            function_call: Some(FunctionCall {
                id: decoded.gemini_id,
                name: &call.function.name,
                args: parse_arguments(
                    &call.function.arguments,
                    format!("messages[{i}].tool_calls[{j}].function.arguments"),
                )?,
            }),
            thought_signature: decoded.signature,
            ..Part::default()
        });
    }
    // The deprecated single `function_call` of older clients.
    if let Some(call) = message.extra.get("function_call").filter(|c| !c.is_null()) {
        let name = call.get("name").and_then(Value::as_str).ok_or_else(|| {
            invalid(
                format!("messages[{i}].function_call.name"),
                "a function call needs a name",
            )
        })?;
        let arguments = call.get("arguments").and_then(Value::as_str).unwrap_or("{}");
        parts.push(Part {
            function_call: Some(FunctionCall {
                id: None,
                name,
                args: parse_arguments(arguments, format!("messages[{i}].function_call.arguments"))?,
            }),
            ..Part::default()
        });
    }
    Ok(parts)
}

/// Tool call arguments are JSON text; Gemini wants the object itself.
fn parse_arguments(arguments: &str, param: String) -> Result<Value, ProviderError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(invalid(param, "tool call arguments must be a JSON object")),
    }
}

/// Gemini 3 checks that each function call turn starts with a signed call. Turns whose calls came back
/// with their signatures are left alone; a turn with none gets Google's documented placeholder on its
/// first call.
fn sign_foreign_calls(parts: &mut [Part<'_>]) {
    let calls = || parts.iter().filter(|p| p.function_call.is_some());
    if calls().next().is_none() || calls().any(|p| p.thought_signature.is_some()) {
        return;
    }
    if let Some(first) = parts.iter_mut().find(|p| p.function_call.is_some()) {
        first.thought_signature = Some(FOREIGN_SIGNATURE.to_owned());
    }
}

fn function_response<'a>(
    request: &'a ChatCompletionRequest,
    message: &'a ChatMessage,
    i: usize,
) -> Result<Part<'a>, ProviderError> {
    let (name, id) = if message.role == Role::Function {
        let name = message
            .name
            .as_deref()
            .ok_or_else(|| invalid(format!("messages[{i}].name"), "a function message needs a name"))?;
        (name, None)
    } else {
        let call_id = message.tool_call_id.as_deref().ok_or_else(|| {
            invalid(
                format!("messages[{i}].tool_call_id"),
                "a tool message needs a tool_call_id",
            )
        })?;
        // Gemini names the function a response answers; OpenAI names only the call, so look it up.
        let name = request.messages[..i]
            .iter()
            .rev()
            .flat_map(|m| m.tool_calls.iter().flatten())
            .find(|call| call.id == call_id)
            .map(|call| call.function.name.as_str())
            .or(message.name.as_deref())
            .ok_or_else(|| {
                invalid(
                    format!("messages[{i}].tool_call_id"),
                    format!("no earlier assistant message has a tool call with id `{call_id}`"),
                )
            })?;
        (name, super::decode_tool_call_id(call_id).gemini_id)
    };
    let text = message.content.as_ref().map(MessageContent::text).unwrap_or_default();
    // `response` must be an object; Google's reference suggests the `output` key for a plain result.
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        Ok(other) => json!({ "output": other }),
        Err(_) => json!({ "output": text }),
    };
    Ok(Part {
        function_response: Some(FunctionResponse { id, name, response }),
        ..Part::default()
    })
}

fn tools(request: &ChatCompletionRequest) -> Result<(Vec<Tool<'_>>, Option<ToolConfig<'_>>), ProviderError> {
    let Some(tools) = request.tools.as_deref().filter(|t| !t.is_empty()) else {
        return Ok((Vec::new(), None));
    };
    let mut declarations = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(invalid(
                format!("tools[{i}].type"),
                format!("Gemini takes only function tools, not `{}`", tool.kind),
            ));
        }
        declarations.push(FunctionDeclaration {
            name: &tool.function.name,
            description: tool.function.description.as_deref(),
            parameters_json_schema: tool.function.parameters.as_ref(),
        });
    }
    let config = match &request.tool_choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => {
            let mode = match mode.as_str() {
                "auto" => "AUTO",
                "none" => "NONE",
                "required" => "ANY",
                _ => {
                    return Err(invalid(
                        "tool_choice",
                        format!("tool_choice `{mode}` is not one of auto, none, required"),
                    ));
                }
            };
            Some(FunctionCallingConfig {
                mode,
                allowed_function_names: None,
            })
        }
        Some(ToolChoice::Named(named)) => {
            let name = named
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice", "a named tool_choice needs function.name"))?;
            Some(FunctionCallingConfig {
                mode: "ANY",
                allowed_function_names: Some(vec![name]),
            })
        }
    };
    Ok((
        vec![Tool {
            function_declarations: declarations,
        }],
        config.map(|function_calling_config| ToolConfig {
            function_calling_config,
        }),
    ))
}

fn generation_config(
    request: &ChatCompletionRequest,
    default_max_tokens: Option<u32>,
) -> Result<GenerationConfig<'_>, ProviderError> {
    let number = |name: &str| request.extra.get(name).and_then(Value::as_f64);
    let (response_mime_type, response_json_schema) = match &request.response_format {
        None => (None, None),
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => (None, None),
            Some("json_object") => (Some("application/json"), None),
            Some("json_schema") => (
                Some("application/json"),
                format.get("json_schema").and_then(|s| s.get("schema")),
            ),
            _ => {
                return Err(invalid(
                    "response_format.type",
                    "response_format.type must be text, json_object or json_schema",
                ));
            }
        },
    };
    Ok(GenerationConfig {
        temperature: request.temperature,
        top_p: request.top_p,
        max_output_tokens: request.completion_cap().or(default_max_tokens),
        stop_sequences: request.stop.as_ref().map(|stop| match stop {
            Stop::One(one) => vec![one.as_str()],
            Stop::Many(many) => many.iter().map(String::as_str).collect(),
        }),
        candidate_count: request.n,
        seed: request.extra.get("seed").and_then(Value::as_i64),
        presence_penalty: number("presence_penalty"),
        frequency_penalty: number("frequency_penalty"),
        response_mime_type,
        response_json_schema,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatCompletionRequest {
        serde_json::from_value(body).unwrap()
    }

    fn gemini(body: Value) -> Value {
        let request = request(body);
        serde_json::to_value(translate(&request, None).unwrap()).unwrap()
    }

    fn rejected_param(body: Value) -> String {
        let request = request(body);
        match translate(&request, None) {
            Err(ProviderError::Rejected { status: 400, error }) => error.error.param.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn system_messages_roles_and_merging() {
        let body = gemini(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": [{"type": "text", "text": "Still there?"}]},
                {"role": "assistant", "content": "Oui."},
                {"role": "user", "content": "Merci"}
            ]
        }));
        assert_eq!(
            body,
            json!({
                "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "Hi"}, {"text": "Still there?"}]},
                    {"role": "model", "parts": [{"text": "Oui."}]},
                    {"role": "user", "parts": [{"text": "Merci"}]}
                ]
            })
        );
    }

    #[test]
    fn generation_config_and_response_format() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
            "additionalProperties": false});
        let body = gemini(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "max_completion_tokens": 60,
            "stop": ["END", "STOP"], "n": 2, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "user": "u-1",
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true, "schema": schema}}
        }));
        assert_eq!(
            body["generationConfig"],
            json!({
                "temperature": 0.3, "topP": 0.9, "maxOutputTokens": 60, "stopSequences": ["END", "STOP"],
                "candidateCount": 2, "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": -0.5,
                "responseMimeType": "application/json", "responseJsonSchema": schema
            })
        );
        let body = gemini(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "stop": "END", "response_format": {"type": "json_object"}}));
        assert_eq!(
            body["generationConfig"],
            json!({"stopSequences": ["END"], "responseMimeType": "application/json"})
        );
        let text_only = gemini(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "text"}}));
        assert!(text_only.get("generationConfig").is_none(), "{text_only}");
    }

    #[test]
    fn the_deployment_cap_applies_when_the_client_sets_none() {
        let plain = request(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
        let body = serde_json::to_value(translate(&plain, Some(4096)).unwrap()).unwrap();
        assert_eq!(body["generationConfig"], json!({"maxOutputTokens": 4096}));
        let capped = request(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9}));
        let body = serde_json::to_value(translate(&capped, Some(4096)).unwrap()).unwrap();
        assert_eq!(body["generationConfig"], json!({"maxOutputTokens": 9}));
    }

    #[test]
    fn a_tool_call_round_trip() {
        let call_id = crate::gemini::encode_tool_call_id(Some("fc-1"), "s", 0, Some("c2lnbmF0dXJl"));
        let body = gemini(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_s_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": call_id, "content": "{\"temp\": 21}"},
                {"role": "tool", "tool_call_id": "call_s_1", "content": "sunny"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": "auto"
        }));
        assert_eq!(
            body,
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                    {"role": "model", "parts": [
                        {"functionCall": {"id": "fc-1", "name": "get_weather", "args": {"city": "Paris"}},
                         "thoughtSignature": "c2lnbmF0dXJl"},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"id": "fc-1", "name": "get_weather", "response": {"temp": 21}}},
                        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
                    ]}
                ],
                "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather by city",
                    "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}
            })
        );
    }

    #[test]
    fn foreign_tool_calls_get_the_documented_placeholder_signature() {
        let body = gemini(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "toolu_01", "type": "function", "function": {"name": "a", "arguments": ""}},
                    {"id": "toolu_02", "type": "function", "function": {"name": "b", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_01", "content": "[1, 2]"},
                {"role": "tool", "tool_call_id": "toolu_02", "content": "42"}
            ]
        }));
        assert_eq!(
            body["contents"][1]["parts"],
            json!([
                {"text": "Let me look."},
                {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "skip_thought_signature_validator"},
                {"functionCall": {"name": "b", "args": {}}}
            ])
        );
        assert_eq!(
            body["contents"][2]["parts"],
            json!([
                {"functionResponse": {"name": "a", "response": {"output": [1, 2]}}},
                {"functionResponse": {"name": "b", "response": {"output": 42}}}
            ])
        );
    }

    #[test]
    fn tool_choice_modes() {
        let with_choice = |choice: Value| {
            gemini(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}))["toolConfig"]
                .clone()
        };
        assert_eq!(
            with_choice(json!("none")),
            json!({"functionCallingConfig": {"mode": "NONE"}})
        );
        assert_eq!(
            with_choice(json!("required")),
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
        assert_eq!(
            with_choice(json!({"type": "function", "function": {"name": "f"}})),
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}})
        );
        assert_eq!(
            rejected_param(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"})),
            "tool_choice"
        );
        // Without tools there is nothing to configure.
        let body = gemini(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "none"}));
        assert!(
            body.get("toolConfig").is_none() && body.get("tools").is_none(),
            "{body}"
        );
    }

    #[test]
    fn broken_tool_histories_are_refused() {
        assert_eq!(
            rejected_param(json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "call_unknown", "content": "1"}]})),
            "messages[1].tool_call_id"
        );
        assert_eq!(
            rejected_param(json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]})),
            "messages[1].tool_calls[0].function.arguments"
        );
        assert_eq!(
            rejected_param(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "custom", "function": {"name": "f"}}]})),
            "tools[0].type"
        );
    }

    #[test]
    fn deprecated_function_messages() {
        let body = gemini(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{\"a\":1}"}},
                {"role": "function", "name": "f", "content": "done"}
            ]
        }));
        assert_eq!(
            body["contents"][1]["parts"][0]["functionCall"],
            json!({"name": "f", "args": {"a": 1}})
        );
        assert_eq!(
            body["contents"][2]["parts"],
            json!([{"functionResponse": {"name": "f", "response": {"output": "done"}}}])
        );
    }
}
