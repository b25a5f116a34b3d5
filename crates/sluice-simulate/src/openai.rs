//! OpenAI's face: `POST /v1/chat/completions` (also `/chat/completions`) and `GET /v1/models`.
//!
//! - Also Azure OpenAI's deployment URL, `POST /openai/deployments/{deployment}/chat/completions`.
//! - Auth: `Authorization: Bearer <key>` (or Azure's `api-key` header), else 401 `missing_api_key`; the key
//!   is the simulator's rate-limit identity.
//! - Checks what OpenAI checks beyond the JSON shape: `messages` not empty; every `tool` message answers a
//!   `tool_call_id` of the assistant message that precedes its run of tool messages; every tool call of an
//!   assistant message is answered before the conversation goes on. A refusal is a 400 in OpenAI's error
//!   shape, counted in the simulator's `invalid_requests`.
//! - Answers: `chat.completion` or `chat.completion.chunk`s ending with `data: [DONE]`, with
//!   `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; past a limit, 429 with `retry-after`,
//!   `retry-after-ms` and the limit headers; a drawn error is a 500 `server_error`. The usage has
//!   `prompt_tokens_details.cached_tokens` when the prompt repeats an earlier one past 1024 tokens
//!   (automatic caching, [`crate::bill`]) and `completion_tokens_details.reasoning_tokens` for o-series
//!   models.

use std::sync::Arc;

use crate::{SimRejection, SimRequest, Simulator};
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sluice_api::{ChatCompletionRequest, ErrorBody, ModelList, Role};

use crate::{add_headers, before_answer, json_response, paced_sse, sse_event, whole_seconds};

/// The routes of OpenAI's face.
pub(crate) fn routes() -> Router<Arc<Simulator>> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(chat_completions),
        )
        .route("/v1/models", get(models))
}

async fn models() -> Response {
    axum::Json(ModelList::from_names(["sluice-sim"], 0)).into_response()
}

/// An error in OpenAI's shape.
fn error(
    status: StatusCode,
    kind: &str,
    message: impl Into<String>,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = ErrorBody::new(kind, message, param.map(str::to_owned), code.map(str::to_owned));
    let mut response = (status, body.to_bytes()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A 400 about the request, counted as a validation refusal.
fn invalid(sim: &Simulator, message: impl Into<String>, param: Option<&str>) -> Response {
    sim.record_invalid();
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message, param, None)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

async fn chat_completions(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(key) = bearer(&headers).or_else(|| crate::header_str(&headers, "api-key").filter(|k| !k.is_empty()))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "You didn't provide an API key. You need to provide your API key in an Authorization header using \
             Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
            Some("missing_api_key"),
        );
    };
    let body = match body {
        Ok(body) if !body.is_empty() => body,
        Ok(_) => return invalid(&sim, "The request body is empty; send a JSON object.", None),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!(
                    "The request body is larger than the limit of {} bytes.",
                    crate::MAX_BODY_BYTES
                ),
                None,
                Some("request_too_large"),
            );
        }
        Err(rejection) => {
            return invalid(
                &sim,
                format!("Could not read the request body: {}", rejection.body_text()),
                None,
            );
        }
    };
    let request: ChatCompletionRequest = match sluice_api::parse_json(&body) {
        Ok(request) => request,
        Err(e) => return invalid(&sim, e.to_string(), e.param()),
    };
    if let Err((message, param)) = validate(&request) {
        return invalid(&sim, message, Some(&param));
    }
    before_answer(&sim).await;
    let answer = match sim.admit_request(key, &SimRequest::from_openai(&request)) {
        Ok(answer) => answer,
        Err(SimRejection::RateLimited {
            limit,
            retry_after,
            headers,
        }) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                limit,
                format!(
                    "Rate limit reached for {limit} on this key (simulated). Please try again in {}ms.",
                    retry_after.as_millis()
                ),
                None,
                Some("rate_limit_exceeded"),
            );
            let out = response.headers_mut();
            out.insert("retry-after-ms", HeaderValue::from(retry_after.as_millis() as u64));
            out.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(retry_after)));
            add_headers(out, headers.iter().map(|(n, v)| (*n, v.clone())));
            return response;
        }
        Err(SimRejection::ServerError) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The simulated vendor drew an error.",
                None,
                None,
            );
        }
    };
    let mut response = if request.is_stream() {
        let events = answer
            .stream_chunks(&request, request.wants_stream_usage())
            .iter()
            .map(|(chunk, tokens)| {
                let frame = sse_event(None, &serde_json::to_vec(chunk).unwrap_or_default(), "\n\n");
                (frame, *tokens)
            })
            .collect();
        paced_sse(
            &sim,
            &answer,
            events,
            b"data: {\"choices\": [tru\n\n",
            Some(b"data: [DONE]\n\n"),
        )
    } else {
        match serde_json::to_value(answer.completion(&request)) {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(_) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The simulated vendor could not render its answer.",
                None,
                None,
            ),
        }
    };
    add_headers(
        response.headers_mut(),
        answer.headers.iter().map(|(n, v)| (*n, v.clone())),
    );
    response
}

/// What OpenAI checks of a conversation beyond its JSON shape: a message of the problem and the `param`
/// it is about.
fn validate(request: &ChatCompletionRequest) -> Result<(), (String, String)> {
    let messages = &request.messages;
    if messages.is_empty() {
        return Err(("[] is too short - 'messages'".to_owned(), "messages".to_owned()));
    }
    // The ids of the tool calls still waiting for their `tool` messages.
    let mut open: Option<(usize, Vec<&str>)> = None;
    for (i, message) in messages.iter().enumerate() {
        if message.role == Role::Tool {
            let Some((_, ids)) = open.as_mut() else {
                return Err((
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message \
                     with 'tool_calls'."
                        .to_owned(),
                    format!("messages.[{i}].role"),
                ));
            };
            let id = message.tool_call_id.as_deref().unwrap_or_default();
            match ids.iter().position(|open| *open == id) {
                Some(at) => {
                    ids.remove(at);
                }
                None => {
                    return Err((
                        format!(
                            "Invalid parameter: 'tool_call_id' of '{id}' not found in 'tool_calls' of previous message."
                        ),
                        format!("messages.[{i}].tool_call_id"),
                    ));
                }
            }
            continue;
        }
        if let Some((at, ids)) = open.take()
            && !ids.is_empty()
        {
            return Err(unanswered(at, &ids));
        }
        if message.role == Role::Assistant
            && let Some(calls) = message.tool_calls.as_ref().filter(|c| !c.is_empty())
        {
            open = Some((i, calls.iter().map(|c| c.id.as_str()).collect()));
        }
    }
    match open {
        Some((at, ids)) if !ids.is_empty() => Err(unanswered(at, &ids)),
        _ => Ok(()),
    }
}

fn unanswered(at: usize, ids: &[&str]) -> (String, String) {
    (
        format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each \
             'tool_call_id'. The following tool_call_ids did not have response messages: {}",
            ids.join(", ")
        ),
        format!("messages.[{at}].role"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(messages: serde_json::Value) -> Result<(), (String, String)> {
        validate(&serde_json::from_value(json!({"model": "m", "messages": messages})).unwrap())
    }

    #[test]
    fn tool_messages_must_answer_the_preceding_calls() {
        let call = json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        assert_eq!(
            check(json!([
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
                {"role": "user", "content": "thanks"}
            ])),
            Ok(())
        );
        let (_, param) =
            check(json!([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "ok"}]))
                .unwrap_err();
        assert_eq!(param, "messages.[1].role");
        let (message, param) = check(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_2", "content": "ok"}
        ]))
        .unwrap_err();
        assert!(message.contains("'call_2' not found"), "{message}");
        assert_eq!(param, "messages.[2].tool_call_id");
        let (message, _) = check(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "user", "content": "well?"}
        ]))
        .unwrap_err();
        assert!(message.contains("did not have response messages: call_1"), "{message}");
        assert!(check(json!([])).is_err());
    }
}
