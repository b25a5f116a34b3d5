//! Gemini's face: `POST /v1beta/models/{model}:generateContent` and
//! `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`.
//!
//! Shapes from Google's Gemini API reference (ai.google.dev/api/generate-content), its function calling
//! and thought signature guides, and its troubleshooting page for errors, cross-checked against the
//! adapter's wire types in `sluice_providers::gemini`.
//!
//! - Auth: `x-goog-api-key` (or a `key` query parameter), else 403 `PERMISSION_DENIED`.
//! - Validation, as Gemini refuses with a 400 `INVALID_ARGUMENT`: unknown fields (at the top level, in
//!   contents, parts and `generationConfig`; camelCase and snake_case both accepted, as Google's JSON
//!   parser does); `contents` non-empty; roles `user` and `model` only (so `assistant` is refused); parts
//!   non-empty, each with exactly one data field; `inlineData` with a MIME type and base64 data; function
//!   calls only in model turns that follow a user turn; function responses only in user turns that follow
//!   a function call turn, one per call and named after a call; function names by Gemini's pattern;
//!   `maxOutputTokens` positive and `temperature` in 0..=2; on `gemini-3*` models, the first function call
//!   of a model turn must carry a thought signature (ours, or Google's documented placeholder).
//! - Answers: a `GenerateContentResponse` (`candidates` with `content`, `finishReason` and `index`,
//!   `usageMetadata`, `modelVersion`, `responseId`); with `alt=sse` one `data:` event per piece, each a
//!   whole `GenerateContentResponse`, the last with the `finishReason`, and no `[DONE]`; without it a JSON
//!   array of them. A function call is a `functionCall` part with a thought signature, finishing `STOP`.
//!   `usageMetadata` names `cachedContentTokenCount` when the prompt repeats an earlier one (implicit
//!   caching, [`crate::bill`]) and `thoughtsTokenCount` when the model thinks (its name contains
//!   `thinking`, or `generationConfig.thinkingConfig.thinkingBudget` is not 0).
//! - Refusals: 429 `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` detail (Gemini sends no rate-limit
//!   headers); a drawn error is a 503 `UNAVAILABLE`.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::{SimAnswer, SimRejection, SimReply, SimRequest, Simulator};
use crate::{before_answer, header_str, json_response, paced_sse, sse_event, whole_seconds};

mod validate;

pub use validate::validate;

/// The thought signature the simulator puts on its function calls.
pub const SIGNATURE: &str = "c2x1aWNlLXNpbXVsYXRvcg==";

/// The routes of Gemini's face.
pub(crate) fn routes() -> Router<Arc<Simulator>> {
    Router::new().route("/v1beta/models/{target}", post(generate))
}

// === Errors ===

/// An error in Google's shape: `{"error": {"code", "message", "status", "details"?}}`.
fn error(status: StatusCode, canonical: &str, message: &str, details: Option<Value>) -> Response {
    let mut error = json!({"code": status.as_u16(), "message": message, "status": canonical});
    if let (Some(details), Some(object)) = (details, error.as_object_mut()) {
        object.insert("details".to_owned(), details);
    }
    json_response(status, &json!({ "error": error }))
}

/// A 400 `INVALID_ARGUMENT`, counted as a validation refusal.
fn invalid(sim: &Simulator, message: &str) -> Response {
    sim.record_invalid();
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message, None)
}

// === The handler ===

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn generate(
    State(sim): State<Arc<Simulator>>,
    Path(target): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (model, streaming) = match target.rsplit_once(':') {
        Some((model, "generateContent")) => (model, false),
        Some((model, "streamGenerateContent")) => (model, true),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("models/{target} is not found for API version v1beta, or is not supported."),
                None,
            );
        }
    };
    let sse = query_param(query.as_deref(), "alt") == Some("sse");
    let key = header_str(&headers, "x-goog-api-key")
        .or_else(|| query_param(query.as_deref(), "key"))
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key \
             or other form of API consumer identity to call this API.",
            None,
        );
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return invalid(&sim, &rejection.body_text()),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return invalid(&sim, &format!("Invalid JSON payload received. {e}")),
    };
    let request = match validate(&value, model) {
        // Only an SSE stream is sent piece by piece; a stream without `alt=sse` is one JSON array.
        Ok(request) => SimRequest {
            stream: streaming && sse,
            ..request
        },
        Err(message) => return invalid(&sim, &message),
    };
    before_answer(&sim).await;
    let answer = match sim.admit_request(key, &request) {
        Ok(answer) => answer,
        Err(SimRejection::RateLimited { limit, retry_after, .. }) => {
            let details = json!([{
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{}s", whole_seconds(retry_after)),
            }]);
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                &format!(
                    "You exceeded your current quota of {limit} per minute (simulated). Please retry in {:.3}s.",
                    retry_after.as_secs_f64()
                ),
                Some(details),
            );
        }
        Err(SimRejection::ServerError) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                None,
            );
        }
    };
    if !streaming {
        return json_response(StatusCode::OK, &response(&answer));
    }
    let events = stream_responses(&answer);
    if sse {
        let frames = events
            .iter()
            .map(|(event, tokens)| (sse_event(None, event.to_string().as_bytes(), "\r\n\r\n"), *tokens))
            .collect();
        paced_sse(&sim, &answer, frames, b"data: {\"candidates\": [tru\r\n\r\n", None)
    } else {
        // Without `alt=sse` Google answers a stream as one JSON array of the responses.
        json_response(
            StatusCode::OK,
            &Value::Array(events.into_iter().map(|(event, _)| event).collect()),
        )
    }
}

// === Answers ===

fn response_id(answer: &SimAnswer) -> String {
    format!("sim{:08}", answer.serial())
}

/// `usageMetadata` with `candidates` answer tokens so far: the prompt (cached tokens included, and named
/// when there are any) and the thoughts, which all come before the answer. Zero counts are left out, as
/// Google's JSON leaves them.
fn usage(answer: &SimAnswer, candidates: u64) -> Value {
    let usage = answer.usage();
    let prompt = usage.prompt_tokens();
    let mut meta = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + usage.reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    });
    if let Some(object) = meta.as_object_mut() {
        if usage.cache_read > 0 {
            object.insert("cachedContentTokenCount".to_owned(), json!(usage.cache_read));
            object.insert(
                "cacheTokensDetails".to_owned(),
                json!([{"modality": "TEXT", "tokenCount": usage.cache_read}]),
            );
        }
        if usage.reasoning > 0 {
            object.insert("thoughtsTokenCount".to_owned(), json!(usage.reasoning));
        }
    }
    meta
}

fn one_candidate(answer: &SimAnswer, parts: Value, finish: Option<&str>, candidates_tokens: u64) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let (Some(finish), Some(object)) = (finish, candidate.as_object_mut()) {
        object.insert("finishReason".to_owned(), json!(finish));
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": usage(answer, candidates_tokens),
        "modelVersion": answer.model(),
        "responseId": response_id(answer),
    })
}

fn call_part(name: &str, args: &Value) -> Value {
    json!({"functionCall": {"name": name, "args": args}, "thoughtSignature": SIGNATURE})
}

/// The answer as a `GenerateContentResponse`.
pub fn response(answer: &SimAnswer) -> Value {
    let parts = match answer.reply() {
        SimReply::Text(pieces) => json!([{"text": pieces.concat()}]),
        SimReply::ToolCall(call) => json!([call_part(&call.name, &call.arguments)]),
    };
    one_candidate(
        answer,
        parts,
        Some(answer.finish().gemini()),
        answer.completion_tokens(),
    )
}

/// The answer as the responses of a stream, each with the visible tokens generated once it is sent: one
/// per text piece (usage counted so far), the last with the finish reason; a function call comes whole in
/// one.
pub fn stream_responses(answer: &SimAnswer) -> Vec<(Value, u64)> {
    let finish = answer.finish().gemini();
    let all = answer.completion_tokens();
    match answer.reply() {
        SimReply::ToolCall(call) => vec![(
            one_candidate(
                answer,
                json!([call_part(&call.name, &call.arguments)]),
                Some(finish),
                all,
            ),
            all,
        )],
        SimReply::Text(pieces) if pieces.is_empty() => {
            vec![(one_candidate(answer, json!([{"text": ""}]), Some(finish), 0), 0)]
        }
        SimReply::Text(pieces) => pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let last = i + 1 == pieces.len();
                let sent = answer.tokens_through(i + 1);
                (
                    one_candidate(answer, json!([{ "text": piece }]), last.then_some(finish), sent),
                    sent,
                )
            })
            .collect(),
    }
}
