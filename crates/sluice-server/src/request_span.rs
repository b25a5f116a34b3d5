//! Each request's tracing span and its access line.
//!
//! tower-http's `TraceLayer` did this, and also wrapped every answer's body to enter the span and read
//! the clock on each of its frames: for a stream, a span enter and exit and a `clock_gettime` per chunk,
//! for a log line written once when the head is ready. Here the span covers the handler, which is where
//! the request's own log lines come from; what runs later while the body is read (a stream's metering,
//! its ledger entry) keeps the span itself (`sluice_pipeline::Metered`, the SSE writers).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::Response;
use tower::{Layer, Service};
use tracing::instrument::{Instrument, Instrumented};

use crate::{answer, auth};

/// Wraps a service in [`RequestSpan`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestSpanLayer;

impl<S> Layer<S> for RequestSpanLayer {
    type Service = RequestSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSpan { inner }
    }
}

/// Runs each request's handler in an `info` span named `request` (method, path, request id) and logs
/// the access line when the response head is ready: its status, latency and, on authenticated routes,
/// the caller. A server error (5xx) also gets an `error` line, as tower-http's default did.
#[derive(Debug, Clone)]
pub(crate) struct RequestSpan<S> {
    inner: S,
}

impl<S> Service<Request> for RequestSpan<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let request_id = answer::client_request_id(request.headers()).unwrap_or("");
        let span = tracing::info_span!(
            "request",
            method = request.method().as_str(),
            path = request.uri().path(),
            request_id,
        );
        let started = Instant::now();
        let handler = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Answered {
            handler: handler.instrument(span),
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's future, in its request's span; logs the access line when it is ready.
    pub(crate) struct Answered<F> {
        #[pin]
        handler: Instrumented<F>,
        started: Instant,
    }
}

impl<F, E> Future for Answered<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = ready!(this.handler.as_mut().poll(cx));
        if let Ok(response) = &result {
            let _entered = this.handler.span().enter();
            access_line(response, this.started.elapsed());
        }
        Poll::Ready(result)
    }
}

/// The line logged at `info` when a response's head is ready.
fn access_line(response: &Response, latency: Duration) {
    let caller = response.extensions().get::<auth::CallerName>().map(|name| &*name.0);
    let status = response.status();
    let mut text = [0u8; 24];
    let latency = latency_text(&mut text, latency);
    tracing::info!(latency, status = status.as_u16(), caller, "finished processing request");
    if status.is_server_error() {
        tracing::error!(
            classification = %format_args!("Status code: {status}"),
            latency,
            "response failed"
        );
    }
}

/// The latency as tower-http wrote it, "12 ms", built in `out`: through `format_args!` it took the
/// formatting machinery and the log's escaping writer on every request.
fn latency_text(out: &mut [u8; 24], latency: Duration) -> &str {
    let mut digits = itoa::Buffer::new();
    // At most 20 digits, and " ms".
    let digits = digits
        .format(u64::try_from(latency.as_millis()).unwrap_or(u64::MAX))
        .as_bytes();
    let end = digits.len() + 3;
    out[..digits.len()].copy_from_slice(digits);
    out[digits.len()..end].copy_from_slice(b" ms");
    std::str::from_utf8(&out[..end]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt as _;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// An event's level, message and the span it was in (its name and fields).
    type Line = (tracing::Level, String, Option<String>);

    /// Records each event's message, level and the span it was in.
    #[derive(Clone, Default)]
    struct Recorder {
        lines: Arc<Mutex<Vec<Line>>>,
        spans: Arc<Mutex<Vec<String>>>,
        current: Arc<Mutex<Vec<u64>>>,
    }

    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    struct SpanFields(String);

    impl Visit for SpanFields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={value:?};", field.name()));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push_str(&format!("{}={value};", field.name()));
        }
    }

    impl Subscriber for Recorder {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut fields = SpanFields(format!("{}:", span.metadata().name()));
            span.record(&mut fields);
            let mut spans = self.spans.lock().unwrap();
            spans.push(fields.0);
            Id::from_u64(spans.len() as u64)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            let span = self
                .current
                .lock()
                .unwrap()
                .last()
                .map(|id| self.spans.lock().unwrap()[*id as usize - 1].clone());
            self.lines
                .lock()
                .unwrap()
                .push((*event.metadata().level(), message.0, span));
        }
        fn enter(&self, span: &Id) {
            self.current.lock().unwrap().push(span.into_u64());
        }
        fn exit(&self, _: &Id) {
            self.current.lock().unwrap().pop();
        }
    }

    async fn answer(status: http::StatusCode) -> Vec<Line> {
        let recorder = Recorder::default();
        let _default = tracing::subscriber::set_default(recorder.clone());
        let service = RequestSpanLayer.layer(tower::service_fn(move |_request: Request| async move {
            tracing::info!("inside the handler");
            let mut response = Response::new(axum::body::Body::empty());
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }));
        let request = http::Request::post("/v1/chat/completions")
            .header("x-request-id", "r-1")
            .body(axum::body::Body::empty())
            .unwrap();
        service.oneshot(request).await.unwrap();
        recorder.lines.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn the_handler_and_the_access_line_are_in_the_request_span() {
        let lines = answer(http::StatusCode::OK).await;
        let span = "request:method=POST;path=/v1/chat/completions;request_id=r-1;";
        assert_eq!(
            lines,
            [
                (
                    tracing::Level::INFO,
                    "inside the handler".to_owned(),
                    Some(span.to_owned())
                ),
                (
                    tracing::Level::INFO,
                    "finished processing request".to_owned(),
                    Some(span.to_owned())
                ),
            ]
        );
    }

    #[test]
    fn latency_text_is_whole_milliseconds_and_a_unit() {
        let mut out = [0u8; 24];
        assert_eq!(latency_text(&mut out, Duration::from_micros(999)), "0 ms");
        assert_eq!(latency_text(&mut out, Duration::from_micros(12_700)), "12 ms");
        assert_eq!(latency_text(&mut out, Duration::MAX), "18446744073709551615 ms");
    }

    #[tokio::test]
    async fn a_server_error_also_gets_an_error_line() {
        let lines = answer(http::StatusCode::BAD_GATEWAY).await;
        let levels: Vec<_> = lines
            .iter()
            .map(|(level, message, _)| (*level, message.as_str()))
            .collect();
        assert_eq!(
            levels,
            [
                (tracing::Level::INFO, "inside the handler"),
                (tracing::Level::INFO, "finished processing request"),
                (tracing::Level::ERROR, "response failed"),
            ]
        );
    }
}
