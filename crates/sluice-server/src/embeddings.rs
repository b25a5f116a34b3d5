//! `POST /v1/embeddings`: validate, route, answer with the vendor's vectors in OpenAI's format.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sluice_api::EmbeddingRequest;

use crate::AppState;
use crate::auth::Principal;
use crate::chat::{Caller, add_route_headers, add_tenant_headers, route_error_response};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::ledger::Entry;

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    if request.input.is_empty() {
        return Err(ApiError::invalid_request(
            "`input` must not be empty, nor contain an empty string.",
            Some("input"),
        ));
    }
    let encoding = state
        .router()
        .encoding(&request.model)
        .unwrap_or_else(|| sluice_tokens::EncodingName::O200kBase.into());
    let input_tokens = match request.input.texts() {
        Some(texts) => texts
            .iter()
            .map(|t| sluice_tokens::count_text(t, encoding).tokens)
            .sum::<u64>()
            .max(1),
        // Token ids: one token each, and the JSON text is a generous bound on their number.
        None => (request.input.text_bytes() as u64).max(1),
    };
    let tenant = principal.tenant.clone();
    let reservation = match &tenant {
        Some(tenant) => tenant
            .admit(&request.model, input_tokens)
            .map_err(|refusal| ApiError::from_tenant(&refusal, tenant.name(), &request.model))?,
        None => None,
    };
    let caller = Caller::new(principal, &headers, None);
    let mut entry = Entry::new(
        state.ledger(),
        &caller.principal,
        &caller.request_id,
        &request.model,
        None,
        reservation,
    );
    let routed = match state.router().embed(&request, input_tokens).await {
        Ok(routed) => routed,
        Err(err) => {
            let mut response = route_error_response(err);
            entry.finish(response.status().as_u16());
            add_tenant_headers(response.headers_mut(), tenant.as_ref());
            return Ok(response);
        }
    };
    entry.routed(&routed.provider, &routed.vendor_model, routed.attempts);
    if let Some(usage) = routed.reply.usage {
        tracing::info!(prompt_tokens = usage.prompt_tokens(), "usage");
        entry.observe(usage, false);
    }
    entry.finish(200);
    let mut response = (StatusCode::OK, routed.reply.body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_route_headers(response.headers_mut(), &routed.provider, routed.attempts);
    add_tenant_headers(response.headers_mut(), tenant.as_ref());
    Ok(response)
}
