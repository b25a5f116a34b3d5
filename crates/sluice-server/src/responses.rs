//! `POST /v1/responses`, OpenAI's Responses API (Codex, the newer OpenAI SDK code): translated to a chat
//! completion by `sluice_protocols::responses`, run through the pipeline as chat is (tenants, counting,
//! budgets, failover, the ledger), and the answer translated back: the `response` object, or its event
//! stream ended by `response.completed` (`response.incomplete`), or `response.failed` when the upstream
//! broke. A WebSocket upgrade on the same URL is answered 426 at once, so clients that try the WebSocket
//! transport first fall back to HTTP without waiting or retrying.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode, header};
use sluice_pipeline::{Answer, AnswerBody, Caller, Chat, Metered, Principal};
use sluice_protocols::responses::{self, ResponseEcho, ResponsesStream};
use sluice_protocols::{FailureKind, StreamFailure};

use crate::AppState;
use crate::answer::{self, Shape, add_answer_headers, add_tenant_headers, client_request_id};
use crate::error::ApiError;
use crate::extract::RawBody;

/// `POST /v1/responses`.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
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
    let caller = Caller::new(principal, client_request_id(&headers));
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
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
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
        AnswerBody::Stream(events) => answer::event_stream(translate(events, ResponsesStream::new(echo, id, created_at))),
    };
    add_answer_headers(response.headers_mut(), &answer.provider, answer.attempts, &answer.dropped);
    response
}

/// The chat chunks of `events` as the Responses stream: each chunk's events sent as it arrives (a chunk
/// that makes none sends nothing), `response.completed` with the recorded usage at the end, or
/// `response.failed` when the upstream broke or sent a chunk that cannot be translated.
fn translate(
    events: Box<Metered>,
    translator: ResponsesStream,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let span = tracing::Span::current();
    futures_util::stream::unfold(Some((events, translator)), move |state| {
        let span = span.clone();
        async move {
            let (mut events, mut translator) = state?;
            let mut out = BytesMut::new();
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        if let Err(err) = translator.chunk(&event.data, &mut out) {
                            span.in_scope(|| tracing::warn!(error = %err, "a chunk could not be translated"));
                            let failure = StreamFailure {
                                kind: FailureKind::Upstream,
                                message: "The upstream sent a chunk the gateway could not translate; the answer \
                                          is incomplete.",
                            };
                            translator.fail(failure, &mut out);
                            return Some((Ok(out.freeze()), None));
                        }
                        if !out.is_empty() {
                            return Some((Ok(out.freeze()), Some((events, translator))));
                        }
                    }
                    Some(Err(err)) => {
                        answer::log_broken(&span, &err);
                        let (kind, message) = answer::stream_failure(&err);
                        translator.fail(StreamFailure { kind, message: &message }, &mut out);
                        return Some((Ok(out.freeze()), None));
                    }
                    None => {
                        if let Err(err) = translator.finish(events.usage(), &mut out) {
                            span.in_scope(|| tracing::warn!(error = %err, "the stream's end could not be translated"));
                        }
                        return Some((Ok(out.freeze()), None));
                    }
                }
            }
        }
    })
}
