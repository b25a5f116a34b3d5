//! Gemini's `GenerateContentResponse`, and its translation to an OpenAI `chat.completion`.
//!
//! - The text parts of `candidates[i].content` are joined into `message.content`; thought summaries
//!   (`"thought": true`) are left out, as OpenAI's format has no place for them.
//! - `functionCall` parts become `tool_calls` with `arguments` the JSON text of `args`, and ids made by
//!   [`super::encode_tool_call_id`] (carrying Gemini's id and thought signature when there are).
//! - `finishReason` maps to `finish_reason` ([`finish_reason`]); `usageMetadata` to `usage` ([`usage`]).
//! - A prompt blocked by `promptFeedback.blockReason` has no candidates: it answers one choice with empty
//!   content and `finish_reason: "content_filter"`, as OpenAI does when its own filter stops an answer.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use sluice_api::{ChatCompletionResponse, Choice, FunctionCall, ResponseMessage, Role, TokenUsage, ToolCall};

use crate::ProviderError;

/// What the translation needs besides the body.
#[derive(Debug, Clone)]
pub(crate) struct Context<'a> {
    /// The vendor model id called, reported when Gemini gives no `modelVersion`.
    pub(crate) model: &'a str,
    /// Unix seconds of the answer.
    pub(crate) created: u64,
    /// A random token for the completion id and tool call ids.
    pub(crate) seed: String,
}

// === wire types ===

/// `GenerateContentResponse`; also each event of a stream. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GeminiResponse<'a> {
    #[serde(default, borrow)]
    pub(crate) candidates: Vec<GeminiCandidate<'a>>,
    #[serde(default, borrow)]
    pub(crate) prompt_feedback: Option<GeminiPromptFeedback<'a>>,
    #[serde(default)]
    pub(crate) usage_metadata: Option<GeminiUsage>,
    #[serde(default, borrow)]
    pub(crate) model_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) response_id: Option<Cow<'a, str>>,
    /// An error reported inside a stream, in Google's error shape.
    #[serde(default)]
    pub(crate) error: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GeminiCandidate<'a> {
    #[serde(default, borrow)]
    pub(crate) content: Option<GeminiContent<'a>>,
    #[serde(default, borrow)]
    pub(crate) finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) index: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GeminiContent<'a> {
    #[serde(default, borrow)]
    pub(crate) parts: Vec<GeminiPart<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GeminiPart<'a> {
    #[serde(default, borrow)]
    pub(crate) text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) thought: Option<bool>,
    #[serde(default, borrow)]
    pub(crate) thought_signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) function_call: Option<GeminiFunctionCall<'a>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GeminiFunctionCall<'a> {
    #[serde(borrow)]
    pub(crate) name: Cow<'a, str>,
    #[serde(default)]
    pub(crate) args: Option<Value>,
    #[serde(default, borrow)]
    pub(crate) id: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GeminiPromptFeedback<'a> {
    #[serde(default, borrow)]
    pub(crate) block_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GeminiUsage {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    tool_use_prompt_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    total_token_count: Option<u64>,
}

impl GeminiUsage {
    /// Whether this carries counts at all: streams send `usageMetadata` without counts on early events.
    pub(crate) fn has_counts(&self) -> bool {
        self.prompt_token_count.is_some() || self.candidates_token_count.is_some() || self.total_token_count.is_some()
    }
}

impl GeminiPart<'_> {
    /// The part's answer text: thought summaries and empty texts (which only carry a signature) are none.
    pub(crate) fn answer_text(&self) -> Option<&str> {
        if self.thought == Some(true) {
            return None;
        }
        self.text.as_deref().filter(|t| !t.is_empty())
    }
}

// === translation ===

/// OpenAI's `finish_reason` for Gemini's `finishReason`. `STOP` of a candidate that called functions is
/// `tool_calls`, as OpenAI reports it.
pub(crate) fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "STOP" if called_tools => "tool_calls",
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS, ...
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

/// Gemini's `usageMetadata` by billing category. `promptTokenCount` includes the cached tokens
/// (`cachedContentTokenCount`, billed as cache reads); tool-use prompt tokens (search results and the like)
/// are billed as input; thinking tokens (`thoughtsTokenCount`) are billed as output, so the output is the
/// candidates' tokens and the thoughts, and the thoughts are its reasoning.
pub(crate) fn usage(meta: &GeminiUsage) -> TokenUsage {
    let prompt = meta.prompt_token_count.unwrap_or(0);
    // Clamped, never wrapped: a cached count above the prompt's is the vendor's inconsistency.
    let cached = meta.cached_content_token_count.unwrap_or(0).min(prompt);
    let thoughts = meta.thoughts_token_count.unwrap_or(0);
    TokenUsage {
        // Saturating: the counts are the vendor's, and a sum past `u64::MAX` must not wrap (or panic).
        input: (prompt - cached).saturating_add(meta.tool_use_prompt_token_count.unwrap_or(0)),
        cache_read: cached,
        cache_write_5m: 0,
        cache_write_1h: 0,
        output: meta.candidates_token_count.unwrap_or(0).saturating_add(thoughts),
        reasoning: thoughts,
    }
}

/// The OpenAI tool call of a `functionCall` part; `n` numbers the calls of the answer.
pub(crate) fn tool_call(part_signature: Option<&str>, call: &GeminiFunctionCall<'_>, seed: &str, n: usize) -> ToolCall {
    let arguments = match &call.args {
        Some(args) => args.to_string(),
        None => "{}".to_owned(),
    };
    ToolCall {
        id: super::encode_tool_call_id(call.id.as_deref(), seed, n, part_signature),
        kind: "function".to_owned(),
        function: FunctionCall {
            name: call.name.clone().into_owned(),
            arguments,
        },
    }
}

/// The completion id: Gemini's `responseId` when it gives one.
pub(crate) fn completion_id(response_id: Option<&str>, seed: &str) -> String {
    format!("chatcmpl-{}", response_id.filter(|r| !r.is_empty()).unwrap_or(seed))
}

/// Translates a complete `GenerateContentResponse` body into an OpenAI completion (its usage in OpenAI's
/// shape) and the usage by billing category.
pub(crate) fn translate(
    body: &[u8],
    context: &Context<'_>,
) -> Result<(ChatCompletionResponse, Option<TokenUsage>), ProviderError> {
    let response: GeminiResponse<'_> = serde_json::from_slice(body).map_err(|e| ProviderError::Protocol {
        detail: format!("the response body is not a GenerateContentResponse: {e}"),
    })?;
    let mut next_call = 0;
    let mut choices = Vec::with_capacity(response.candidates.len().max(1));
    for (position, candidate) in response.candidates.iter().enumerate() {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for part in candidate.content.iter().flat_map(|c| &c.parts) {
            if let Some(call) = &part.function_call {
                tool_calls.push(tool_call(
                    part.thought_signature.as_deref(),
                    call,
                    &context.seed,
                    next_call,
                ));
                next_call += 1;
            } else if let Some(t) = part.answer_text() {
                text.push_str(t);
            }
        }
        let called_tools = !tool_calls.is_empty();
        let finish = candidate
            .finish_reason
            .as_deref()
            .map_or(if called_tools { "tool_calls" } else { "stop" }, |r| {
                finish_reason(r, called_tools)
            });
        choices.push(Choice {
            index: candidate.index.unwrap_or(position as u32),
            message: ResponseMessage {
                role: Role::Assistant,
                // OpenAI sends null content beside tool calls, and a string otherwise.
                content: if text.is_empty() && called_tools {
                    None
                } else {
                    Some(text)
                },
                tool_calls: called_tools.then_some(tool_calls),
                refusal: None,
            },
            finish_reason: Some(finish.to_owned()),
            logprobs: None,
        });
    }
    if choices.is_empty() {
        let blocked = response
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref());
        if blocked.is_none() {
            return Err(ProviderError::Protocol {
                detail: "the response has neither candidates nor a block reason".to_owned(),
            });
        }
        choices.push(blocked_choice());
    }
    let tokens = response.usage_metadata.as_ref().map(usage);
    let completion = ChatCompletionResponse {
        id: completion_id(response.response_id.as_deref(), &context.seed),
        object: "chat.completion".to_owned(),
        created: context.created,
        model: response.model_version.as_deref().unwrap_or(context.model).to_owned(),
        choices,
        usage: tokens.as_ref().map(TokenUsage::to_openai),
        extra: Default::default(),
    };
    Ok((completion, tokens))
}

/// The one choice of an answer whose prompt was blocked.
fn blocked_choice() -> Choice {
    Choice {
        index: 0,
        message: ResponseMessage {
            role: Role::Assistant,
            content: Some(String::new()),
            tool_calls: None,
            refusal: None,
        },
        finish_reason: Some("content_filter".to_owned()),
        logprobs: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn context() -> Context<'static> {
        Context {
            model: "gemini-2.5-flash",
            created: 1_700_000_000,
            seed: "seed".to_owned(),
        }
    }

    fn translate_json(body: Value) -> ChatCompletionResponse {
        let (completion, tokens) = translate(body.to_string().as_bytes(), &context()).unwrap();
        assert_eq!(completion.usage, tokens.as_ref().map(TokenUsage::to_openai));
        completion
    }

    #[test]
    fn text_answer_with_usage() {
        // Shape of the generateContent response in Google's API reference.
        let completion = translate_json(json!({
            "candidates": [{
                "content": {"parts": [{"text": "Hello"}, {"text": ", world"}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
                "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}]
            }],
            "usageMetadata": {
                "promptTokenCount": 12, "candidatesTokenCount": 3, "totalTokenCount": 40,
                "thoughtsTokenCount": 20, "cachedContentTokenCount": 8, "toolUsePromptTokenCount": 5,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]
            },
            "modelVersion": "gemini-2.5-flash-001",
            "responseId": "abc123"
        }));
        assert_eq!(
            serde_json::to_value(&completion).unwrap(),
            json!({
                "id": "chatcmpl-abc123",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "gemini-2.5-flash-001",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello, world"},
                    "finish_reason": "stop",
                    "logprobs": null
                }],
                "usage": {
                    "prompt_tokens": 17, "completion_tokens": 23, "total_tokens": 40,
                    "prompt_tokens_details": {"cached_tokens": 8},
                    "completion_tokens_details": {"reasoning_tokens": 20}
                }
            })
        );
    }

    #[test]
    fn documented_usage_is_read_by_billing_category() {
        let body = include_str!("../../../../tests/fixtures/gemini/usage_thinking_cached_response.json");
        let (completion, usage) = translate(body.as_bytes(), &context()).unwrap();
        let usage = usage.unwrap();
        // 4312 prompt tokens of which 4096 cached; 58 answer and 897 thought tokens, both billed as output.
        assert_eq!(
            usage,
            TokenUsage {
                input: 216,
                cache_read: 4096,
                cache_write_5m: 0,
                cache_write_1h: 0,
                output: 955,
                reasoning: 897,
            }
        );
        assert_eq!(usage.total(), 5267, "the vendor's totalTokenCount");
        let openai = serde_json::to_value(completion.usage.unwrap()).unwrap();
        assert_eq!(
            openai,
            json!({"prompt_tokens": 4312, "completion_tokens": 955, "total_tokens": 5267,
                   "prompt_tokens_details": {"cached_tokens": 4096},
                   "completion_tokens_details": {"reasoning_tokens": 897}})
        );

        // Google Search results are tool-use prompt tokens, billed as input.
        let body = include_str!("../../../../tests/fixtures/gemini/usage_grounding_response.json");
        let (_, usage) = translate(body.as_bytes(), &context()).unwrap();
        let usage = usage.unwrap();
        assert_eq!(
            usage,
            TokenUsage {
                input: 157,
                cache_read: 0,
                cache_write_5m: 0,
                cache_write_1h: 0,
                output: 144,
                reasoning: 125,
            }
        );
        assert_eq!(usage.total(), 301, "the vendor's totalTokenCount");
    }

    #[test]
    fn inconsistent_and_huge_counts_are_clamped_and_saturate() {
        let meta: GeminiUsage = serde_json::from_value(json!({
            "promptTokenCount": 5, "cachedContentTokenCount": 9,
            "candidatesTokenCount": u64::MAX, "thoughtsTokenCount": 3, "toolUsePromptTokenCount": u64::MAX
        }))
        .unwrap();
        let usage = usage(&meta);
        assert_eq!((usage.input, usage.cache_read), (u64::MAX, 5));
        assert_eq!((usage.output, usage.reasoning), (u64::MAX, 3));
        assert_eq!(usage.total(), u64::MAX);
    }

    #[test]
    fn function_calls_become_tool_calls() {
        let completion = translate_json(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "Checking both.", "thought": true},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "Q2lRQg=="},
                    {"functionCall": {"name": "get_time", "args": {}, "id": "fc-7"}}
                ]},
                "finishReason": "STOP"
            }]
        }));
        let choice = &completion.choices[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(choice.message.content, None, "thoughts are not content");
        let calls = choice.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "call_seed_0__ts_Q2lRQg");
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
        assert_eq!(calls[1].id, "gcall_fc-7");
        assert_eq!(calls[1].function.arguments, "{}");
        assert_eq!(completion.id, "chatcmpl-seed");
        assert_eq!(completion.model, "gemini-2.5-flash");
        assert_eq!(completion.usage, None);
    }

    #[test]
    fn finish_reasons_map_to_openai() {
        let cases = [
            ("STOP", false, "stop"),
            ("STOP", true, "tool_calls"),
            ("MAX_TOKENS", false, "length"),
            ("SAFETY", false, "content_filter"),
            ("RECITATION", false, "content_filter"),
            ("BLOCKLIST", false, "content_filter"),
            ("PROHIBITED_CONTENT", false, "content_filter"),
            ("SPII", false, "content_filter"),
            ("IMAGE_SAFETY", false, "content_filter"),
            ("MALFORMED_FUNCTION_CALL", false, "stop"),
            ("OTHER", false, "stop"),
            ("FINISH_REASON_UNSPECIFIED", false, "stop"),
            ("SOMETHING_NEW", false, "stop"),
        ];
        for (gemini, called, openai) in cases {
            assert_eq!(finish_reason(gemini, called), openai, "{gemini}");
        }
        let truncated = translate_json(json!({"candidates": [{
            "content": {"parts": [{"text": "Once upon"}]}, "finishReason": "MAX_TOKENS"}]}));
        assert_eq!(truncated.choices[0].finish_reason.as_deref(), Some("length"));
        let filtered = translate_json(json!({"candidates": [{"finishReason": "SAFETY", "index": 0}]}));
        assert_eq!(filtered.choices[0].finish_reason.as_deref(), Some("content_filter"));
        assert_eq!(filtered.choices[0].message.content.as_deref(), Some(""));
    }

    #[test]
    fn several_candidates_become_several_choices() {
        let completion = translate_json(json!({"candidates": [
            {"content": {"parts": [{"text": "A"}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"text": "B"}]}, "finishReason": "STOP", "index": 1}
        ]}));
        let texts: Vec<_> = completion
            .choices
            .iter()
            .map(|c| (c.index, c.message.content.clone().unwrap()))
            .collect();
        assert_eq!(texts, [(0, "A".to_owned()), (1, "B".to_owned())]);
    }

    #[test]
    fn a_blocked_prompt_is_a_content_filter_completion() {
        let completion = translate_json(json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}
        }));
        assert_eq!(completion.choices.len(), 1);
        assert_eq!(completion.choices[0].finish_reason.as_deref(), Some("content_filter"));
        assert_eq!(completion.choices[0].message.content.as_deref(), Some(""));
        assert_eq!(completion.usage, Some(sluice_api::Usage::new(7, 0)));
    }

    #[test]
    fn malformed_bodies_are_protocol_errors() {
        assert!(matches!(
            translate(b"<html>", &context()),
            Err(ProviderError::Protocol { .. })
        ));
        assert!(matches!(
            translate(b"{}", &context()),
            Err(ProviderError::Protocol { .. })
        ));
    }
}
