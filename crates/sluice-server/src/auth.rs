//! Who is calling: the middleware that asks the pipeline's [`sluice_pipeline::Authenticator`] who holds a
//! bearer key, and keeps `/admin` to the admin key.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Middleware: rejects requests without a known bearer token and records the caller as an extension.
pub(crate) async fn require_key(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(token) = bearer(&request) else {
        return ApiError::missing_key().into_response();
    };
    match state.auth().authenticate(token) {
        Some(principal) => {
            tracing::Span::current().record("caller", principal.name.as_ref());
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        None => ApiError::invalid_key().into_response(),
    }
}
