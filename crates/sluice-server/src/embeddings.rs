//! `POST /v1/embeddings`: validate, route, answer with the vendor's vectors in OpenAI's format.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use sluice_api::EmbeddingRequest;

use crate::AppState;
use crate::chat::{add_route_headers, route_error_response};
use crate::error::ApiError;
use crate::extract::ApiJson;

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    if request.input.is_empty() {
        return Err(ApiError::invalid_request(
            "`input` must not be empty, nor contain an empty string.",
            Some("input"),
        ));
    }
    // About four bytes a token, as for chat prompts, until the token estimator sizes it exactly.
    let input_tokens = (request.input.text_bytes() as u64).div_ceil(4).max(1);
    let routed = match state.router().embed(&request, input_tokens).await {
        Ok(routed) => routed,
        Err(err) => return Ok(route_error_response(err)),
    };
    if let Some(usage) = routed.reply.usage {
        tracing::info!(prompt_tokens = usage.prompt_tokens, "usage");
    }
    let mut response = (StatusCode::OK, routed.reply.body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_route_headers(response.headers_mut(), &routed.provider, routed.attempts);
    Ok(response)
}
