//! Why the pipeline did not serve a request.

use std::sync::Arc;

use sluice_router::RouteError;

use crate::access::{Permission, ServiceKind};
use crate::tenancy::TenantRefusal;

/// Why a request was not served. The HTTP edge turns each into the caller's protocol's error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The request parsed but makes no sense, or asks for more work than the gateway takes.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// The field at fault.
        param: &'static str,
        /// A machine-readable code, where one says more than the status.
        code: Option<&'static str>,
    },
    /// The caller's tenant may not make this request now.
    #[error("tenant `{tenant}` may not call `{model}` now: {refusal:?}")]
    Tenant {
        /// Why.
        refusal: TenantRefusal,
        /// The tenant.
        tenant: Arc<str>,
        /// The model asked for.
        model: String,
    },
    /// The router could not serve it.
    #[error(transparent)]
    Route(Box<RouteError>),
}

impl From<RouteError> for PipelineError {
    fn from(err: RouteError) -> Self {
        Self::Route(Box::new(err))
    }
}

impl PipelineError {
    /// A request that makes no sense, `param` naming the field.
    pub fn invalid(message: impl Into<String>, param: &'static str) -> Self {
        Self::Invalid {
            message: message.into(),
            param,
            code: None,
        }
    }

    /// The same refusal with a machine-readable `code`.
    pub fn with_code(mut self, new_code: &'static str) -> Self {
        if let Self::Invalid { code, .. } = &mut self {
            *code = Some(new_code);
        }
        self
    }

    /// The refusal's kind, a stable snake_case name, as the admin view of recent failures shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_request",
            Self::Tenant { refusal, .. } => match refusal {
                TenantRefusal::NotAllowed { service, permission } => match (permission, service.kind) {
                    (Permission::Pending { .. }, _) => "subscription_pending",
                    (Permission::Request, _) => "subscription_required",
                    (_, ServiceKind::Model) => "model_not_allowed",
                    (_, ServiceKind::Prompt) => "prompt_not_allowed",
                },
                TenantRefusal::RateLimited { .. } => "tenant_rate_limited",
                TenantRefusal::TooLarge { .. } => "tenant_request_too_large",
                TenantRefusal::OverBudget { .. } => "over_budget",
                TenantRefusal::NotPriced => "model_not_priced",
            },
            Self::Route(err) => match err.as_ref() {
                RouteError::UnknownModel { .. } => "unknown_model",
                RouteError::NotConfigured { .. } => "no_upstream_key",
                RouteError::Exhausted { .. } => "upstream_keys_exhausted",
                RouteError::TooLarge { .. } => "request_too_large",
                RouteError::Upstream { last, .. } => last.kind(),
            },
        }
    }
}
