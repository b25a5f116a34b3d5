//! Who is calling: the middleware that asks the pipeline's [`sluice_pipeline::Authenticator`] who holds a
//! bearer key, and keeps `/admin` to the admin key.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderName;
use http::header::AUTHORIZATION;

use crate::AppState;
use crate::error::ApiError;

/// Middleware for admin routes: only the admin key passes, recorded as an extension like a client.
pub(crate) async fn require_admin(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match bearer(&request).map(|token| state.auth().authenticate(token)) {
        None => ApiError::missing_key().into_response(),
        Some(Some(principal)) if principal.admin => {
            // The admin's identity, for the audit log.
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Some(Some(_)) => ApiError::new(
            http::StatusCode::FORBIDDEN,
            "permission_error",
            "This endpoint needs the admin key.",
            None,
            Some("admin_key_required"),
        )
        .into_response(),
        Some(None) => ApiError::invalid_key().into_response(),
    }
}

// Header names built once: looking a header up by `&str` checks and parses the name on every request.
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// Sent by the Anthropic SDKs on every call.
pub(crate) static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The key an Anthropic client sends: `x-api-key` (the SDKs' `api_key`); Claude Code with
/// `ANTHROPIC_AUTH_TOKEN` sends `Authorization: Bearer` instead.
fn x_api_key(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(&X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether the caller speaks Anthropic's Messages API (its routes, or `anthropic-version` sent, as the
/// Anthropic SDKs do on every call), so its errors take Anthropic's shape.
pub(crate) fn speaks_anthropic(request: &Request) -> bool {
    request.uri().path().starts_with("/v1/messages") || request.headers().contains_key(&ANTHROPIC_VERSION)
}

/// The authenticated caller's name, left on its response for the access log line. (Recorded on the
/// request's span instead, it would have the JSON log format parse and rewrite the span's fields.)
#[derive(Debug, Clone)]
pub(crate) struct CallerName(pub Arc<str>);

/// Before `inner`: rejects requests without a known key (`Authorization: Bearer`, or `x-api-key` as
/// Anthropic clients send it) and records the caller as an extension.
pub(crate) async fn require_key_then<F>(
    state: &AppState,
    mut request: Request,
    inner: impl FnOnce(Request) -> F,
) -> Response
where
    F: Future<Output = Response>,
{
    let anthropic = speaks_anthropic(&request);
    let refuse = |error: ApiError| {
        if anthropic {
            error.into_anthropic_response()
        } else {
            error.into_response()
        }
    };
    let Some(token) = bearer(&request).or_else(|| x_api_key(&request)) else {
        return refuse(ApiError::missing_key());
    };
    match state.auth().authenticate(token) {
        Some(principal) => {
            let name = CallerName(principal.name.clone());
            request.extensions_mut().insert(principal);
            let mut response = inner(request).await;
            response.extensions_mut().insert(name);
            response
        }
        None => refuse(ApiError::invalid_key()),
    }
}
