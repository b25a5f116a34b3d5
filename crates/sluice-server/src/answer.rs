//! Running an operation through the pipeline and writing what comes back: a JSON body or an event stream
//! with the gateway's headers, or the error in OpenAI's shape, recorded with the status it answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use sluice_api::ErrorBody;
use sluice_pipeline::{Answer, AnswerBody, Caller, Metered, Operation, PipelineError, TenantState};
use sluice_protocols::FailureKind;
use sluice_providers::ProviderError;
use sluice_router::RouteError;

use crate::AppState;
use crate::error::ApiError;
use crate::event_body::{Frames, ReadyFrames, StreamFrames};

static X_SLUICE_PROVIDER: HeaderName = HeaderName::from_static("x-sluice-provider");
static X_SLUICE_ATTEMPTS: HeaderName = HeaderName::from_static("x-sluice-attempts");
static X_SLUICE_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-sluice-dropped-params");
/// Looked up by a built name: a `&str` lookup checks and parses the name on every request.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `x-request-id`, as the request id layer left it.
pub(crate) fn client_request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// The error shape of the protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `{"error": {"message", "type", "param", "code"}}`: chat completions, the Responses API.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`: the Messages API.
    Anthropic,
}

/// Runs `operation` for `caller` and answers in OpenAI's format; a stream drops the usage-only chunk
/// unless `forward_usage`.
pub(crate) async fn run<O: Operation>(
    state: &AppState,
    caller: &Caller,
    operation: &O,
    forward_usage: bool,
) -> Response {
    let mut response = match answer(state, caller, operation, Shape::OpenAi).await {
        Ok(answer) => respond(answer, forward_usage),
        Err(response) => response,
    };
    add_tenant_headers(response.headers_mut(), caller.principal.tenant.as_ref());
    response
}

/// Runs `operation` for `caller` through the pipeline. A refusal comes back as the error answer in
/// `shape`, already recorded with its status (the caller adds the tenant's headers).
pub(crate) async fn answer<O: Operation>(
    state: &AppState,
    caller: &Caller,
    operation: &O,
    shape: Shape,
) -> Result<Answer, Response> {
    state.pipeline().run(caller, operation).await.map_err(|refused| {
        let (status, response) = refusal_response(&refused.error, shape);
        drop(refused.record(status.as_u16()));
        response
    })
}

fn respond(answer: Answer, forward_usage: bool) -> Response {
    let Answer {
        body,
        provider,
        attempts,
        dropped,
        ..
    } = answer;
    let mut response = match body {
        AnswerBody::Complete { body, .. } => json_body(body),
        AnswerBody::Stream(events) => sse_response(events, forward_usage),
    };
    add_answer_headers(response.headers_mut(), &provider, attempts, &dropped);
    response
}

/// A 200 with a JSON body.
pub(crate) fn json_body(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.headers_mut() = answer_headers();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An answer's header map, with room for every header the gateway and its layers add: grown from empty,
/// it was rehashed twice on the way (about a thousand instructions a request).
fn answer_headers() -> HeaderMap {
    HeaderMap::with_capacity(16)
}

/// The gateway's headers on a served answer: who answered, after how many calls, what was dropped.
pub(crate) fn add_answer_headers(headers: &mut HeaderMap, provider: &str, attempts: u32, dropped: &[String]) {
    add_route_headers(headers, provider, attempts);
    if !dropped.is_empty()
        && let Ok(value) = HeaderValue::from_str(&dropped.join(", "))
    {
        headers.insert(X_SLUICE_DROPPED_PARAMS.clone(), value);
    }
}

/// A refusal as an answer, with the attempts made when there were some (they explain a slow error).
fn refusal_response(error: &PipelineError, shape: Shape) -> (StatusCode, Response) {
    let tried = match error {
        PipelineError::Route(err) => match err.as_ref() {
            RouteError::Upstream { provider, attempts, .. } => Some((Arc::clone(provider), *attempts)),
            RouteError::Exhausted { attempts, .. } if *attempts > 0 => Some((Arc::from("none"), *attempts)),
            _ => None,
        },
        _ => None,
    };
    let error = ApiError::from_pipeline(error);
    let status = error.status;
    let mut response = match shape {
        Shape::OpenAi => error.into_response(),
        Shape::Anthropic => error.into_anthropic_response(),
    };
    if let Some((provider, attempts)) = tried {
        add_route_headers(response.headers_mut(), &provider, attempts);
    }
    (status, response)
}

fn add_route_headers(headers: &mut HeaderMap, provider: &str, attempts: u32) {
    if let Ok(value) = HeaderValue::from_str(provider) {
        headers.insert(X_SLUICE_PROVIDER.clone(), value);
    }
    headers.insert(X_SLUICE_ATTEMPTS.clone(), number_value(u64::from(attempts)));
}

/// The tenant's `x-ratelimit-*` headers, in OpenAI's format, when the tenant has rate limits.
pub(crate) fn add_tenant_headers(headers: &mut HeaderMap, tenant: Option<&Arc<TenantState>>) {
    let Some(view) = tenant.and_then(|t| t.rate_view()) else {
        return;
    };
    let limits = [
        (&RATE_HEADERS[0], view.rpm, view.remaining_requests),
        (&RATE_HEADERS[1], view.tpm, view.remaining_tokens),
    ];
    headers.reserve(6);
    for ([limit_name, remaining_name, reset_name], limit, remaining) in limits {
        let (Some(limit), Some(remaining)) = (limit, remaining) else {
            continue;
        };
        let missing = limit.saturating_sub(remaining) as f64;
        headers.insert(limit_name.clone(), number_value(limit));
        headers.insert(remaining_name.clone(), number_value(remaining));
        let mut reset = [0u8; 48];
        let written = go_duration(&mut reset, missing * 60.0 / limit.max(1) as f64);
        if let Ok(reset) = HeaderValue::from_bytes(written) {
            headers.insert(reset_name.clone(), reset);
        }
    }
}

/// The limit, remaining and reset headers of requests, then of tokens: names built once, not checked
/// again on every answer.
static RATE_HEADERS: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

/// Seconds in the duration format OpenAI's reset headers use: `20ms`, `1s`, `6m0s`.
fn go_duration(out: &mut [u8; 48], seconds: f64) -> &[u8] {
    // Digits from itoa rather than `write!`, whose formatting machinery cost more than the rest of the
    // tenant's headers. 48 bytes hold two u64s and their units.
    let (minutes, value, unit): (Option<u64>, u64, &[u8]) = if seconds < 1.0 {
        (None, (seconds * 1000.0).ceil() as u64, b"ms")
    } else {
        match seconds.ceil() as u64 {
            whole @ 0..60 => (None, whole, b"s"),
            whole => (Some(whole / 60), whole % 60, b"s"),
        }
    };
    let mut len = 0;
    let mut digits = itoa::Buffer::new();
    for (number, unit) in minutes.map(|m| (m, &b"m"[..])).into_iter().chain([(value, unit)]) {
        for part in [digits.format(number).as_bytes(), unit] {
            out[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
    }
    &out[..len]
}

/// A number as a header value in one allocation; `HeaderValue::from(u64)` makes two (a growable
/// buffer, then a shared header because that buffer is larger than its digits).
pub(crate) fn number_value(n: u64) -> HeaderValue {
    HeaderValue::from_str(itoa::Buffer::new().format(n)).unwrap_or_else(|_| HeaderValue::from(n))
}

/// The client's event stream. Chunks are framed and sent as they arrive; nothing is held back (those that
/// arrive together leave in one HTTP chunk, see [`ReadyFrames`]). The upstream's usage-only chunk is
/// dropped unless the client asked for it. A stream that ends cleanly gets `data: [DONE]`; one that
/// breaks gets an error event and no `[DONE]`, so a cut answer never looks complete. Dropping the body
/// (the client went away) drops the metered stream, which records what was billed and drops the
/// upstream stream, closing its connection: the upstream request is cancelled.
fn sse_response(events: Box<Metered>, forward_usage: bool) -> Response {
    event_body(ReadyFrames::new(ChatFrames {
        events: Some(events),
        forward_usage,
    }))
}

/// The client's SSE frames of a chat stream (see [`sse_response`]), each written straight into the chunk
/// being built.
struct ChatFrames {
    /// Dropped, which records the answer, once the last frame is out.
    events: Option<Box<Metered>>,
    forward_usage: bool,
}

impl Frames for ChatFrames {
    fn poll_append(&mut self, cx: &mut Context<'_>, chunk: &mut BytesMut) -> Poll<bool> {
        let Some(events) = self.events.as_mut() else {
            return Poll::Ready(false);
        };
        loop {
            match std::task::ready!(events.poll_next_unpin(cx)) {
                Some(Ok(event)) if event.usage_only && !self.forward_usage => continue,
                Some(Ok(event)) => {
                    put_data_frame(chunk, &event.data);
                    return Poll::Ready(true);
                }
                Some(Err(err)) => {
                    log_broken(events, &err);
                    put_error_frame(chunk, &err);
                }
                None => chunk.extend_from_slice(b"data: [DONE]\n\n"),
            }
            self.events = None;
            return Poll::Ready(true);
        }
    }
}

/// A 200 event stream of `frames`, with the headers every stream gets.
pub(crate) fn event_stream<S>(frames: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    event_body(ReadyFrames::new(StreamFrames::new(frames)))
}

fn event_body<F: Frames + Unpin + Send + 'static>(body: ReadyFrames<F>) -> Response {
    let mut response = Response::new(Body::new(body));
    *response.headers_mut() = answer_headers();
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

/// What broke a stream, for the inbound protocols' error events: the kind and a message safe to show.
pub(crate) fn stream_failure(err: &ProviderError) -> (FailureKind, String) {
    let kind = match err {
        ProviderError::RateLimited { .. } | ProviderError::QuotaExhausted { .. } => FailureKind::RateLimited,
        ProviderError::Overloaded { .. } => FailureKind::Overloaded,
        _ => FailureKind::Upstream,
    };
    (kind, failure_message(err).1)
}

/// Appends `data` as one SSE event, `data: ...\n\n`.
fn put_data_frame(chunk: &mut BytesMut, data: &[u8]) {
    chunk.reserve(data.len() + 8);
    chunk.put_slice(b"data: ");
    chunk.put_slice(data);
    chunk.put_slice(b"\n\n");
}

/// Appends the error event that ends a broken stream, in the shape OpenAI's SDKs raise as an API error.
fn put_error_frame(chunk: &mut BytesMut, err: &ProviderError) {
    let (code, message) = failure_message(err);
    let body = ErrorBody::new("server_error", message, None, Some(code.to_owned()));
    put_data_frame(chunk, &body.to_bytes());
}

/// The code and message telling a client why its stream broke.
fn failure_message(err: &ProviderError) -> (&'static str, String) {
    match err {
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
    }
}

/// Logs a stream that broke after its first byte, inside the request's span.
pub(crate) fn log_broken(events: &Metered, err: &ProviderError) {
    events.span().in_scope(|| {
        tracing::warn!(error = %err, kind = err.kind(), "upstream stream broke after the first byte");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset(seconds: f64) -> String {
        let mut out = [0u8; 48];
        String::from_utf8(go_duration(&mut out, seconds).to_vec()).unwrap()
    }

    #[test]
    fn reset_durations_are_written_as_openai_writes_them() {
        assert_eq!(reset(0.0), "0ms");
        assert_eq!(reset(0.0201), "21ms");
        assert_eq!(reset(1.0), "1s");
        assert_eq!(reset(58.2), "59s");
        assert_eq!(reset(59.5), "1m0s");
        assert_eq!(reset(60.0), "1m0s");
        assert_eq!(reset(361.0), "6m1s");
        assert_eq!(reset(f64::MAX), format!("{}m{}s", u64::MAX / 60, u64::MAX % 60));
    }

    #[test]
    fn numbers_become_their_digits() {
        for n in [0, 7, 1_000_000_000, u64::MAX] {
            assert_eq!(number_value(n), HeaderValue::from(n));
        }
    }
}
