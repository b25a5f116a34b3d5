//! What Anthropic's Messages API refuses, checked as it checks it, and a valid request read into the
//! simulator's terms.

use serde_json::{Map, Value};

use crate::{
    SimBreakpoint, SimCacheTtl, SimCaching, SimCallMade, SimRequest, SimRole, SimTool, SimToolChoice, SimTurn,
};

/// Media types Anthropic takes for base64 images.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Top-level fields of a Messages request; anything else is refused, as Anthropic does.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
    "output_format",
    "cache_control",
];

/// Fields of a custom tool.
const TOOL_FIELDS: &[&str] = &[
    "name",
    "description",
    "input_schema",
    "cache_control",
    "type",
    "strict",
    "input_examples",
    "defer_loading",
    "eager_input_streaming",
];

/// Checks a Messages request as Anthropic does and reads it into the simulator's terms, with whether it
/// asks for a stream. The error is Anthropic's message for the first problem.
pub fn validate(body: &Value) -> Result<(SimRequest, bool), String> {
    let Some(object) = body.as_object() else {
        return Err("Input should be a valid dictionary or object to extract fields from".to_owned());
    };
    if let Some(extra) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("{extra}: Extra inputs are not permitted"));
    }
    let model = match object.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        None | Some(Value::Null) => return Err("model: Field required".to_owned()),
        Some(_) => return Err("model: Input should be a valid string".to_owned()),
    };
    let max_tokens = match object.get("max_tokens") {
        None | Some(Value::Null) => return Err("max_tokens: Field required".to_owned()),
        Some(value) => match value.as_i64() {
            Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
            Some(_) => return Err("max_tokens: Input should be greater than or equal to 1".to_owned()),
            None => return Err("max_tokens: Input should be a valid integer".to_owned()),
        },
    };
    let stream = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err("stream: Input should be a valid boolean".to_owned()),
    };
    for name in ["temperature", "top_p"] {
        match object.get(name) {
            None | Some(Value::Null) => {}
            Some(value) => match value.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => {}
                Some(x) if x < 0.0 => return Err(format!("{name}: Input should be greater than or equal to 0")),
                Some(_) => return Err(format!("{name}: Input should be less than or equal to 1")),
                None => return Err(format!("{name}: Input should be a valid number")),
            },
        }
    }
    if let Some(top_k) = object.get("top_k").filter(|v| !v.is_null())
        && top_k.as_u64().is_none()
    {
        return Err("top_k: Input should be greater than or equal to 0".to_owned());
    }
    if let Some(stops) = object.get("stop_sequences").filter(|v| !v.is_null())
        && !stops.as_array().is_some_and(|s| s.iter().all(Value::is_string))
    {
        return Err("stop_sequences: Input should be a valid list of strings".to_owned());
    }
    if let Some(metadata) = object.get("metadata").filter(|v| !v.is_null()) {
        let Some(metadata) = metadata.as_object() else {
            return Err("metadata: Input should be a valid dictionary".to_owned());
        };
        if let Some(extra) = metadata.keys().find(|k| *k != "user_id") {
            return Err(format!("metadata.{extra}: Extra inputs are not permitted"));
        }
        if metadata.get("user_id").is_some_and(|u| !u.is_string() && !u.is_null()) {
            return Err("metadata.user_id: Input should be a valid string".to_owned());
        }
    }

    let mut turns = Vec::new();
    match object.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => turns.push(SimTurn::text(SimRole::System, text.clone())),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for (j, block) in blocks.iter().enumerate() {
                match (block.get("type").and_then(Value::as_str), block.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => return Err(format!("system.{j}: Input should be a valid text block")),
                }
            }
            turns.push(SimTurn::text(SimRole::System, text));
        }
        Some(_) => return Err("system: Input should be a valid string or a list of text blocks".to_owned()),
    }
    let reasoning = thinking(object, max_tokens)?;
    let system_turns = turns.len();
    turns.extend(conversation(object)?);
    let tools = tools(object)?;
    let tool_choice = tool_choice(object)?;
    let breakpoints = breakpoints(object, system_turns, turns.len())?;
    let request = SimRequest {
        model,
        turns,
        tools,
        tool_choice,
        max_tokens: Some(max_tokens),
        stream,
        caching: SimCaching::Breakpoints(breakpoints),
        reasoning,
        schema: output_schema(object)?,
    };
    Ok((request, stream))
}

/// The schema of the JSON output asked for: `output_config.format` (or the older `output_format`) of type
/// `json_schema`, which must carry an object `schema`.
fn output_schema(object: &Map<String, Value>) -> Result<Option<Value>, String> {
    let (at, format) = match (
        object.get("output_config").and_then(|c| c.get("format")),
        object.get("output_format"),
    ) {
        (Some(format), _) => ("output_config.format", format),
        (None, Some(format)) => ("output_format", format),
        (None, None) => return Ok(None),
    };
    if format.is_null() {
        return Ok(None);
    }
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Err(format!("{at}.type: Input should be 'json_schema'"));
    }
    match format.get("schema") {
        Some(schema @ Value::Object(_)) => Ok(Some(schema.clone())),
        _ => Err(format!("{at}.schema: Field required")),
    }
}

/// Whether the request asks for extended thinking (`thinking: {"type": "enabled", "budget_tokens": N}`),
/// checked as Anthropic checks it: a budget of at least 1024, below `max_tokens`.
fn thinking(object: &Map<String, Value>, max_tokens: u32) -> Result<bool, String> {
    let Some(thinking) = object.get("thinking").filter(|v| !v.is_null()) else {
        return Ok(false);
    };
    match thinking.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(false),
        Some("enabled") => match thinking.get("budget_tokens").and_then(Value::as_u64) {
            None => Err("thinking.enabled.budget_tokens: Field required".to_owned()),
            Some(budget) if budget < 1024 => {
                Err("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024".to_owned())
            }
            Some(budget) if budget >= u64::from(max_tokens) => {
                Err("`max_tokens` must be greater than `thinking.budget_tokens`".to_owned())
            }
            Some(_) => Ok(true),
        },
        _ => Err("thinking: Input tag does not match any of the expected tags: 'enabled', 'disabled'".to_owned()),
    }
}

/// The signature the simulated Anthropic issues for a thinking block's text: a keyed hash of the text,
/// written with the characters a real signature has (`+`, `/`, `=`), so a gateway that re-encodes or
/// alters either byte is caught when the block comes back.
pub fn thinking_signature(thinking: &str) -> String {
    let first = crate::text::fnv1a(format!("sluice-sim-thinking:{thinking}").as_bytes());
    let second = crate::text::fnv1a(format!("{thinking}:sluice-sim-thinking").as_bytes());
    format!("ErUBCkYIBxgCIkB{first:016x}+/{second:016x}==")
}

/// The most `cache_control` blocks a request may carry.
const MAX_BREAKPOINTS: usize = 4;

/// The cache breakpoints of a request: a turn holding a block with `cache_control` caches the prompt through
/// that turn (the system prompt is the first `system_turns` turns, `messages` follow); a top-level
/// `cache_control` caches the whole prompt. Checked as Anthropic checks them.
fn breakpoints(object: &Map<String, Value>, system_turns: usize, turns: usize) -> Result<Vec<SimBreakpoint>, String> {
    let mut found: Vec<(usize, &Value, String)> = Vec::new();
    if let Some(Value::Array(blocks)) = object.get("system") {
        for (j, block) in blocks.iter().enumerate() {
            if let Some(control) = block.get("cache_control").filter(|c| !c.is_null()) {
                found.push((system_turns, control, format!("system.{j}.cache_control")));
            }
        }
    }
    if let Some(Value::Array(messages)) = object.get("messages") {
        for (i, message) in messages.iter().enumerate() {
            let Some(Value::Array(blocks)) = message.get("content") else {
                continue;
            };
            for (j, block) in blocks.iter().enumerate() {
                if let Some(control) = block.get("cache_control").filter(|c| !c.is_null()) {
                    found.push((
                        system_turns + i + 1,
                        control,
                        format!("messages.{i}.content.{j}.cache_control"),
                    ));
                }
            }
        }
    }
    if let Some(control) = object.get("cache_control").filter(|c| !c.is_null()) {
        found.push((turns, control, "cache_control".to_owned()));
    }
    if found.len() > MAX_BREAKPOINTS {
        return Err(format!(
            "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {}.",
            found.len()
        ));
    }
    found
        .into_iter()
        .map(|(turns, control, at)| {
            if control.get("type").and_then(Value::as_str) != Some("ephemeral") {
                return Err(format!("{at}.type: Input should be 'ephemeral'"));
            }
            let ttl = match control.get("ttl") {
                None | Some(Value::Null) => SimCacheTtl::FiveMinutes,
                Some(Value::String(ttl)) if ttl == "5m" => SimCacheTtl::FiveMinutes,
                Some(Value::String(ttl)) if ttl == "1h" => SimCacheTtl::OneHour,
                Some(_) => return Err(format!("{at}.ttl: Input should be '5m' or '1h'")),
            };
            Ok(SimBreakpoint { turns, ttl })
        })
        .collect()
}

/// The `messages` as turns, checked.
fn conversation(object: &Map<String, Value>) -> Result<Vec<SimTurn>, String> {
    let messages = match object.get("messages") {
        None | Some(Value::Null) => return Err("messages: Field required".to_owned()),
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err("messages: Input should be a valid list".to_owned()),
    };
    if messages.is_empty() {
        return Err("messages: at least one message is required".to_owned());
    }
    let mut turns = Vec::with_capacity(messages.len());
    let mut previous: Option<&str> = None;
    // The tool_use ids of the previous assistant turn, which this turn must answer.
    let mut open: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let Some(message) = message.as_object() else {
            return Err(format!("messages.{i}: Input should be a valid dictionary"));
        };
        if let Some(extra) = message.keys().find(|k| *k != "role" && *k != "content") {
            return Err(format!("messages.{i}.{extra}: Extra inputs are not permitted"));
        }
        let role = match message.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant")) => role,
            Some("system") => {
                return Err(format!(
                    "messages.{i}.role: Unexpected role \"system\". The Messages API accepts a top-level `system` \
                     parameter, not \"system\" as an input message role."
                ));
            }
            None if !message.contains_key("role") => return Err(format!("messages.{i}.role: Field required")),
            _ => return Err(format!("messages.{i}.role: Input should be 'user' or 'assistant'")),
        };
        if i == 0 && role != "user" {
            return Err("messages: first message must use the \"user\" role".to_owned());
        }
        if previous == Some(role) {
            return Err(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" \
                 roles in a row"
            ));
        }
        let final_assistant = i + 1 == messages.len() && role == "assistant";
        let (turn, tool_uses, answered) = turn(i, role, message.get("content"), &open, final_assistant)?;
        let missing: Vec<&str> = open
            .iter()
            .filter(|id| !answered.contains(id))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "messages.{}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each \
                 `tool_use` block must have a corresponding `tool_result` block in the next message.",
                i - 1,
                missing.join(", ")
            ));
        }
        open = tool_uses;
        previous = Some(role);
        turns.push(turn);
    }
    Ok(turns)
}

/// One message's content as a turn, with the tool_use ids it opens and the ones it answers.
fn turn(
    i: usize,
    role: &str,
    content: Option<&Value>,
    open: &[String],
    final_assistant: bool,
) -> Result<(SimTurn, Vec<String>, Vec<String>), String> {
    let mut turn = SimTurn {
        role: if role == "user" {
            SimRole::User
        } else {
            SimRole::Assistant
        },
        ..SimTurn::default()
    };
    let mut tool_uses = Vec::new();
    let mut answered = Vec::new();
    let empty = || {
        format!(
            "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
        )
    };
    let blocks = match content {
        None => return Err(format!("messages.{i}.content: Field required")),
        Some(Value::String(text)) => {
            if text.is_empty() && !final_assistant {
                return Err(empty());
            }
            turn.text = text.clone();
            return Ok((turn, tool_uses, answered));
        }
        Some(Value::Array(blocks)) => blocks,
        Some(_) => return Err(format!("messages.{i}.content: Input should be a valid string or list")),
    };
    if blocks.is_empty() && !final_assistant {
        return Err(empty());
    }
    let mut other_seen = false;
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        let Some(block) = block.as_object() else {
            return Err(format!("{at}: Input should be a valid dictionary"));
        };
        let kind = block.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "text" => {
                let Some(text) = block.get("text").and_then(Value::as_str) else {
                    return Err(format!("{at}.text.text: Field required"));
                };
                if text.is_empty() {
                    return Err("messages: text content blocks must be non-empty".to_owned());
                }
                turn.text.push_str(text);
                other_seen = true;
            }
            "image" => {
                check_source(block, &format!("{at}.image"), true)?;
                turn.images += 1;
                other_seen = true;
            }
            "document" => {
                check_source(block, &format!("{at}.document"), false)?;
                other_seen = true;
            }
            "tool_use" => {
                if role != "assistant" {
                    return Err(format!("{at}: `tool_use` blocks may only appear in assistant messages"));
                }
                let (Some(id), Some(name)) = (
                    block.get("id").and_then(Value::as_str),
                    block.get("name").and_then(Value::as_str),
                ) else {
                    return Err(format!("{at}.tool_use: `id` and `name` are required"));
                };
                let Some(input) = block.get("input").filter(|i| i.is_object()) else {
                    return Err(format!("{at}.tool_use.input: Input should be a valid dictionary"));
                };
                tool_uses.push(id.to_owned());
                turn.tool_calls.push(SimCallMade {
                    name: name.to_owned(),
                    arguments: input.to_string(),
                });
                other_seen = true;
            }
            "tool_result" => {
                if role != "user" {
                    return Err(format!("{at}: `tool_result` blocks may only appear in user messages"));
                }
                if other_seen {
                    return Err(format!(
                        "messages.{i}: `tool_result` blocks must come first in the content array, before any \
                         other content"
                    ));
                }
                let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
                    return Err(format!("{at}.tool_result.tool_use_id: Field required"));
                };
                if !open.iter().any(|open| open == id) {
                    return Err(format!(
                        "{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` \
                         block must have a corresponding `tool_use` block in the previous message."
                    ));
                }
                answered.push(id.to_owned());
                turn.tool_results.push(tool_result_text(block.get("content"), &at)?);
            }
            "thinking" => {
                if role != "assistant" {
                    return Err(format!("{at}: `thinking` blocks may only appear in assistant messages"));
                }
                let (Some(thinking), Some(signature)) = (
                    block.get("thinking").and_then(Value::as_str),
                    block.get("signature").and_then(Value::as_str),
                ) else {
                    return Err(format!("{at}.thinking: `thinking` and `signature` are required"));
                };
                // Anthropic checks that it issued the signature for exactly this text.
                if signature != thinking_signature(thinking) {
                    return Err(format!("{at}: Invalid `signature` in `thinking` block"));
                }
            }
            "redacted_thinking" => {
                if block.get("data").and_then(Value::as_str).is_none() {
                    return Err(format!("{at}.redacted_thinking.data: Field required"));
                }
            }
            "" => return Err(format!("{at}.type: Field required")),
            other => {
                return Err(format!(
                    "{at}: Input tag '{other}' found using 'type' does not match any of the expected tags: \
                     'text', 'image', 'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking'"
                ));
            }
        }
    }
    Ok((turn, tool_uses, answered))
}

/// The text of a `tool_result`'s content: a string, or its text blocks joined.
fn tool_result_text(content: Option<&Value>, at: &str) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for (k, block) in blocks.iter().enumerate() {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
                    Some("image" | "document" | "search_result") => {}
                    _ => {
                        return Err(format!(
                            "{at}.tool_result.content.{k}: Input should be a valid content block"
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(format!(
            "{at}.tool_result.content: Input should be a valid string or list"
        )),
    }
}

/// An image's or document's `source`: base64 data of a supported type, a URL, a file id, or (documents)
/// plain text.
fn check_source(block: &Map<String, Value>, at: &str, image: bool) -> Result<(), String> {
    let Some(source) = block.get("source").and_then(Value::as_object) else {
        return Err(format!("{at}.source: Field required"));
    };
    let field = |name: &str| source.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = field("media_type").unwrap_or_default();
            if image && !IMAGE_TYPES.contains(&media_type) {
                return Err(format!(
                    "{at}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or \
                     'image/webp'"
                ));
            }
            if !image && !matches!(media_type, "application/pdf" | "text/plain") {
                return Err(format!(
                    "{at}.source.base64.media_type: Input should be 'application/pdf'"
                ));
            }
            let Some(data) = field("data") else {
                return Err(format!("{at}.source.base64.data: Field required"));
            };
            if !data
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            {
                return Err(format!("{at}.source.base64.data: The image data is not valid base64"));
            }
            Ok(())
        }
        Some("url") => match field("url") {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => Ok(()),
            _ => Err(format!("{at}.source.url.url: Input should be a valid URL")),
        },
        Some("file") if field("file_id").is_some() => Ok(()),
        Some("text") if !image && field("data").is_some() => Ok(()),
        Some(other) => Err(format!(
            "{at}.source: Input tag '{other}' found using 'type' does not match any of the expected tags: 'base64', \
             'url', 'file'"
        )),
        None => Err(format!("{at}.source.type: Field required")),
    }
}

fn tools(object: &Map<String, Value>) -> Result<Vec<SimTool>, String> {
    let tools = match object.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err("tools: Input should be a valid list".to_owned()),
    };
    let mut out: Vec<SimTool> = Vec::with_capacity(tools.len());
    for (k, tool) in tools.iter().enumerate() {
        let Some(tool) = tool.as_object() else {
            return Err(format!("tools.{k}: Input should be a valid dictionary"));
        };
        // Anthropic's own tools (web search, code execution...) carry a versioned type; only custom tools
        // are the client's functions.
        if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "custom") {
            continue;
        }
        if let Some(extra) = tool.keys().find(|key| !TOOL_FIELDS.contains(&key.as_str())) {
            return Err(format!("tools.{k}.custom.{extra}: Extra inputs are not permitted"));
        }
        let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
        let valid_name = (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_name {
            return Err(format!(
                "tools.{k}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            ));
        }
        if out.iter().any(|t| t.name == name) {
            return Err("tools: Tool names must be unique.".to_owned());
        }
        let Some(schema) = tool.get("input_schema").filter(|s| s.is_object()) else {
            return Err(format!("tools.{k}.custom.input_schema: Field required"));
        };
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(format!("tools.{k}.custom.input_schema.type: Input should be 'object'"));
        }
        out.push(SimTool {
            name: name.to_owned(),
            parameters: Some(schema.clone()),
        });
    }
    Ok(out)
}

fn tool_choice(object: &Map<String, Value>) -> Result<SimToolChoice, String> {
    let Some(choice) = object.get("tool_choice").filter(|c| !c.is_null()) else {
        return Ok(SimToolChoice::Auto);
    };
    match choice.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(SimToolChoice::Auto),
        Some("any") => Ok(SimToolChoice::Required),
        Some("none") => Ok(SimToolChoice::None),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => Ok(SimToolChoice::Named(name.to_owned())),
            None => Err("tool_choice.tool.name: Field required".to_owned()),
        },
        _ => Err(
            "tool_choice: Input tag found using 'type' does not match any of the expected tags: 'auto', 'any', \
             'tool', 'none'"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(body: Value) -> String {
        validate(&body).unwrap_err()
    }

    fn base(messages: Value) -> Value {
        json!({"model": "claude-sim", "max_tokens": 64, "messages": messages})
    }

    #[test]
    fn what_anthropic_refuses() {
        let hi = json!([{"role": "user", "content": "Hello"}]);
        assert!(validate(&base(hi.clone())).is_ok());
        assert_eq!(
            refused(json!({"model": "m", "messages": hi})),
            "max_tokens: Field required"
        );
        assert!(
            refused(base(
                json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
            ))
            .contains("Unexpected role \"system\"")
        );
        assert!(
            refused(base(
                json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
            ))
            .contains("roles must alternate")
        );
        assert!(refused(base(json!([{"role": "assistant", "content": "a"}]))).contains("first message"));
        let mut extra = base(hi.clone());
        extra["n"] = json!(2);
        assert_eq!(refused(extra), "n: Extra inputs are not permitted");
        let mut hot = base(hi);
        hot["temperature"] = json!(1.5);
        assert!(refused(hot).contains("less than or equal to 1"));
        assert!(
            refused(base(
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
            ))
            .contains("Input tag 'image_url'")
        );
        assert!(
            refused(base(json!([{"role": "user", "content": [{"type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "data:image/png;base64,AAAA"}}]}])))
            .contains("not valid base64")
        );
    }

    #[test]
    fn tool_results_answer_the_previous_tool_uses() {
        let call = json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}});
        let ok = base(json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C and sunny"}]}
        ]));
        let (request, _) = validate(&ok).unwrap();
        assert!(request.turns[2].is_tool_result());
        assert_eq!(request.turns[2].tool_results, ["18C and sunny"]);
        let wrong_id = base(json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "x"}]}
        ]));
        assert!(refused(wrong_id).contains("unexpected `tool_use_id`"));
        let unanswered = base(json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": "Well?"}
        ]));
        assert!(refused(unanswered).contains("`tool_use` ids were found without `tool_result` blocks"));
        let text_first = base(json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [{"type": "text", "text": "here"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]}
        ]));
        assert!(refused(text_first).contains("must come first"));
    }

    #[test]
    fn thinking_blocks_must_carry_the_signature_issued_for_their_text() {
        let thinking = json!({"type": "enabled", "budget_tokens": 1024});
        let ask = |messages: Value| json!({"model": "claude-sim", "max_tokens": 2048, "thinking": thinking, "messages": messages});
        let (request, _) = validate(&ask(json!([{"role": "user", "content": "Why?"}]))).unwrap();
        assert!(request.reasoning);
        let signed = |text: &str, signature: &str| {
            json!([{"role": "user", "content": "Why?"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": text, "signature": signature},
                    {"type": "text", "text": "Because."}]},
                {"role": "user", "content": "Go on."}])
        };
        let signature = thinking_signature("Let me see.");
        assert!(validate(&ask(signed("Let me see.", &signature))).is_ok());
        // Another text under the same signature, or the signature altered: refused, as Anthropic does.
        assert!(refused(ask(signed("Let me see!", &signature))).contains("Invalid `signature`"));
        assert!(refused(ask(signed("Let me see.", &signature.replace('+', "-")))).contains("Invalid `signature`"));
        let mut low = ask(json!([{"role": "user", "content": "Why?"}]));
        low["thinking"]["budget_tokens"] = json!(512);
        assert!(refused(low).contains("budget_tokens"));
        let mut over = ask(json!([{"role": "user", "content": "Why?"}]));
        over["max_tokens"] = json!(1024);
        assert!(refused(over).contains("max_tokens"));
    }

    #[test]
    fn json_output_is_read_from_output_config() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
        let mut body = base(json!([{"role": "user", "content": "Name it."}]));
        body["output_config"] = json!({"format": {"type": "json_schema", "schema": schema}});
        assert_eq!(validate(&body).unwrap().0.schema, Some(schema));
        body["output_config"] = json!({"format": {"type": "json_schema"}});
        assert!(refused(body).contains("output_config.format.schema"));
    }
}
