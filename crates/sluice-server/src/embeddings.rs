//! `POST /v1/embeddings`: parse, run through the pipeline, answer with the vendor's vectors in OpenAI's
//! format.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use sluice_api::EmbeddingRequest;
use sluice_pipeline::{Caller, Embeddings, Principal};

use crate::AppState;
use crate::answer::{client_request_id, run};
use crate::extract::ApiJson;

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<EmbeddingRequest>,
) -> Response {
    let caller = Caller::new(principal, client_request_id(&headers));
    run(&state, &caller, &Embeddings::new(request), false).await
}
