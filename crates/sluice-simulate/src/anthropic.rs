//! Anthropic's face: `POST /v1/messages`.
//!
//! Shapes from Anthropic's API reference (platform.claude.com/docs/en/api/messages, .../api/errors,
//! .../api/rate-limits) and its streaming and tool-use guides, cross-checked against the adapter's wire
//! types in `sluice_providers::anthropic`.
//!
//! - Headers: `x-api-key` required, else 401 `authentication_error`; `anthropic-version` required (and one
//!   of the published versions), else 400.
//! - Validation, as the real API refuses with a 400 `invalid_request_error`: unknown top-level fields;
//!   `model` and `max_tokens` (at least 1) required; `temperature` and `top_p` within 0..=1; roles `user`
//!   and `assistant` only (a `system` role inside `messages` gets Anthropic's own message), the first turn
//!   the user's, turns alternating; content non-empty, blocks of the known types (`text`, `image`,
//!   `document`, `tool_use`, `tool_result`) with their required fields, images as base64 of a supported
//!   media type or a URL; `tool_result` blocks only in user turns, before any other block, each answering
//!   a `tool_use` id of the previous assistant turn, which must all be answered; tools named by Anthropic's
//!   pattern, unique, with an object `input_schema`; `tool_choice` of a known type. This face is stricter
//!   than today's API in one place: consecutive turns of one role are refused rather than merged, so a
//!   translation that fails to merge them is caught.
//! - Answers: a `Message`, or the SSE stream with Anthropic's event names (`message_start`,
//!   `content_block_start`, `ping`, `content_block_delta` with `text_delta` or `input_json_delta`,
//!   `content_block_stop`, `message_delta` with the stop reason and cumulative usage, `message_stop`);
//!   `request-id` and `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` headers, the resets
//!   as RFC 3339 timestamps. `usage` splits the prompt as `cache_control` breakpoints (on system and
//!   message blocks, or top-level; at most four; `ttl` `5m` or `1h`) make it ([`crate::bill`]): cache
//!   writes in all and by lifetime (`cache_creation`), cache reads, uncached `input_tokens`.
//! - Refusals: 429 `rate_limit_error` with `retry-after` and the limit headers; a drawn error is a 529
//!   `overloaded_error`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::{SimAnswer, SimLimits, SimRejection, SimReply, Simulator};
use crate::{add_headers, before_answer, header_str, json_response, paced_sse, sse_event, whole_seconds};

mod validate;

pub use validate::{thinking_signature, validate};

/// The `anthropic-version` values Anthropic publishes (`2026-10-21` is the one the Anthropic SDK of
/// `tests/sdk/requirements.txt` sends).
const VERSIONS: [&str; 3] = ["2023-06-01", "2023-01-01", "2026-10-21"];

/// The routes of Anthropic's face.
pub(crate) fn routes() -> Router<Arc<Simulator>> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

// === Errors ===

fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("req_sim{:020}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// An error in Anthropic's shape: `{"type": "error", "error": {"type", "message"}, "request_id"}`.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let id = request_id();
    let body = json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": id});
    let mut response = json_response(status, &body);
    add_headers(response.headers_mut(), [("request-id", id)]);
    response
}

/// A 400 `invalid_request_error`, counted as a validation refusal.
fn invalid(sim: &Simulator, message: &str) -> Response {
    sim.record_invalid();
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

// === The handler ===

/// The checks every call makes before reading its body: the key, `anthropic-version`, a JSON body. The key
/// and the body, or the refusal.
fn checked_call<'h>(
    sim: &Simulator,
    headers: &'h HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(&'h str, Value), Box<Response>> {
    let Some(key) = header_str(headers, "x-api-key").filter(|k| !k.is_empty()) else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        )));
    };
    match header_str(headers, "anthropic-version") {
        None => return Err(Box::new(invalid(sim, "anthropic-version: header is required"))),
        Some(version) if !VERSIONS.contains(&version) => {
            return Err(Box::new(invalid(
                sim,
                &format!("anthropic-version: invalid version `{version}`"),
            )));
        }
        Some(_) => {}
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Box::new(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
            )));
        }
        Err(rejection) => return Err(Box::new(invalid(sim, &rejection.body_text()))),
    };
    serde_json::from_slice(&body).map(|value| (key, value)).map_err(|e| {
        Box::new(invalid(
            sim,
            &format!("There was an issue with the JSON body of your request: {e}"),
        ))
    })
}

/// `POST /v1/messages/count_tokens`: the prompt's size as the simulator counts it (what a message call
/// with the same body would bill as input). It takes the request of a message call without `max_tokens`
/// and `stream`, checked the same way; it is free and outside the rate limits, as Anthropic's is.
async fn count_tokens(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut value = match checked_call(&sim, &headers, body) {
        Ok((_, value)) => value,
        Err(response) => return *response,
    };
    let Some(object) = value.as_object_mut() else {
        return invalid(
            &sim,
            "Input should be a valid dictionary or object to extract fields from",
        );
    };
    if let Some(extra) = [
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "metadata",
    ]
    .into_iter()
    .find(|k| object.contains_key(*k))
    {
        return invalid(&sim, &format!("{extra}: Extra inputs are not permitted"));
    }
    object.insert("max_tokens".to_owned(), json!(u32::MAX));
    match validate(&value) {
        Ok((request, _)) => json_response(StatusCode::OK, &json!({"input_tokens": request.prompt_tokens()})),
        Err(message) => invalid(&sim, &message),
    }
}

async fn messages(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (key, value) = match checked_call(&sim, &headers, body) {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let (request, stream) = match validate(&value) {
        Ok(checked) => checked,
        Err(message) => return invalid(&sim, &message),
    };
    before_answer(&sim).await;
    let answer = match sim.admit_request(key, &request) {
        Ok(answer) => answer,
        Err(SimRejection::RateLimited { limit, retry_after, .. }) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                &format!(
                    "This request would exceed the rate limit for your organization of {limit} per minute \
                     (simulated). Please try again in {}ms.",
                    retry_after.as_millis()
                ),
            );
            let out = response.headers_mut();
            out.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(retry_after)));
            add_headers(out, limit_headers(sim.limits(key), SystemTime::now()));
            return response;
        }
        Err(SimRejection::ServerError) => {
            return error(
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "overloaded_error",
                "Overloaded",
            );
        }
    };
    let mut response = if stream {
        paced_sse(
            &sim,
            &answer,
            stream_events(&answer),
            b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", tru\n\n",
            None,
        )
    } else {
        json_response(StatusCode::OK, &message(&answer))
    };
    let out = response.headers_mut();
    add_headers(out, [("request-id", request_id())]);
    add_headers(out, limit_headers(answer.limits(), SystemTime::now()));
    response
}

// === Answers ===

fn message_id(answer: &SimAnswer) -> String {
    format!("msg_sim{:08}", answer.serial())
}

fn tool_use_id(answer: &SimAnswer) -> String {
    format!("toolu_sim{:08}", answer.serial())
}

/// Anthropic's `usage`: uncached input, cache writes (in all and by lifetime), cache reads, and `output`;
/// with the final output, the thinking tokens in it (`output_tokens_details.thinking_tokens`, as newer
/// models report them) when the model thought.
fn usage(answer: &SimAnswer, output: u64) -> Value {
    let mut value = start_usage(answer, output);
    if output == answer.output_tokens() && answer.reasoning_tokens() > 0 {
        value["output_tokens_details"] = json!({"thinking_tokens": answer.reasoning_tokens()});
    }
    value
}

fn start_usage(answer: &SimAnswer, output: u64) -> Value {
    let usage = answer.usage();
    json!({
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write(),
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        },
        "output_tokens": output,
    })
}

/// The text of the thinking block of an answer that thought (summarised, as Claude 4 models show it:
/// the whole reasoning is billed, a summary is shown), in pieces for a stream.
fn thinking_pieces(answer: &SimAnswer) -> Option<[String; 2]> {
    let tokens = answer.reasoning_tokens();
    (tokens > 0).then(|| {
        [
            format!("Weighing the question ({tokens} tokens of reasoning); "),
            "the answer follows.".to_owned(),
        ]
    })
}

/// The answer as a `Message`: a thinking block with its signature first when the request asked for
/// thinking.
pub fn message(answer: &SimAnswer) -> Value {
    let mut content = match answer.reply() {
        SimReply::Text(pieces) => json!([{"type": "text", "text": pieces.concat()}]),
        SimReply::ToolCall(call) => {
            json!([{"type": "tool_use", "id": tool_use_id(answer), "name": call.name, "input": call.arguments}])
        }
    };
    if let (Some(pieces), Some(blocks)) = (thinking_pieces(answer), content.as_array_mut()) {
        let thinking = pieces.concat();
        let signature = thinking_signature(&thinking);
        blocks.insert(
            0,
            json!({"type": "thinking", "thinking": thinking, "signature": signature}),
        );
    }
    json!({
        "id": message_id(answer),
        "type": "message",
        "role": "assistant",
        "model": answer.model(),
        "content": content,
        "stop_reason": answer.finish().anthropic(),
        "stop_sequence": null,
        "usage": usage(answer, answer.output_tokens()),
    })
}

/// The answer as the SSE events of a stream, each framed with its `event:` name, with the visible tokens
/// generated once it is sent.
pub fn stream_events(answer: &SimAnswer) -> Vec<(Bytes, u64)> {
    let all = answer.completion_tokens();
    let event = |name: &str, data: Value| sse_event(Some(name), data.to_string().as_bytes(), "\n\n");
    let mut events = Vec::with_capacity(answer.completion_tokens() as usize + 7);
    let start = json!({
        "id": message_id(answer),
        "type": "message",
        "role": "assistant",
        "model": answer.model(),
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
        "usage": start_usage(answer, answer.output_tokens().min(1)),
    });
    events.push((
        event("message_start", json!({"type": "message_start", "message": start})),
        0,
    ));
    let (block, deltas): (Value, Vec<Value>) = match answer.reply() {
        SimReply::Text(pieces) => (
            json!({"type": "text", "text": ""}),
            pieces
                .iter()
                .map(|p| json!({"type": "text_delta", "text": p}))
                .collect(),
        ),
        SimReply::ToolCall(call) => (
            json!({"type": "tool_use", "id": tool_use_id(answer), "name": call.name, "input": {}}),
            call.argument_pieces()
                .into_iter()
                .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                .collect(),
        ),
    };
    // A thinking block first, when the request asked for thinking: its text, then its signature in a
    // delta of its own, as Anthropic streams them.
    let mut index = 0;
    if let Some(pieces) = thinking_pieces(answer) {
        let signature = thinking_signature(&pieces.concat());
        let start = json!({"type": "thinking", "thinking": "", "signature": ""});
        events.push((
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": start}),
            ),
            0,
        ));
        for piece in pieces {
            let delta = json!({"type": "thinking_delta", "thinking": piece});
            events.push((
                event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": delta}),
                ),
                0,
            ));
        }
        let delta = json!({"type": "signature_delta", "signature": signature});
        events.push((
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": delta}),
            ),
            0,
        ));
        events.push((
            event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            0,
        ));
        index = 1;
    }
    events.push((
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ),
        0,
    ));
    for (i, delta) in deltas.into_iter().enumerate() {
        events.push((
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ),
            answer.tokens_through(i + 1),
        ));
    }
    events.push((
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ),
        all,
    ));
    // Anthropic pings right after the first block opens.
    events.insert(2, (event("ping", json!({"type": "ping"})), 0));
    events.push((
        event(
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": answer.finish().anthropic(), "stop_sequence": null},
                "usage": final_delta_usage(answer),
            }),
        ),
        all,
    ));
    events.push((event("message_stop", json!({"type": "message_stop"})), all));
    events
}

/// The usage of the last `message_delta`: the cumulative output, and the thinking tokens in it.
fn final_delta_usage(answer: &SimAnswer) -> Value {
    let mut usage = json!({"output_tokens": answer.output_tokens()});
    if answer.reasoning_tokens() > 0 {
        usage["output_tokens_details"] = json!({"thinking_tokens": answer.reasoning_tokens()});
    }
    usage
}

/// `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`, the resets as RFC 3339 timestamps of
/// when each limit is full again.
pub fn limit_headers(limits: SimLimits, now: SystemTime) -> Vec<(&'static str, String)> {
    let mut headers = Vec::with_capacity(6);
    let names = [
        (
            limits.requests,
            [
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
            ],
        ),
        (
            limits.tokens,
            [
                "anthropic-ratelimit-tokens-limit",
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset",
            ],
        ),
    ];
    for (state, [limit, remaining, reset]) in names {
        let Some(state) = state else { continue };
        headers.push((limit, state.limit.to_string()));
        headers.push((remaining, state.remaining.to_string()));
        headers.push((reset, rfc3339(now + state.reset)));
    }
    headers
}

/// `2025-08-21T12:40:59Z`, rounded up to the second so a client waiting for it is never early.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    let whole = UNIX_EPOCH + Duration::from_secs(secs);
    chrono::DateTime::<chrono::Utc>::from(whole).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let at = UNIX_EPOCH + Duration::from_secs(1_755_780_059);
        assert_eq!(rfc3339(at), "2025-08-21T12:40:59Z");
        assert_eq!(rfc3339(at + Duration::from_millis(1)), "2025-08-21T12:41:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_164_800)),
            "2024-02-29T00:00:00Z"
        );
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
