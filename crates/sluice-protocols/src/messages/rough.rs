//! A Messages body read for an upstream that takes it byte for byte (Anthropic's), when it asks for what
//! only Anthropic can serve: server tools, documents, containers, MCP servers, beta fields. Such a body
//! goes on as it is; the gateway only needs to count its prompt and reserve its completion, so every text
//! it carries is gathered into one user message, what the strict translation would have counted and more
//! (tool definitions, document text), never the base64 of images or documents, nor signatures.

use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_api::{ChatCompletionRequest, ChatMessage, MessageContent, Role, StreamOptions, parse_json};

use super::request::Endpoint;
use crate::ProtocolError;

#[derive(Deserialize)]
struct RoughRequest {
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    messages: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
}

/// Keys whose strings are not text the model reads as tokens: base64 payloads and signatures.
const OPAQUE: [&str; 3] = ["data", "signature", "media_type"];

pub(super) fn read(body: &[u8], endpoint: Endpoint) -> Result<ChatCompletionRequest, ProtocolError> {
    let raw: RoughRequest = parse_json(body)?;
    let max_tokens = match (endpoint, raw.max_tokens) {
        (Endpoint::Messages, None) => return Err(ProtocolError::invalid("max_tokens", "max_tokens: Field required")),
        (Endpoint::Messages, Some(0)) => {
            return Err(ProtocolError::invalid("max_tokens", "max_tokens: must be at least 1"));
        }
        (_, max_tokens) => max_tokens,
    };
    let mut text = String::new();
    for part in [&raw.system, &raw.messages, &raw.tools].into_iter().flatten() {
        gather(part, &mut text);
    }
    let stream = endpoint == Endpoint::Messages && raw.stream == Some(true);
    Ok(ChatCompletionRequest {
        model: raw.model,
        messages: vec![ChatMessage {
            role: Role::User,
            content: Some(MessageContent::Text(text)),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }],
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        max_tokens: None,
        max_completion_tokens: max_tokens,
        temperature: None,
        top_p: None,
        n: None,
        stop: None,
        tools: None,
        tool_choice: None,
        user: None,
        response_format: None,
        extra: Map::new(),
    })
}

/// Appends every string of `value` but the opaque ones, a line each.
fn gather(value: &Value, text: &mut String) {
    match value {
        Value::String(s) => {
            text.push_str(s);
            text.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|item| gather(item, text)),
        Value::Object(map) => {
            for (key, value) in map {
                if !OPAQUE.contains(&key.as_str()) {
                    gather(value, text);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::read_for_passthrough;

    #[test]
    fn what_only_anthropic_serves_is_read_roughly_and_its_refusal_kept() {
        let body = json!({
            "model": "claude-sonnet-4-5", "max_tokens": 300, "stream": true,
            "context_management": {"edits": []},
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
            "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}},
                {"type": "text", "text": "Summarise the rivers in this report."}]}]
        });
        let reading = read_for_passthrough(body.to_string().as_bytes(), false).unwrap();
        let refusal = reading.untranslatable.expect("not translatable");
        assert_eq!(refusal.status(), 400);
        let chat = reading.chat;
        assert_eq!(
            (chat.model.as_str(), chat.max_completion_tokens),
            ("claude-sonnet-4-5", Some(300))
        );
        assert!(chat.is_stream());
        assert_eq!(chat.stream_options.and_then(|o| o.include_usage), Some(true));
        let text = chat.messages[0].content.as_ref().unwrap().text().into_owned();
        assert!(
            text.contains("Summarise the rivers") && text.contains("web_search"),
            "{text}"
        );
        assert!(!text.contains("JVBERi0"), "base64 is not text: {text}");

        // A body the strict reading takes is translated as ever; one even the rough reading refuses is an
        // error.
        let plain = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]});
        assert!(
            read_for_passthrough(plain.to_string().as_bytes(), false)
                .unwrap()
                .untranslatable
                .is_none()
        );
        let no_max = json!({"model": "m", "messages": [], "mcp_servers": []});
        assert!(read_for_passthrough(no_max.to_string().as_bytes(), false).is_err());
        assert!(read_for_passthrough(no_max.to_string().as_bytes(), true).is_ok());
        assert!(read_for_passthrough(b"{", false).is_err());
    }
}
