//! What the Gemini API refuses, checked as it checks it, and a valid request read into the simulator's
//! terms.

use serde_json::{Map, Value, json};

use super::SIGNATURE;
use crate::{SimCaching, SimCallMade, SimRequest, SimRole, SimTool, SimToolChoice, SimTurn};

/// Google's documented signature for function calls a Gemini model did not make.
const FOREIGN_SIGNATURE: &str = "skip_thought_signature_validator";

const FIELDS: &[&str] = &[
    "contents",
    "tools",
    "toolConfig",
    "tool_config",
    "safetySettings",
    "safety_settings",
    "systemInstruction",
    "system_instruction",
    "generationConfig",
    "generation_config",
    "cachedContent",
    "cached_content",
];

/// The `data` oneof of a part, camelCase and snake_case.
const DATA: &[(&str, &str)] = &[
    ("text", "text"),
    ("inlineData", "inline_data"),
    ("fileData", "file_data"),
    ("functionCall", "function_call"),
    ("functionResponse", "function_response"),
    ("executableCode", "executable_code"),
    ("codeExecutionResult", "code_execution_result"),
];

const PART_METADATA: &[&str] = &[
    "thought",
    "thoughtSignature",
    "thought_signature",
    "videoMetadata",
    "video_metadata",
    "partMetadata",
    "part_metadata",
    "mediaResolution",
    "media_resolution",
];

const GENERATION_CONFIG: &[&str] = &[
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
];

/// A field by its camelCase or snake_case name.
fn field<'v>(object: &'v Map<String, Value>, camel: &str, snake: &str) -> Option<&'v Value> {
    object.get(camel).or_else(|| object.get(snake)).filter(|v| !v.is_null())
}

fn unknown_field(name: &str, at: Option<&str>) -> String {
    match at {
        Some(at) => format!("Invalid JSON payload received. Unknown name \"{name}\" at '{at}': Cannot find field."),
        None => format!("Invalid JSON payload received. Unknown name \"{name}\": Cannot find field."),
    }
}

/// Checks a `GenerateContentRequest` as Gemini does and reads it into the simulator's terms. The error is
/// Gemini's message for the first problem.
pub fn validate(body: &Value, model: &str) -> Result<SimRequest, String> {
    let Some(object) = body.as_object() else {
        return Err("Invalid JSON payload received. Expected an object.".to_owned());
    };
    if let Some(extra) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(unknown_field(extra, None));
    }
    let mut turns = Vec::new();
    if let Some(system) = field(object, "systemInstruction", "system_instruction") {
        let parts = system.get("parts").and_then(Value::as_array);
        let text: String = parts
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        if parts.is_none() {
            return Err("* GenerateContentRequest.system_instruction.parts: parts must not be empty.\n".to_owned());
        }
        turns.push(SimTurn::text(SimRole::System, text));
    }
    let contents = match field(object, "contents", "contents") {
        Some(Value::Array(contents)) if !contents.is_empty() => contents,
        Some(Value::Array(_)) | None => {
            return Err("* GenerateContentRequest.contents: contents is not specified\n".to_owned());
        }
        Some(_) => return Err(unknown_field("contents", None)),
    };
    let gemini_3 = model.trim_start_matches("models/").starts_with("gemini-3");
    let mut previous: Option<Content<'_>> = None;
    for (i, content) in contents.iter().enumerate() {
        let content = read_content(content, i, gemini_3)?;
        check_order(&content, previous.as_ref(), i)?;
        turns.push(content.turn.clone());
        previous = Some(content);
    }
    let tools = tools(object)?;
    let tool_choice = tool_choice(object)?;
    let (max_tokens, thinking) = generation_config(object)?;
    let schema = field(object, "generationConfig", "generation_config").and_then(|config| {
        field_of(config, "responseJsonSchema", "response_json_schema")
            .or_else(|| field_of(config, "responseSchema", "response_schema"))
            .cloned()
    });
    let model = model.trim_start_matches("models/").to_owned();
    Ok(SimRequest {
        schema,
        reasoning: thinking || model.contains("thinking"),
        model,
        turns,
        tools,
        tool_choice,
        max_tokens,
        stream: false,
        caching: SimCaching::Automatic,
    })
}

/// One content, read.
struct Content<'v> {
    model: bool,
    turn: SimTurn,
    calls: Vec<&'v str>,
    responses: Vec<&'v str>,
}

fn read_content(content: &Value, i: usize, gemini_3: bool) -> Result<Content<'_>, String> {
    let at = format!("contents[{i}]");
    let Some(content) = content.as_object() else {
        return Err(format!("Invalid JSON payload received. Expected an object at '{at}'."));
    };
    if let Some(extra) = content.keys().find(|k| *k != "role" && *k != "parts") {
        return Err(unknown_field(extra, Some(&at)));
    }
    let model = match content.get("role").and_then(Value::as_str) {
        None | Some("user") => false,
        Some("model") => true,
        Some(_) => return Err("Please use a valid role: user, model.".to_owned()),
    };
    let parts = match content.get("parts").and_then(Value::as_array) {
        Some(parts) if !parts.is_empty() => parts,
        _ => {
            return Err(format!(
                "* GenerateContentRequest.{at}.parts: contents.parts must not be empty.\n"
            ));
        }
    };
    let mut read = Content {
        model,
        turn: SimTurn {
            role: if model { SimRole::Assistant } else { SimRole::User },
            ..SimTurn::default()
        },
        calls: Vec::new(),
        responses: Vec::new(),
    };
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}.parts[{j}]");
        let Some(part) = part.as_object() else {
            return Err(format!("Invalid JSON payload received. Expected an object at '{at}'."));
        };
        if let Some(extra) = part.keys().find(|k| {
            !PART_METADATA.contains(&k.as_str()) && !DATA.iter().any(|(camel, snake)| k == camel || k == snake)
        }) {
            return Err(unknown_field(extra, Some(&at)));
        }
        let set: Vec<&str> = DATA
            .iter()
            .filter(|(camel, snake)| field(part, camel, snake).is_some())
            .map(|(camel, _)| *camel)
            .collect();
        let kind = match set.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "* GenerateContentRequest.{at}.data: required oneof field 'data' must have one initialized field\n"
                ));
            }
            [_, second, ..] => {
                return Err(format!(
                    "Invalid JSON payload received. Oneof field 'data' is already set. Cannot set '{second}'"
                ));
            }
        };
        let signed = field(part, "thoughtSignature", "thought_signature").and_then(Value::as_str);
        let thought = part.get("thought").and_then(Value::as_bool) == Some(true);
        match kind {
            "text" => {
                let Some(text) = part.get("text").and_then(Value::as_str) else {
                    return Err(format!("Invalid JSON payload received. Invalid value at '{at}.text'."));
                };
                if !thought {
                    read.turn.text.push_str(text);
                }
            }
            "inlineData" => {
                let blob = field(part, "inlineData", "inline_data").and_then(Value::as_object);
                let mime = blob
                    .and_then(|b| field(b, "mimeType", "mime_type"))
                    .and_then(Value::as_str);
                let data = blob.and_then(|b| b.get("data")).and_then(Value::as_str);
                let (Some(mime), Some(data)) = (mime, data) else {
                    return Err(format!(
                        "* GenerateContentRequest.{at}.inline_data: mime_type and data are required.\n"
                    ));
                };
                let base64 = data
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'));
                if !base64 || data.is_empty() {
                    return Err(format!(
                        "Invalid value at '{at}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                    ));
                }
                if mime.starts_with("image/") {
                    read.turn.images += 1;
                }
            }
            "fileData" => {
                let file = field(part, "fileData", "file_data").and_then(Value::as_object);
                let uri = file
                    .and_then(|f| field(f, "fileUri", "file_uri"))
                    .and_then(Value::as_str);
                if uri.is_none_or(str::is_empty) {
                    return Err(format!(
                        "* GenerateContentRequest.{at}.file_data.file_uri: file_uri is required.\n"
                    ));
                }
                let mime = file
                    .and_then(|f| field(f, "mimeType", "mime_type"))
                    .and_then(Value::as_str);
                if mime.is_some_and(|m| m.starts_with("image/")) {
                    read.turn.images += 1;
                }
            }
            "functionCall" => {
                let call = field(part, "functionCall", "function_call").and_then(Value::as_object);
                let Some(name) = call.and_then(|c| c.get("name")).and_then(Value::as_str) else {
                    return Err(format!(
                        "* GenerateContentRequest.{at}.function_call.name: name is required.\n"
                    ));
                };
                if !model {
                    return Err(format!(
                        "* GenerateContentRequest.{at}.function_call: function calls may only appear in model turns.\n"
                    ));
                }
                if gemini_3
                    && read.calls.is_empty()
                    && !signed.is_some_and(|s| s == SIGNATURE || s == FOREIGN_SIGNATURE)
                {
                    return Err(match signed {
                        Some(_) => format!("Corrupted thought signature at '{at}'."),
                        None => format!(
                            "Function call is missing a thought_signature in functionCall parts. This is required \
                             for tools to work correctly, and missing thought_signature may lead to degraded model \
                             performance. Additional data, function call `default_api:{name}` , position {}. Please \
                             refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                            j + 1
                        ),
                    });
                }
                let args = call.and_then(|c| c.get("args")).cloned().unwrap_or_else(|| json!({}));
                read.calls.push(name);
                read.turn.tool_calls.push(SimCallMade {
                    name: name.to_owned(),
                    arguments: args.to_string(),
                });
            }
            "functionResponse" => {
                let response = field(part, "functionResponse", "function_response").and_then(Value::as_object);
                let Some(name) = response.and_then(|r| r.get("name")).and_then(Value::as_str) else {
                    return Err(format!(
                        "* GenerateContentRequest.{at}.function_response.name: name is required.\n"
                    ));
                };
                let Some(result) = response.and_then(|r| r.get("response")).filter(|r| r.is_object()) else {
                    return Err(format!(
                        "* GenerateContentRequest.{at}.function_response.response: response must be an object.\n"
                    ));
                };
                if model {
                    return Err(format!(
                        "* GenerateContentRequest.{at}.function_response: function responses may only appear in \
                         user turns.\n"
                    ));
                }
                read.responses.push(name);
                read.turn.tool_results.push(result_text(result));
            }
            // Code execution parts carry no text the simulator reads.
            _ => {}
        }
    }
    Ok(read)
}

/// Gemini's rules on where function calls and responses may stand.
fn check_order(content: &Content<'_>, previous: Option<&Content<'_>>, i: usize) -> Result<(), String> {
    if !content.calls.is_empty() && previous.is_none_or(|p| p.model) {
        return Err(
            "Please ensure that function call turn comes immediately after a user turn or after a function response \
             turn."
                .to_owned(),
        );
    }
    if content.responses.is_empty() {
        return Ok(());
    }
    let Some(calls) = previous.filter(|p| p.model && !p.calls.is_empty()).map(|p| &p.calls) else {
        return Err(
            "Please ensure that function response turn comes immediately after a function call turn.".to_owned(),
        );
    };
    if calls.len() != content.responses.len() {
        return Err(
            "Please ensure that the number of function response parts is equal to the number of function call parts \
             of the function call turn."
                .to_owned(),
        );
    }
    if let Some(name) = content.responses.iter().find(|name| !calls.contains(name)) {
        return Err(format!(
            "* GenerateContentRequest.contents[{i}]: function response `{name}` does not answer a function call of \
             the previous turn.\n"
        ));
    }
    Ok(())
}

/// The text of a function's result: the `output` (or `result`, `content`) string Google's guides suggest,
/// else the whole object as JSON.
fn result_text(response: &Value) -> String {
    ["output", "result", "content"]
        .iter()
        .find_map(|k| response.get(*k).and_then(Value::as_str))
        .map_or_else(|| response.to_string(), str::to_owned)
}

fn tools(object: &Map<String, Value>) -> Result<Vec<SimTool>, String> {
    let Some(tools) = field(object, "tools", "tools") else {
        return Ok(Vec::new());
    };
    let Some(tools) = tools.as_array() else {
        return Err("Invalid JSON payload received. Invalid value at 'tools'.".to_owned());
    };
    let mut out = Vec::new();
    for (t, tool) in tools.iter().enumerate() {
        let Some(declarations) = tool
            .as_object()
            .and_then(|tool| field(tool, "functionDeclarations", "function_declarations"))
        else {
            // Google's own tools (search, code execution, URL context) declare no functions.
            continue;
        };
        for (d, declaration) in declarations.as_array().into_iter().flatten().enumerate() {
            let at = format!("tools[{t}].function_declarations[{d}]");
            let name = declaration.get("name").and_then(Value::as_str).unwrap_or_default();
            let valid = name.len() <= 64
                && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
            if !valid {
                return Err(format!(
                    "* GenerateContentRequest.{at}.name: Invalid function name. Must start with a letter or an \
                     underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes \
                     (-), with a maximum length of 64.\n"
                ));
            }
            let Some(declaration) = declaration.as_object() else {
                continue;
            };
            let schema = field(declaration, "parametersJsonSchema", "parameters_json_schema");
            let legacy = field(declaration, "parameters", "parameters");
            if schema.is_some() && legacy.is_some() {
                return Err(format!(
                    "* GenerateContentRequest.{at}: parameters and parameters_json_schema must not both be set.\n"
                ));
            }
            out.push(SimTool {
                name: name.to_owned(),
                parameters: schema.or(legacy).cloned(),
            });
        }
    }
    Ok(out)
}

fn tool_choice(object: &Map<String, Value>) -> Result<SimToolChoice, String> {
    let config = field(object, "toolConfig", "tool_config")
        .and_then(Value::as_object)
        .and_then(|c| field(c, "functionCallingConfig", "function_calling_config"))
        .and_then(Value::as_object);
    let Some(config) = config else {
        return Ok(SimToolChoice::Auto);
    };
    let allowed = field(config, "allowedFunctionNames", "allowed_function_names")
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(Value::as_str);
    match config.get("mode").and_then(Value::as_str).unwrap_or("AUTO") {
        "AUTO" | "MODE_UNSPECIFIED" | "VALIDATED" => Ok(SimToolChoice::Auto),
        "NONE" => Ok(SimToolChoice::None),
        "ANY" => Ok(allowed.map_or(SimToolChoice::Required, |name| SimToolChoice::Named(name.to_owned()))),
        other => Err(format!(
            "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/google.ai.\
             generativelanguage.v1beta.FunctionCallingConfig.Mode), \"{other}\""
        )),
    }
}

/// Checks `generationConfig` and returns its `maxOutputTokens`, and whether it asks the model to think
/// (a `thinkingConfig` whose `thinkingBudget` is not 0; -1 is a dynamic budget).
fn generation_config(object: &Map<String, Value>) -> Result<(Option<u32>, bool), String> {
    let Some(config) = field(object, "generationConfig", "generation_config") else {
        return Ok((None, false));
    };
    let Some(config) = config.as_object() else {
        return Err("Invalid JSON payload received. Invalid value at 'generation_config'.".to_owned());
    };
    let camel = |key: &str| -> String {
        let mut out = String::with_capacity(key.len());
        let mut upper = false;
        for c in key.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    };
    if let Some(extra) = config.keys().find(|k| !GENERATION_CONFIG.contains(&camel(k).as_str())) {
        return Err(unknown_field(extra, Some("generation_config")));
    }
    if let Some(temperature) = field(config, "temperature", "temperature").and_then(Value::as_f64)
        && !(0.0..=2.0).contains(&temperature)
    {
        return Err(
            "* GenerateContentRequest.generation_config.temperature: temperature must be in the range [0.0, 2.0].\n"
                .to_owned(),
        );
    }
    let thinking = field(config, "thinkingConfig", "thinking_config")
        .and_then(|thinking| field_of(thinking, "thinkingBudget", "thinking_budget"))
        .and_then(Value::as_i64)
        .is_some_and(|budget| budget != 0);
    let max_tokens = match field(config, "maxOutputTokens", "max_output_tokens") {
        None => None,
        Some(value) => match value.as_i64() {
            Some(n) if n > 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            _ => {
                return Err(
                    "* GenerateContentRequest.generation_config.max_output_tokens: max_output_tokens must be \
                     positive.\n"
                        .to_owned(),
                );
            }
        },
    };
    Ok((max_tokens, thinking))
}

/// A field of a JSON object by its camelCase or snake_case name.
fn field_of<'v>(value: &'v Value, camel: &str, snake: &str) -> Option<&'v Value> {
    value.as_object().and_then(|object| field(object, camel, snake))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: Value, model: &str) -> String {
        validate(&body, model).unwrap_err()
    }

    #[test]
    fn what_gemini_refuses() {
        let hi = json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]});
        assert!(validate(&hi, "gemini-2.5-flash").is_ok());
        assert_eq!(
            refused(
                json!({"contents": [{"role": "assistant", "parts": [{"text": "Hi"}]}]}),
                "g"
            ),
            "Please use a valid role: user, model."
        );
        assert!(refused(json!({"contents": []}), "g").contains("contents is not specified"));
        assert!(refused(json!({"contents": [{"role": "user", "parts": []}]}), "g").contains("must not be empty"));
        assert!(refused(json!({"contents": [{"parts": [{}]}]}), "g").contains("oneof field 'data'"));
        assert!(
            refused(json!({"contents": [{"parts": [{"text": "a", "inlineData": {}}]}]}), "g").contains("already set")
        );
        assert!(refused(json!({"contents": hi["contents"], "system": "x"}), "g").contains("Unknown name \"system\""));
        assert!(
            refused(
                json!({"contents": hi["contents"], "generationConfig": {"max_tokens": 5}}),
                "g"
            )
            .contains("Unknown name \"max_tokens\" at 'generation_config'")
        );
        // Both spellings of a field are taken.
        assert!(
            validate(
                &json!({"contents": hi["contents"], "generation_config": {"max_output_tokens": 5}}),
                "g"
            )
            .is_ok()
        );
    }

    #[test]
    fn function_responses_follow_function_calls() {
        let call =
            json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE});
        let answer = json!({"functionResponse": {"name": "get_weather", "response": {"output": "18C and sunny"}}});
        let ok = json!({"contents": [
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [call]},
            {"role": "user", "parts": [answer]}
        ]});
        let request = validate(&ok, "gemini-3-flash").unwrap();
        assert!(request.turns[2].is_tool_result());
        assert_eq!(request.turns[2].tool_results, ["18C and sunny"]);
        let orphan = json!({"contents": [{"role": "user", "parts": [{"text": "Weather?"}]}, {"role": "user", "parts": [answer]}]});
        assert!(refused(orphan, "g").contains("comes immediately after a function call turn"));
        let renamed = json!({"contents": [
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [call]},
            {"role": "user", "parts": [{"functionResponse": {"name": "other", "response": {}}}]}
        ]});
        assert!(refused(renamed, "g").contains("does not answer a function call"));
        let unsigned = json!({"contents": [
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
            {"role": "user", "parts": [answer]}
        ]});
        assert!(validate(&unsigned, "gemini-2.5-flash").is_ok());
        assert!(refused(unsigned, "gemini-3-pro").contains("missing a thought_signature"));
    }
}
