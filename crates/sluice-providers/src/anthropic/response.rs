//! Anthropic Message -> OpenAI `chat.completion`.
//!
//! Shapes from Anthropic's API reference (the `Message` object of `POST /v1/messages`): `content` is a
//! list of blocks (`text`, `tool_use`, and others such as `thinking` that chat completions have no place
//! for and are left out), `stop_reason` is one of `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`,
//! `pause_turn`, `refusal`, `model_context_window_exceeded`, and `usage` counts `input_tokens` apart from
//! `cache_read_input_tokens` and `cache_creation_input_tokens` (split by lifetime in `cache_creation`).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use sluice_api::{ChatCompletionResponse, Choice, FunctionCall, ResponseMessage, Role, TokenUsage, ToolCall};

use crate::ProviderError;

/// Anthropic's token usage, as sent in a `Message`, in `message_start` and (cumulatively) in
/// `message_delta`. Any count may be absent or `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct AnthropicUsage {
    /// Input tokens neither read from nor written to the cache.
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    /// Every cache write, whatever its lifetime.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    /// The writes by lifetime, where the API reports them.
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

/// `usage.cache_creation`: cache writes by lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Takes the counts a later event reports; the counts of `message_delta` are cumulative, so a count
    /// present there replaces the earlier one.
    pub(crate) fn update(&mut self, later: AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.cache_creation = later.cache_creation.or(self.cache_creation);
    }

    /// The usage by billing category. `input_tokens` is already the uncached input. Cache writes are split
    /// by lifetime as `cache_creation` reports them; writes it does not account for (or all of them, on
    /// answers without the split) are 5-minute writes, the default lifetime. Anthropic reports no
    /// reasoning count: thinking is billed inside `output_tokens`.
    pub(crate) fn tokens(self) -> TokenUsage {
        let writes = self.cache_creation_input_tokens.unwrap_or(0);
        let split = self.cache_creation.unwrap_or_default();
        let one_hour = split.ephemeral_1h_input_tokens.unwrap_or(0);
        let five_minutes = split
            .ephemeral_5m_input_tokens
            .unwrap_or(0)
            .max(writes.saturating_sub(one_hour));
        TokenUsage {
            input: self.input_tokens.unwrap_or(0),
            cache_read: self.cache_read_input_tokens.unwrap_or(0),
            cache_write_5m: five_minutes,
            cache_write_1h: one_hour,
            output: self.output_tokens.unwrap_or(0),
            reasoning: 0,
        }
    }
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn (a server tool paused the turn), and any new reason.
        _ => "stop",
    }
}

#[derive(Deserialize)]
struct AnthropicMessage {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<ResponseBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

/// The JSON string OpenAI carries tool arguments as.
pub(crate) fn arguments_json(input: &Value) -> String {
    match input {
        Value::Null => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// Translates a complete Anthropic response body into an OpenAI `chat.completion` body (its usage in
/// OpenAI's shape) and the usage by billing category. `created` is the Unix time to report, as Anthropic
/// sends none.
pub(crate) fn translate(body: &[u8], created: u64) -> Result<(Bytes, Option<TokenUsage>), ProviderError> {
    let message: AnthropicMessage = serde_json::from_slice(body).map_err(|e| ProviderError::Protocol {
        detail: format!("the response body is not an Anthropic message: {e}"),
    })?;
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            ResponseBlock::Text { text: piece } => match &mut text {
                Some(all) => all.push_str(&piece),
                None => text = Some(piece),
            },
            ResponseBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                kind: "function".to_owned(),
                function: FunctionCall {
                    name,
                    arguments: arguments_json(&input),
                },
            }),
            ResponseBlock::Other => {}
        }
    }
    // OpenAI sends `null` content when the model only called tools, and a string otherwise.
    let content = match (text, tool_calls.is_empty()) {
        (Some(text), _) => Some(text),
        (None, true) => Some(String::new()),
        (None, false) => None,
    };
    let usage = message.usage.map(AnthropicUsage::tokens);
    let response = ChatCompletionResponse {
        id: message.id,
        object: "chat.completion".to_owned(),
        created,
        model: message.model,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                refusal: None,
            },
            finish_reason: Some(finish_reason(message.stop_reason.as_deref().unwrap_or("end_turn")).to_owned()),
            logprobs: None,
        }],
        usage: usage.as_ref().map(TokenUsage::to_openai),
        extra: Default::default(),
    };
    let body = serde_json::to_vec(&response).map_err(|e| ProviderError::Protocol {
        detail: format!("could not serialise the translated response: {e}"),
    })?;
    Ok((Bytes::from(body), usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(body: Value) -> (Value, Option<TokenUsage>) {
        let (bytes, usage) = translate(body.to_string().as_bytes(), 1_700_000_000).unwrap();
        (serde_json::from_slice(&bytes).unwrap(), usage)
    }

    #[test]
    fn text_message_translates() {
        // The example response of the Messages API reference.
        let (out, usage) = run(json!({
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "Hi! My name is Claude."}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 2095, "output_tokens": 503}
        }));
        assert_eq!(
            out,
            json!({
                "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "claude-sonnet-4-5-20250929",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi! My name is Claude."},
                    "finish_reason": "stop",
                    "logprobs": null
                }],
                "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598}
            })
        );
        assert_eq!(usage, Some(TokenUsage::new(2095, 503)));
    }

    #[test]
    fn tool_use_message_translates() {
        // The tool-use guide's example: a thought, then a call.
        let (out, _) = run(json!({
            "id": "msg_01Aq9w938a90dw8q",
            "model": "claude-opus-4-1-20250805",
            "stop_reason": "tool_use",
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "The user wants the weather.", "signature": "sig"},
                {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                 "input": {"location": "San Francisco, CA", "unit": "celsius"}}
            ],
            "usage": {"input_tokens": 100, "output_tokens": 40, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 24}
        }));
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(
            choice["message"]["content"],
            "I'll check the current weather in San Francisco for you."
        );
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["id"], "toolu_01A09q90qw90lq917835lq9");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let arguments: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"location": "San Francisco, CA", "unit": "celsius"}));
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 1124, "completion_tokens": 40, "total_tokens": 1164,
                   "prompt_tokens_details": {"cached_tokens": 1000}})
        );
    }

    #[test]
    fn tool_only_answer_has_null_content() {
        let (out, _) = run(json!({
            "id": "msg_1", "model": "m", "stop_reason": "tool_use",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "a", "input": {}},
                {"type": "tool_use", "id": "t2", "name": "b", "input": {"x": [1, 2]}}
            ],
            "usage": {"input_tokens": 1, "output_tokens": 2}
        }));
        let message = &out["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{}");
        assert_eq!(message["tool_calls"][1]["function"]["arguments"], "{\"x\":[1,2]}");
    }

    #[test]
    fn text_blocks_are_joined_and_stop_reasons_mapped() {
        let (out, _) = run(json!({
            "id": "msg_2", "model": "m", "stop_reason": "max_tokens",
            "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}],
            "usage": {"input_tokens": 3, "output_tokens": 2}
        }));
        assert_eq!(out["choices"][0]["message"]["content"], "Hello, world");
        assert_eq!(out["choices"][0]["finish_reason"], "length");
        for (reason, expected) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("model_context_window_exceeded", "length"),
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(reason), expected, "{reason}");
        }
        let (empty, usage) = run(json!({"id": "msg_3", "model": "m", "content": [], "stop_reason": "end_turn"}));
        assert_eq!(empty["choices"][0]["message"]["content"], "");
        assert_eq!(usage, None);
    }

    #[test]
    fn documented_usage_is_read_by_billing_category() {
        // The reference example: its split accounts for none of the writes, so they are 5-minute writes.
        let body = include_str!("../../../../tests/fixtures/anthropic/message_cache_usage.json");
        let (out, usage) = translate(body.as_bytes(), 0).unwrap();
        let usage = usage.unwrap();
        assert_eq!(
            usage,
            TokenUsage {
                input: 2095,
                cache_read: 2051,
                cache_write_5m: 2051,
                cache_write_1h: 0,
                output: 503,
                reasoning: 0,
            }
        );
        // The client gets OpenAI's shape: every input token is a prompt token, reads are `cached_tokens`.
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 6197, "completion_tokens": 503, "total_tokens": 6700,
                   "prompt_tokens_details": {"cached_tokens": 2051}})
        );

        // The prompt caching guide's mix of lifetimes.
        let body = include_str!("../../../../tests/fixtures/anthropic/message_cache_1h_usage.json");
        let (_, usage) = translate(body.as_bytes(), 0).unwrap();
        assert_eq!(
            usage.unwrap(),
            TokenUsage {
                input: 2048,
                cache_read: 1800,
                cache_write_5m: 148,
                cache_write_1h: 100,
                output: 503,
                reasoning: 0,
            }
        );
    }

    #[test]
    fn cache_writes_without_a_split_are_five_minute_writes() {
        let (_, usage) = run(json!({"id": "m", "content": [], "usage": {
            "input_tokens": 100, "output_tokens": 40, "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 24}}));
        let usage = usage.unwrap();
        assert_eq!((usage.cache_write_5m, usage.cache_write_1h), (24, 0));
        // Nulls, as the API sends for counts that do not apply, are zeros.
        let (_, usage) = run(json!({"id": "m", "content": [], "usage": {
            "input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": null,
            "cache_creation_input_tokens": null, "cache_creation": null}}));
        assert_eq!(usage, Some(TokenUsage::new(5, 1)));
        // Counts past `u64::MAX` saturate.
        let (out, usage) = run(json!({"id": "m", "content": [], "usage": {
            "input_tokens": u64::MAX, "output_tokens": u64::MAX, "cache_read_input_tokens": u64::MAX}}));
        assert_eq!(usage.unwrap().total(), u64::MAX);
        assert_eq!(out["usage"]["total_tokens"], u64::MAX);
    }

    #[test]
    fn malformed_bodies_are_protocol_errors() {
        assert!(matches!(translate(b"not json", 0), Err(ProviderError::Protocol { .. })));
        assert!(matches!(
            translate(b"{\"content\": []}", 0),
            Err(ProviderError::Protocol { .. })
        ));
    }
}
