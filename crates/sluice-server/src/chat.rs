//! `POST /v1/chat/completions`: parse, run through the pipeline, answer as JSON or as an event stream.

use axum::extract::State;
use axum::response::Response;
use sluice_api::ChatCompletionRequest;
use sluice_pipeline::Chat;

use crate::AppState;
use crate::answer::run;
use crate::extract::{ApiCaller, ApiJson};

pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Response {
    let forward_usage = request.wants_stream_usage();
    run(&state, &caller, &Chat::new(request), forward_usage).await
}
