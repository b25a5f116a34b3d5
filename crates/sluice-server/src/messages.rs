//! `POST /v1/messages` and `POST /v1/messages/count_tokens`, Anthropic's Messages API (Claude Code, the
//! Anthropic SDKs), with errors in Anthropic's shape.
//!
//! A model's deployment whose upstream takes Messages bodies (Anthropic) gets the client's body byte for
//! byte, the model swapped, and its answer goes back byte for byte: thinking signatures, `cache_control`
//! and beta features survive. Other deployments get the body translated to chat completions
//! (`sluice_protocols::messages`) and their answer translated back. Either way the call runs through the
//! pipeline as chat does: tenants, counting, budgets, failover, the ledger. A model is named by its Sluice
//! name or by an Anthropic model id configured as its alias.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sluice_api::ChatCompletionRequest;
use sluice_pipeline::{Answer, AnswerBody, Caller, Messages, Metered, Principal};
use sluice_protocols::ProtocolError;
use sluice_protocols::messages::{self, MessagesStream};

use crate::AppState;
use crate::answer::{self, Shape, add_answer_headers, add_tenant_headers, client_request_id};
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::translate::translate;

/// Says how a `count_tokens` answer was counted: `vendor` (the upstream counted) or `estimated` (Sluice's
/// tokenizer, for upstreams that cannot count).
static X_SLUICE_TOKEN_COUNT: HeaderName = HeaderName::from_static("x-sluice-token-count");

/// `POST /v1/messages`.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Response {
    let RawBody(body) = match body {
        Ok(body) => body,
        Err(err) => return err.into_anthropic_response(),
    };
    let (chat, untranslatable) = match read(&state, &body, false) {
        Ok(read) => read,
        Err(err) => return protocol_error(&err),
    };
    let model = chat.model.clone();
    let caller = Caller::new(principal, client_request_id(&headers));
    let operation = Messages::new(
        chat,
        body,
        headers,
        untranslatable.as_ref().map(ProtocolError::to_openai),
    );
    let mut response = match answer::answer(&state, &caller, &operation, Shape::Anthropic).await {
        Ok(answer) => respond(answer, model),
        Err(response) => response,
    };
    add_tenant_headers(response.headers_mut(), caller.principal.tenant.as_ref());
    response
}

/// `POST /v1/messages/count_tokens`: the upstream's count when a deployment of the model is Anthropic,
/// else Sluice's estimate with the model's tokenizer, marked `x-sluice-token-count: estimated`.
pub(crate) async fn count_tokens(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Response {
    let RawBody(body) = match body {
        Ok(body) => body,
        Err(err) => return err.into_anthropic_response(),
    };
    let (chat, _) = match read(&state, &body, true) {
        Ok(read) => read,
        Err(err) => return protocol_error(&err),
    };
    if let Some(tenant) = principal.tenant.as_ref() {
        let service = sluice_pipeline::Service::model(&chat.model);
        if let Err(refusal) = tenant.admit(&service, state.pipeline().model_access(&chat.model)) {
            return ApiError::from_tenant(&refusal, tenant.name(), &chat.model).into_anthropic_response();
        }
    }
    let encoding = match state.router().route(&chat.model) {
        Ok(route) => route.encoding(),
        Err(err) => return ApiError::from_route(&err).into_anthropic_response(),
    };
    let (body, counted) = match state.router().count_tokens(&chat.model, &body, &headers).await {
        Some(Ok(count)) => (count.body, "vendor"),
        Some(Err(err)) => return ApiError::from_provider(&err, "anthropic").into_anthropic_response(),
        // No upstream could count (none is Anthropic, or every key failed): Sluice's estimate.
        None => {
            let tokens = sluice_tokens::count_chat_offloaded(Arc::new(chat), encoding)
                .await
                .tokens;
            (messages::count_tokens_body(tokens), "estimated")
        }
    };
    let mut response = answer::json_body(body);
    response
        .headers_mut()
        .insert(X_SLUICE_TOKEN_COUNT.clone(), HeaderValue::from_static(counted));
    response
}

/// Reads a Messages body (`count_tokens`: a count's) into the chat request to count and admit by, with
/// its model resolved, and why it cannot be translated when only an Anthropic upstream can serve it. A body
/// no deployment of its model can serve is refused here, before any work.
fn read(
    state: &AppState,
    body: &Bytes,
    count_tokens: bool,
) -> Result<(ChatCompletionRequest, Option<ProtocolError>), ProtocolError> {
    let reading = messages::read_for_passthrough(body, count_tokens)?;
    let chat = resolve(state, reading.chat);
    match reading.untranslatable {
        Some(err) if !state.router().takes_messages(&chat.model) => Err(err),
        untranslatable => Ok((chat, untranslatable)),
    }
}

/// The request with its model named as Sluice names it: an Anthropic id configured as an alias is
/// replaced by its model; any other name is kept (a Sluice model name, or unknown: the pipeline says so).
fn resolve(state: &AppState, mut chat: ChatCompletionRequest) -> ChatCompletionRequest {
    if let Some(model) = state.aliases().resolve(&chat.model) {
        chat.model = model.to_owned();
    }
    chat
}

fn protocol_error(err: &ProtocolError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, err.to_anthropic()).into_response();
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn respond(answer: Answer, model: String) -> Response {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let mut response = match (answer.body, answer.native) {
        (AnswerBody::Complete { body, .. }, true) => answer::json_body(body),
        (AnswerBody::Complete { body, usage }, false) => match messages::complete(&body, &id, Some(&usage)) {
            Ok(body) => answer::json_body(body),
            Err(err) => {
                tracing::warn!(error = %err, "the upstream's answer could not be translated to a message");
                protocol_error(&err)
            }
        },
        (AnswerBody::Stream(events), true) => answer::event_stream(passthrough(events)),
        (AnswerBody::Stream(events), false) => answer::event_stream(translate(
            events,
            MessagesStream::new(id, model, Some(answer.prompt_tokens)),
        )),
    };
    add_answer_headers(
        response.headers_mut(),
        &answer.provider,
        answer.attempts,
        &answer.dropped,
    );
    response
}

/// A passed-through stream: each frame's bytes as the vendor sent them (the gateway's own usage chunk,
/// made only when a vendor reports none, is not one of them and stays out); a break ends it with
/// Anthropic's `error` event.
fn passthrough(
    events: Box<Metered>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
    futures_util::stream::unfold(Some(events), move |events| async move {
        let mut events = events?;
        loop {
            match events.next().await {
                Some(Ok(event)) if event.usage_only => continue,
                Some(Ok(event)) => return Some((Ok(event.data), Some(events))),
                Some(Err(err)) => {
                    answer::log_broken(&events, &err);
                    let (kind, message) = answer::stream_failure(&err);
                    return Some((Ok(messages::error_event(kind, &message)), None));
                }
                None => return None,
            }
        }
    })
}
