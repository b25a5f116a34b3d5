//! `POST /v1/chat/completions`: validate, route, answer as JSON or as a server-sent event stream.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use sluice_api::{ChatCompletionRequest, ErrorBody, TokenUsage};
use sluice_providers::{EventStream, ProviderError, ReplyBody};
use sluice_router::RouteError;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::ledger::Entry;
use crate::tenancy::TenantState;

static X_SLUICE_PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");
static X_SLUICE_ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
static X_SLUICE_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-sluice-dropped-params");

/// Checks what serde cannot: values that parse but make no sense.
fn validate(request: &ChatCompletionRequest) -> Result<(), ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::invalid_request(
            "`messages` must contain at least one message.",
            Some("messages"),
        ));
    }
    if request.n == Some(0) {
        return Err(ApiError::invalid_request("`n` must be at least 1.", Some("n")));
    }
    if let Some(t) = request.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid_request(
            format!("`temperature` must be between 0 and 2; got {t}."),
            Some("temperature"),
        ));
    }
    if request.stream_options.is_some() && !request.is_stream() {
        return Err(ApiError::invalid_request(
            "`stream_options` is only allowed when `stream` is true.",
            Some("stream_options"),
        ));
    }
    Ok(())
}

pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let caller = Caller::new(principal, &headers, None);
    answer(&state, &caller, &request).await
}

/// Who is asking, for limits and the ledger.
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) request_id: String,
    /// The prompt template's name and version, for prompt endpoint calls.
    pub(crate) prompt: Option<(String, u32)>,
}

impl Caller {
    pub(crate) fn new(principal: Principal, headers: &HeaderMap, prompt: Option<(String, u32)>) -> Self {
        // The request id layer always sets one; a fresh id keeps the ledger's key unique otherwise.
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        Self {
            principal,
            request_id,
            prompt,
        }
    }
}

/// Answers a chat completion request: the one path every way of asking (a chat call, a prompt
/// endpoint) goes down.
pub(crate) async fn answer(
    state: &AppState,
    caller: &Caller,
    request: &ChatCompletionRequest,
) -> Result<Response, ApiError> {
    validate(request)?;
    let prompt_tokens = count_prompt(state, request).await;
    let tenant = caller.principal.tenant.as_ref();
    let reservation = match tenant {
        Some(tenant) => {
            let cap = request.completion_cap().map_or(0, u64::from);
            tenant
                .admit(&request.model, prompt_tokens + cap)
                .map_err(|refusal| ApiError::from_tenant(&refusal, tenant.name(), &request.model))?
        }
        None => None,
    };
    let mut entry = Entry::new(
        state.ledger(),
        &caller.principal,
        &caller.request_id,
        &request.model,
        caller.prompt.clone(),
        reservation,
    );
    let routed = match state.router().chat(request, prompt_tokens).await {
        Ok(routed) => routed,
        Err(err) => {
            if let RouteError::Upstream { attempts, .. } | RouteError::Exhausted { attempts, .. } = &err {
                entry.attempts(*attempts);
            }
            let mut response = route_error_response(err);
            entry.finish(response.status().as_u16());
            add_tenant_headers(response.headers_mut(), tenant);
            return Ok(response);
        }
    };
    entry.routed(&routed.provider, &routed.vendor_model, routed.attempts);
    let dropped = routed.reply.dropped;
    let mut response = match routed.reply.body {
        ReplyBody::Complete { body, usage } => {
            log_usage(usage.as_ref(), false);
            if let Some(usage) = usage {
                entry.observe(usage, false);
            }
            entry.finish(200);
            let mut response = (StatusCode::OK, body).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        ReplyBody::Stream(events) => sse_response(events, request.wants_stream_usage(), entry),
    };
    add_route_headers(response.headers_mut(), &routed.provider, routed.attempts);
    add_tenant_headers(response.headers_mut(), tenant);
    if !dropped.is_empty()
        && let Ok(value) = HeaderValue::from_str(&dropped.join(", "))
    {
        response.headers_mut().insert(X_SLUICE_DROPPED_PARAMS.clone(), value);
    }
    Ok(response)
}

/// The tenant's `x-ratelimit-*` headers, in OpenAI's format, when the tenant has rate limits.
pub(crate) fn add_tenant_headers(headers: &mut HeaderMap, tenant: Option<&Arc<TenantState>>) {
    let Some(view) = tenant.and_then(|t| t.rate_view()) else {
        return;
    };
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    if let (Some(limit), Some(remaining)) = (view.rpm, view.remaining_requests) {
        put("x-ratelimit-limit-requests", limit.to_string());
        put("x-ratelimit-remaining-requests", remaining.to_string());
        let missing = limit.saturating_sub(remaining) as f64;
        put(
            "x-ratelimit-reset-requests",
            go_duration(missing * 60.0 / limit.max(1) as f64),
        );
    }
    if let (Some(limit), Some(remaining)) = (view.tpm, view.remaining_tokens) {
        put("x-ratelimit-limit-tokens", limit.to_string());
        put("x-ratelimit-remaining-tokens", remaining.to_string());
        let missing = limit.saturating_sub(remaining) as f64;
        put(
            "x-ratelimit-reset-tokens",
            go_duration(missing * 60.0 / limit.max(1) as f64),
        );
    }
}

/// Seconds in the duration format OpenAI's reset headers use: `20ms`, `1s`, `6m0s`.
fn go_duration(seconds: f64) -> String {
    if seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0).ceil() as u64);
    }
    let whole = seconds.ceil() as u64;
    if whole < 60 {
        format!("{whole}s")
    } else {
        format!("{}m{}s", whole / 60, whole % 60)
    }
}

/// A routing failure as an answer, with the attempts made when there were some: they explain a slow
/// error.
pub(crate) fn route_error_response(err: RouteError) -> Response {
    let tried = match &err {
        RouteError::Upstream { provider, attempts, .. } => Some((Arc::clone(provider), *attempts)),
        RouteError::Exhausted { attempts, .. } if *attempts > 0 => Some((Arc::from("none"), *attempts)),
        _ => None,
    };
    let mut response = ApiError::from_route(err).into_response();
    if let Some((provider, attempts)) = tried {
        add_route_headers(response.headers_mut(), &provider, attempts);
    }
    response
}

pub(crate) fn add_route_headers(headers: &mut http::HeaderMap, provider: &str, attempts: u32) {
    if let Ok(value) = HeaderValue::from_str(provider) {
        headers.insert(X_SLUICE_PROVIDER.clone(), value);
    }
    headers.insert(X_SLUICE_ATTEMPTS.clone(), HeaderValue::from(attempts));
}

/// The prompt's tokens, counted with the encoding of the model's vendor (an estimate for vendors other
/// than OpenAI). Small prompts are counted inline; large ones on the bounded blocking pool, so one
/// hostile request cannot stall the executor.
async fn count_prompt(state: &AppState, request: &ChatCompletionRequest) -> u64 {
    let encoding = state
        .router()
        .encoding(&request.model)
        .unwrap_or_else(|| sluice_tokens::EncodingName::O200kBase.into());
    if sluice_tokens::upper_bound(request, encoding) <= sluice_tokens::INLINE_MAX {
        sluice_tokens::count_chat(request, encoding).tokens
    } else {
        sluice_tokens::count_chat_offloaded(Arc::new(request.clone()), encoding)
            .await
            .tokens
    }
}

/// The usage of one answer, at `debug`: the ledger is the record of usage, and a second `info` line per
/// request (next to the access line) cost about 5% of the gateway's CPU under load.
fn log_usage(usage: Option<&TokenUsage>, interrupted: bool) {
    match usage {
        Some(u) => tracing::debug!(
            prompt_tokens = u.prompt_tokens(),
            completion_tokens = u.output,
            interrupted,
            "usage"
        ),
        None => tracing::debug!(interrupted, "usage not reported by the upstream"),
    }
}

/// Where the client's stream is. The ledger entry travels with it: written when the stream ends, or
/// when the body is dropped because the client went away.
enum SseState {
    Open(Box<Entry>),
    Closed,
}

/// The client's event stream. Chunks are framed and sent as they arrive, one at a time: nothing is
/// buffered. The upstream's usage-only chunk is dropped unless the client asked for it. A stream that
/// ends cleanly gets `data: [DONE]`; one that breaks gets an error event and no `[DONE]`, so a cut
/// answer never looks complete. Dropping the body (the client went away) drops the upstream stream,
/// which closes the upstream connection and so cancels the upstream request.
fn sse_response(events: EventStream, forward_usage: bool, entry: Entry) -> Response {
    let span = tracing::Span::current();
    let start = SseState::Open(Box::new(entry));
    let frames = futures_util::stream::unfold((events, start), move |(mut events, state)| {
        let span = span.clone();
        async move {
            let SseState::Open(mut entry) = state else {
                return None;
            };
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        if let Some(reported) = event.usage {
                            entry.observe(reported, event.estimated);
                        }
                        if event.usage_only && !forward_usage {
                            continue;
                        }
                        return Some((
                            Ok::<Bytes, Infallible>(data_frame(&event.data)),
                            (events, SseState::Open(entry)),
                        ));
                    }
                    Some(Err(err)) => {
                        span.in_scope(|| {
                            tracing::warn!(error = %err, detail = ?err, "upstream stream broke after the first byte");
                            log_usage(entry.usage(), true);
                        });
                        // The answer is incomplete: recorded as the gateway error it is, with the usage so far.
                        entry.finish(502);
                        return Some((Ok(error_frame(&err)), (events, SseState::Closed)));
                    }
                    None => {
                        span.in_scope(|| log_usage(entry.usage(), false));
                        entry.finish(200);
                        return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), (events, SseState::Closed)));
                    }
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies in front of the gateway not to buffer the stream either.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

fn data_frame(data: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(data.len() + 8);
    frame.put_slice(b"data: ");
    frame.put_slice(data);
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// The error event that ends a broken stream, in the shape OpenAI's SDKs raise as an API error.
fn error_frame(err: &ProviderError) -> Bytes {
    let (code, message) = match err {
        ProviderError::Timeout { after, .. } => (
            "upstream_timeout",
            format!(
                "The upstream stopped sending for {} ms; the answer is incomplete.",
                after.as_millis()
            ),
        ),
        ProviderError::Protocol { .. } => (
            "upstream_error",
            "The upstream sent a malformed event; the answer is incomplete.".to_owned(),
        ),
        _ => (
            "upstream_error",
            "The upstream connection broke; the answer is incomplete.".to_owned(),
        ),
    };
    let body = ErrorBody::new("server_error", message, None, Some(code.to_owned()));
    data_frame(&body.to_bytes())
}
