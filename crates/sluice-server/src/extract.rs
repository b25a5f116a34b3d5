//! A JSON body extractor whose every rejection is an OpenAI-shaped error naming the problem.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;
use sluice_pipeline::{Caller, Principal};

use crate::answer::client_request_id;
use crate::error::ApiError;

/// A request body parsed as JSON into `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// State that knows the body size limit, so a too-large body is answered with the number.
pub trait BodyLimit {
    /// The largest accepted request body, in bytes.
    fn max_body_bytes(&self) -> usize;
}

impl<S: BodyLimit + Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        sluice_api::parse_json(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::from_parse(&e))
    }
}

/// A request body as received, not empty, within the body limit: for the inbound protocols, which parse
/// it themselves (and the Messages pass-through, which sends it on byte for byte).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: BodyLimit + Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(ref inner) if inner.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::payload_too_large(state.max_body_bytes())
                }
                other => {
                    ApiError::invalid_request(format!("Could not read the request body: {}", other.body_text()), None)
                }
            })?;
        if bytes.is_empty() {
            return Err(ApiError::invalid_request(
                "The request body is empty; send a JSON object.",
                None,
            ));
        }
        Ok(RawBody(bytes))
    }
}

/// Who calls an authenticated route: the principal the key middleware found, and the client's
/// `x-request-id`. It reads the one header it needs: a `HeaderMap` extractor copies them all.
#[derive(Debug)]
pub struct ApiCaller(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let principal = parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The route was reached without authentication.",
                None,
                None,
            )
        })?;
        Ok(Self(Caller::new(principal, client_request_id(&parts.headers))))
    }
}
