//! `POST /v1/responses`, OpenAI's Responses API (Codex, the newer OpenAI SDK code): translated to a chat
//! completion by `sluice_protocols::responses`, run through the pipeline as chat is (tenants, counting,
//! budgets, failover, the ledger), and the answer translated back: the `response` object, or its event
//! stream ended by `response.completed` (`response.incomplete`), or `response.failed` when the upstream
//! broke. A WebSocket upgrade on the same URL is answered 426 at once, so clients that try the WebSocket
//! transport first fall back to HTTP without waiting or retrying.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use sluice_pipeline::{Answer, AnswerBody, Chat};
use sluice_protocols::responses::{self, ResponseEcho, ResponsesStream};

use crate::AppState;
use crate::answer::{self, Shape, add_answer_headers, add_tenant_headers};
use crate::error::ApiError;
use crate::extract::{ApiCaller, RawBody};
use crate::translate::translate;

/// `POST /v1/responses`.
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    body: Result<RawBody, ApiError>,
) -> Response {
    let RawBody(body) = match body {
        Ok(body) => body,
        Err(err) => return err.into_response(),
    };
    let request = match responses::parse_request(&body) {
        Ok(request) => request,
        Err(err) => return ApiError::from_protocol(&err).into_response(),
    };
    let operation = Chat::new(request.chat);
    let mut response = match answer::answer(&state, &caller, &operation, Shape::OpenAi).await {
        Ok(answer) => respond(answer, request.echo),
        Err(response) => response,
    };
    add_tenant_headers(response.headers_mut(), caller.principal.tenant.as_ref());
    response
}

/// `GET /v1/responses` asking for a WebSocket: 426, at once. Sluice serves the Responses API over HTTP
/// only; a client that tries the WebSocket transport first falls back on this answer.
pub(crate) async fn websocket(headers: HeaderMap) -> Response {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED).into_response();
    }
    ApiError::new(
        StatusCode::UPGRADE_REQUIRED,
        "invalid_request_error",
        "Sluice serves the Responses API over HTTP only: send POST /v1/responses (with \"stream\": true for \
         events) instead of a WebSocket.",
        None,
        Some("websocket_not_supported"),
    )
    .into_response()
}

fn respond(answer: Answer, echo: ResponseEcho) -> Response {
    let id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let created_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut response = match answer.body {
        AnswerBody::Complete { body, usage } => {
            match responses::complete(&body, &echo, &id, created_at, Some(&usage)) {
                Ok(body) => answer::json_body(body),
                Err(err) => {
                    tracing::warn!(error = %err, "the upstream's answer could not be translated to a response");
                    ApiError::from_protocol(&err).into_response()
                }
            }
        }
        AnswerBody::Stream(events) => {
            answer::event_stream(translate(events, ResponsesStream::new(echo, id, created_at)))
        }
    };
    add_answer_headers(
        response.headers_mut(),
        &answer.provider,
        answer.attempts,
        &answer.dropped,
    );
    response
}
