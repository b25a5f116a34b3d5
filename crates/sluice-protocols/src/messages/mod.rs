//! Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`, `GET /v1/models`),
//! served over chat completions for upstreams that are not Anthropic.
//!
//! (To an Anthropic upstream the body goes byte for byte instead: see `sluice_providers`'s messages
//! pass-through. This module is for every other upstream.)
//!
//! - [`parse_request`] / [`parse_count_tokens`]: the request body -> a [`ChatCompletionRequest`].
//! - [`complete`]: a `chat.completion` body -> an Anthropic `message`.
//! - [`MessagesStream`]: `chat.completion.chunk`s -> Anthropic's stream events.
//! - [`error_body`], [`error_event`]: errors in Anthropic's shape, with the `type` Anthropic uses for each
//!   status; [`count_tokens_body`]; [`ModelAliases`] and [`model_list`] for model names.
//!
//! Reasoning text some chat completions servers send (`reasoning_content`) is not turned into `thinking`
//! blocks: a thinking block carries a signature only Anthropic can issue, and a client sends it back with
//! the next request, where an Anthropic upstream would refuse a made-up one.

mod models;
mod request;
mod response;
mod rough;
mod stream;

use bytes::Bytes;
use serde::Serialize;
use sluice_api::{ChatCompletionRequest, TokenUsage};

pub use models::{ModelAliases, model_list};
pub use response::complete;
pub use stream::MessagesStream;

use crate::{FailureKind, ProtocolError};

/// Parses a `POST /v1/messages` body (strictly: errors name the field's path) and translates it. What chat
/// completions cannot express is refused with an error naming the field; render it with
/// [`ProtocolError::to_anthropic`]. A streaming request asks for the usage chunk
/// (`stream_options.include_usage`), which the final `message_delta` reports.
pub fn parse_request(body: &[u8]) -> Result<ChatCompletionRequest, ProtocolError> {
    request::translate(body, request::Endpoint::Messages)
}

/// A Messages request read for a model that may be served byte for byte by an Anthropic upstream.
#[derive(Debug)]
pub struct PassthroughReading {
    /// The chat request to count, admit and reserve by: the translation, or, when the body asks for what
    /// chat completions cannot express, a rough reading of every text it carries (one user message, the
    /// model, `max_tokens` and `stream` kept).
    pub chat: ChatCompletionRequest,
    /// Why the body cannot be translated for an upstream that is not Anthropic, when it cannot: such an
    /// upstream must refuse it with this error.
    pub untranslatable: Option<ProtocolError>,
}

/// Reads a `POST /v1/messages` body (or, with `count_tokens`, a `/v1/messages/count_tokens` one) whose
/// model may be served by an Anthropic upstream, which takes everything Anthropic takes (server tools,
/// documents, beta fields...): the strict translation when it succeeds; when it refuses the body, a rough
/// reading to count by, and that refusal. A body even the rough reading refuses (not JSON, no `model`, no
/// `max_tokens` for a message) is an error: the strict reading's.
pub fn read_for_passthrough(body: &[u8], count_tokens: bool) -> Result<PassthroughReading, ProtocolError> {
    let endpoint = if count_tokens {
        request::Endpoint::CountTokens
    } else {
        request::Endpoint::Messages
    };
    match request::translate(body, endpoint) {
        Ok(chat) => Ok(PassthroughReading {
            chat,
            untranslatable: None,
        }),
        // Anthropic judges the body itself: what the strict reading refuses (a field this crate does not
        // know, a block kind, a server tool) may be what the client means Anthropic to serve.
        Err(refusal) => match rough::read(body, endpoint) {
            Ok(chat) => Ok(PassthroughReading {
                chat,
                untranslatable: Some(refusal),
            }),
            Err(_) => Err(refusal),
        },
    }
}

/// Parses a `POST /v1/messages/count_tokens` body (no `max_tokens`, no stream) into the chat request whose
/// prompt is to be counted, for upstreams that cannot count it themselves.
pub fn parse_count_tokens(body: &[u8]) -> Result<ChatCompletionRequest, ProtocolError> {
    request::translate(body, request::Endpoint::CountTokens)
}

/// The body of a `count_tokens` answer: `{"input_tokens": N}`.
pub fn count_tokens_body(input_tokens: u64) -> Bytes {
    Bytes::from(format!("{{\"input_tokens\":{input_tokens}}}"))
}

/// The `error.type` Anthropic uses for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

fn error_json(kind: &'static str, message: &str) -> Bytes {
    let envelope = ErrorEnvelope {
        kind: "error",
        error: ErrorObject { kind, message },
    };
    // Serialising two strings cannot fail; should it ever, a fixed body stands in.
    serde_json::to_vec(&envelope).map(Bytes::from).unwrap_or_else(|_| {
        Bytes::from_static(br#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#)
    })
}

/// An error body in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, the type chosen
/// by `status` as Anthropic does (400 `invalid_request_error`, 401 `authentication_error`, 403
/// `permission_error`, 404 `not_found_error`, 413 `request_too_large`, 429 `rate_limit_error`, 500
/// `api_error`, 529 `overloaded_error`).
pub fn error_body(status: u16, message: &str) -> Bytes {
    error_json(error_type(status), message)
}

/// The `error` event that ends a broken Anthropic stream (`event: error`, then the error body), for the
/// pass-through and the translated streams alike.
pub fn error_event(kind: FailureKind, message: &str) -> Bytes {
    let body = error_json(failure_type(kind), message);
    let mut event = Vec::with_capacity(body.len() + 24);
    event.extend_from_slice(b"event: error\ndata: ");
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

fn failure_type(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::RateLimited => "rate_limit_error",
        FailureKind::Overloaded => "overloaded_error",
        FailureKind::Upstream => "api_error",
    }
}

/// Anthropic's `stop_reason` for a chat `finish_reason`. A stop sequence cannot be told apart from a natural
/// end in chat completions: both are `end_turn`.
fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's `usage`: `input_tokens` counts only input neither read from nor written to the cache.
#[derive(Debug, Serialize)]
struct AnthropicUsage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

impl From<&TokenUsage> for AnthropicUsage {
    fn from(usage: &TokenUsage) -> Self {
        Self {
            input_tokens: usage.input,
            output_tokens: usage.output,
            cache_creation_input_tokens: usage.cache_write(),
            cache_read_input_tokens: usage.cache_read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_follow_anthropic_statuses() {
        // The table of Anthropic's errors page.
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (529, "overloaded_error"),
        ] {
            let body: serde_json::Value = serde_json::from_slice(&error_body(status, "why \"quoted\"")).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"type": "error", "error": {"type": kind, "message": "why \"quoted\""}})
            );
        }
        assert_eq!(error_type(422), "invalid_request_error");
        assert_eq!(error_type(502), "api_error");
    }

    #[test]
    fn error_events_end_streams_in_anthropic_shape() {
        let event = error_event(FailureKind::Overloaded, "Overloaded");
        assert_eq!(
            &event[..],
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
        );
        let event = String::from_utf8(error_event(FailureKind::Upstream, "cut").to_vec()).unwrap();
        assert!(event.contains("\"api_error\""), "{event}");
        let event = String::from_utf8(error_event(FailureKind::RateLimited, "slow").to_vec()).unwrap();
        assert!(event.contains("\"rate_limit_error\""), "{event}");
        assert_eq!(&count_tokens_body(2095)[..], b"{\"input_tokens\":2095}");
    }
}
