//! Who is calling. The seam the tenant store plugs into: anything that maps a bearer token to a
//! [`Principal`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretString};

use crate::AppState;
use crate::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// A name for logs: the key's id or label, never its value.
    pub name: Arc<str>,
    /// Whether the caller holds the admin key.
    pub admin: bool,
    /// The virtual key's id, for the usage ledger; `None` for configured keys.
    pub key_id: Option<Arc<str>>,
    /// The caller's tenant; `None` for configured keys, which belong to no tenant and have no limits.
    pub tenant: Option<Arc<crate::tenancy::TenantState>>,
}

impl Principal {
    /// The tenant name the ledger records: the tenant's, or `default` for configured keys.
    pub fn tenant_name(&self) -> &str {
        self.tenant
            .as_ref()
            .map_or(crate::tenancy::DEFAULT_TENANT, |t| t.name())
    }
}

/// Maps a bearer token to a caller.
pub trait Authenticator: Send + Sync + 'static {
    /// The caller presenting `token`, or `None` if the token is unknown.
    fn authenticate(&self, token: &str) -> Option<Principal>;
}

/// The minimal authenticator: a fixed list of client keys and the admin key, from the configuration.
pub struct StaticKeys {
    keys: HashMap<String, Principal>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys").field("keys", &self.keys.len()).finish()
    }
}

impl StaticKeys {
    /// Accepts each of `client_keys`, named by their label for logs, and `admin_key`.
    pub fn new(client_keys: &[(String, SecretString)], admin_key: Option<&SecretString>) -> Self {
        let mut keys = HashMap::with_capacity(client_keys.len() + 1);
        for (label, key) in client_keys {
            keys.insert(
                key.expose_secret().to_owned(),
                Principal {
                    name: label.as_str().into(),
                    admin: false,
                    key_id: None,
                    tenant: None,
                },
            );
        }
        if let Some(admin) = admin_key {
            keys.insert(
                admin.expose_secret().to_owned(),
                Principal {
                    name: "admin".into(),
                    admin: true,
                    key_id: None,
                    tenant: None,
                },
            );
        }
        Self { keys }
    }
}

impl Authenticator for StaticKeys {
    fn authenticate(&self, token: &str) -> Option<Principal> {
        self.keys.get(token).cloned()
    }
}

/// Middleware for admin routes: only the admin key passes.
pub(crate) async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match bearer(&request).map(|token| state.auth().authenticate(token)) {
        None => ApiError::missing_key().into_response(),
        Some(Some(principal)) if principal.admin => next.run(request).await,
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
