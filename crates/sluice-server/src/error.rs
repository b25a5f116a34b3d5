//! The one place where failures become HTTP answers in OpenAI's error shape.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use sluice_api::{ErrorBody, ParseError};
use sluice_pipeline::{Permission, PipelineError, Service, ServiceKind, TenantRefusal};
use sluice_providers::{ProviderError, TimeoutPhase};
use sluice_router::RouteError;

/// An error answer: an HTTP status, OpenAI's error body, and a retry time for 429s and 503s.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
    /// Sent as `retry-after` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with the given status, type, message, param and code.
    pub fn new(
        status: StatusCode,
        kind: &str,
        message: impl Into<String>,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Self {
        Self {
            status,
            body: ErrorBody::new(kind, message, param.map(str::to_owned), code.map(str::to_owned)),
            retry_after: None,
        }
    }

    /// A 400 about the request, naming the field.
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message, param, None)
    }

    /// A body that could not be parsed.
    pub fn from_parse(err: &ParseError) -> Self {
        Self::invalid_request(err.to_string(), err.param())
    }

    /// A body over the size limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than the gateway's limit of {limit} bytes."),
            None,
            Some("request_too_large"),
        )
    }

    /// A missing API key.
    pub fn missing_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "You didn't provide an API key. Send it in an Authorization header using Bearer auth \
             (Authorization: Bearer YOUR_KEY).",
            None,
            Some("missing_api_key"),
        )
    }

    /// A key the gateway does not know.
    pub fn invalid_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "Incorrect API key provided.",
            None,
            Some("invalid_api_key"),
        )
    }

    /// A route that does not exist.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown request URL: {path}."),
            None,
            Some("unknown_url"),
        )
    }

    /// An answer that a layer produced without a body (timeout, method not allowed...), given our shape.
    pub fn from_status(status: StatusCode) -> Self {
        let (kind, code, message) = match status {
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => (
                "timeout_error",
                "request_timeout",
                "The request took longer than the gateway's request timeout.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "invalid_request_error",
                "request_too_large",
                "The request body is larger than the gateway's limit.",
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                "invalid_request_error",
                "method_not_allowed",
                "This method is not allowed on this URL.",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "invalid_request_error",
                "unsupported_media_type",
                "The request body must be JSON (Content-Type: application/json).",
            ),
            s if s.is_server_error() => ("server_error", "internal_error", "The gateway failed to answer."),
            _ => (
                "invalid_request_error",
                "invalid_request",
                "The request could not be handled.",
            ),
        };
        Self::new(status, kind, message, None, Some(code))
    }

    /// How a refusal of the pipeline reaches the client.
    pub fn from_pipeline(err: &PipelineError) -> Self {
        match err {
            PipelineError::Invalid { message, param, code } => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                message.clone(),
                Some(param),
                *code,
            ),
            PipelineError::Tenant { refusal, tenant, model } => Self::from_tenant(refusal, tenant, model),
            PipelineError::Route(err) => Self::from_route(err),
        }
    }

    /// A tenant refused a service: what it may do next is in the message and the code.
    fn not_allowed(tenant: &str, service: &Service, permission: &Permission) -> Self {
        let (what, param) = match service.kind {
            ServiceKind::Model => ("model", "model"),
            ServiceKind::Prompt => ("prompt", "name"),
        };
        let name = &service.name;
        let (message, code) = match permission {
            Permission::Pending { subscription } => (
                format!(
                    "The tenant `{tenant}` may not use the {what} `{name}` yet: its subscription request                      {subscription} is pending approval by an admin."
                ),
                "subscription_pending",
            ),
            Permission::Request => (
                format!(
                    "The {what} `{name}` needs an approved subscription. Ask for one with POST /v1/subscriptions                      {{\"service\": \"{service}\", \"reason\": \"...\"}}."
                ),
                "subscription_required",
            ),
            Permission::Call | Permission::None => (
                format!("The tenant `{tenant}` may not use the {what} `{name}`."),
                if service.kind == ServiceKind::Model {
                    "model_not_allowed"
                } else {
                    "prompt_not_allowed"
                },
            ),
        };
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            message,
            Some(param),
            Some(code),
        )
    }

    /// How a tenant's refusal reaches the client.
    pub fn from_tenant(refusal: &TenantRefusal, tenant: &str, model: &str) -> Self {
        match refusal {
            TenantRefusal::NotAllowed { service, permission } => Self::not_allowed(tenant, service, permission),
            TenantRefusal::RateLimited { retry_after } => {
                let mut error = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "The tenant `{tenant}` is over its rate limit. Retry after {} s.",
                        retry_after_secs(*retry_after).max(1)
                    ),
                    None,
                    Some("rate_limit_exceeded"),
                );
                error.retry_after = Some(*retry_after);
                error
            }
            TenantRefusal::NotPriced => Self::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                format!(
                    "The model `{model}` has no price, and the tenant `{tenant}` has a spend budget, so its cost could \
                     not be counted against it. The gateway's operator must give the model a price or mark it free."
                ),
                Some("model"),
                Some("model_not_priced"),
            ),
            TenantRefusal::TooLarge { tpm } => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("This request needs more tokens than the tenant `{tenant}` may use in a minute ({tpm})."),
                Some("messages"),
                Some("request_too_large"),
            ),
            TenantRefusal::OverBudget {
                budget_micros,
                committed,
                request_micros,
                resets_at,
            } => {
                let resets = resets_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let budget = sluice_store::format_usd(*budget_micros);
                let message = if committed >= budget_micros || *request_micros == 0 {
                    format!(
                        "The tenant `{tenant}` has used its budget of ${budget} for this period; it resets at {resets}."
                    )
                } else {
                    format!(
                        "This request could cost up to ${}, more than is left of the tenant `{tenant}`'s budget of \
                         ${budget} for this period (${} spent or held by requests in flight); lower max_tokens, or \
                         wait until the budget resets at {resets}.",
                        sluice_store::format_usd(*request_micros),
                        sluice_store::format_usd(*committed),
                    )
                };
                let mut error = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "insufficient_quota",
                    message,
                    None,
                    Some("insufficient_quota"),
                );
                let wait = (*resets_at - chrono::Utc::now()).to_std().unwrap_or_default();
                error.retry_after = Some(wait);
                error
            }
        }
    }

    /// How a routing failure reaches the client.
    pub fn from_route(err: &RouteError) -> Self {
        match err {
            RouteError::UnknownModel { model, known } => {
                let known: Vec<&str> = known.iter().map(|m| m.as_ref()).collect();
                Self::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!(
                        "The model `{model}` does not exist or you do not have access to it. Available models: {}.",
                        known.join(", ")
                    ),
                    Some("model"),
                    Some("model_not_found"),
                )
            }
            RouteError::NotConfigured {
                model,
                missing,
                rejected,
            } => {
                // The variables and key ids are the operator's business: logged here and shown on
                // `/admin/limits`, never told to a client.
                tracing::warn!(
                    model = %model,
                    missing = ?missing,
                    rejected = ?rejected,
                    "no provider of the model has a usable key"
                );
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    format!(
                        "The model `{model}` is configured, but none of its providers has a usable API key. \
                         The gateway's operator can see why in its log and on /admin/limits."
                    ),
                    Some("model"),
                    Some("provider_not_configured"),
                )
            }
            RouteError::Exhausted { model, retry_after, .. } => {
                let mut error = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "Every upstream key for `{model}` is at its rate limit. Retry after {} s.",
                        retry_after_secs(*retry_after).max(1)
                    ),
                    None,
                    Some("rate_limit_exceeded"),
                );
                error.retry_after = Some(*retry_after);
                error
            }
            RouteError::TooLarge { model, tokens, largest } => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!(
                    "This request needs about {tokens} tokens (prompt and completion cap), more than the \
                     {largest} tokens per minute any upstream key of `{model}` allows. Shorten the prompt or \
                     lower max_tokens."
                ),
                Some("messages"),
                Some("request_too_large"),
            ),
            RouteError::Upstream { last, provider, .. } => Self::from_provider(last, provider),
        }
    }

    /// How an upstream failure reaches the client. Vendor details stay in the logs; the vendor's own
    /// message reaches the client only for requests the vendor rejected as invalid.
    pub fn from_provider(err: &ProviderError, provider: &str) -> Self {
        let mut error = match err {
            ProviderError::Rejected { status, error } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
                return Self {
                    status,
                    body: error.clone(),
                    retry_after: None,
                };
            }
            ProviderError::RateLimited { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("Every upstream key for this model is rate-limited (last tried: `{provider}`). Retry later."),
                None,
                Some("rate_limit_exceeded"),
            ),
            ProviderError::QuotaExhausted { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                format!("The upstream quota of the gateway's keys for `{provider}` is exhausted."),
                None,
                Some("insufficient_quota"),
            ),
            ProviderError::Overloaded { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                format!("The upstream provider `{provider}` is overloaded. Retry later."),
                None,
                Some("upstream_overloaded"),
            ),
            ProviderError::Timeout { phase, after } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                format!(
                    "The upstream provider `{provider}` timed out {} after {} ms.",
                    phase_text(*phase),
                    after.as_millis()
                ),
                None,
                Some("upstream_timeout"),
            ),
            ProviderError::Connect { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                format!("Could not connect to the upstream provider `{provider}`."),
                None,
                Some("upstream_unreachable"),
            ),
            ProviderError::Authentication { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                format!(
                    "The upstream provider `{provider}` rejected the gateway's API key; the gateway's operator must \
                     fix its configuration."
                ),
                None,
                Some("upstream_authentication_failed"),
            ),
            ProviderError::Server { status, .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                format!("The upstream provider `{provider}` failed with status {status}."),
                None,
                Some("upstream_error"),
            ),
            ProviderError::Protocol { .. } | ProviderError::Truncated { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                format!("The upstream provider `{provider}` sent an invalid or incomplete response."),
                None,
                Some("upstream_error"),
            ),
        };
        error.retry_after = err.retry_after().or(match err {
            ProviderError::RateLimited { .. } | ProviderError::Overloaded { .. } => Some(Duration::from_secs(1)),
            _ => None,
        });
        error
    }
}

fn phase_text(phase: TimeoutPhase) -> &'static str {
    match phase {
        TimeoutPhase::Connect => "while connecting",
        TimeoutPhase::FirstByte => "before answering",
        TimeoutPhase::Idle => "in the middle of its answer",
    }
}

/// Whole seconds, rounded up, at least one: a client retrying after `retry-after` must not be too early.
pub(crate) fn retry_after_secs(after: Duration) -> u64 {
    after.as_secs() + u64::from(after.subsec_nanos() > 0)
}

impl ApiError {
    /// The same error in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, for the
    /// Messages API: the status, message and `retry-after` kept, the type the one Anthropic uses for the
    /// status.
    pub fn into_anthropic_response(self) -> Response {
        let body = sluice_protocols::messages::error_body(self.status.as_u16(), &self.body.error.message);
        json_answer(self.status, body, self.retry_after)
    }

    /// A request the inbound protocol's translation refused (a 400 naming the field), or an answer it could
    /// not translate back (a 502), in OpenAI's shape.
    pub fn from_protocol(err: &sluice_protocols::ProtocolError) -> Self {
        Self {
            status: StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST),
            body: err.to_openai(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_answer(self.status, self.body.to_bytes(), self.retry_after)
    }
}

/// An error answer in either shape: `status`, the JSON `body`, and `retry-after` in whole seconds (at
/// least one) when the refusal has one.
fn json_answer(status: StatusCode, body: impl IntoResponse, retry_after: Option<Duration>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(after) = retry_after {
        headers.insert(
            header::RETRY_AFTER,
            crate::answer::number_value(retry_after_secs(after).max(1)),
        );
    }
    response
}
