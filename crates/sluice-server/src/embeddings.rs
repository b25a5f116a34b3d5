//! `POST /v1/embeddings`: parse, run through the pipeline, answer with the vendor's vectors in OpenAI's
//! format.

use axum::extract::State;
use axum::response::Response;
use sluice_api::EmbeddingRequest;
use sluice_pipeline::Embeddings;

use crate::AppState;
use crate::answer::run;
use crate::extract::{ApiCaller, ApiJson};

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    ApiCaller(caller): ApiCaller,
    ApiJson(request): ApiJson<EmbeddingRequest>,
) -> Response {
    run(&state, &caller, &Embeddings::new(request), false).await
}
