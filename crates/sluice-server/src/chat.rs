//! `POST /v1/chat/completions`: parse, run through the pipeline, answer as JSON or as an event stream.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use sluice_api::ChatCompletionRequest;
use sluice_pipeline::{Caller, Chat, Principal};

use crate::AppState;
use crate::answer::{client_request_id, run};
use crate::extract::ApiJson;

pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Response {
    let caller = Caller::new(principal, client_request_id(&headers));
    let forward_usage = request.wants_stream_usage();
    run(&state, &caller, &Chat::new(request), forward_usage).await
}
