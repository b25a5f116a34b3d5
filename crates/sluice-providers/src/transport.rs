//! What every HTTP adapter does the same way: serialise, send within the first-byte timeout, read a
//! bounded body within the idle timeout, and drive an SSE stream through [`crate::sse`]'s parser and a
//! vendor's translator.

use std::collections::VecDeque;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use crate::client::UpstreamBody;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::Response;
use http::header::HeaderValue;
use http_body_util::BodyDataStream;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::UpstreamRequest;
use crate::error::error_chain;
use crate::sse::SseParser;
use crate::{EventStream, ProviderError, StreamEvent, TimeoutPhase, UpstreamKey};

/// How long to wait for each phase of an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection: what the shared `UpstreamClient` is built with
    /// (`ClientSettings::connect_timeout`), and reports a connect timeout with.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Between two reads of a body or stream.
    pub idle: Duration,
}

/// The largest non-streaming response body accepted from an upstream.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The request body as JSON.
pub(crate) fn json_body<T: Serialize>(value: &T) -> Result<Vec<u8>, ProviderError> {
    // Written into a buffer the size of the thread's last body: one allocation for a run of similar
    // requests, where growing from `to_vec`'s 128 bytes took five (each a copy) for a 2 KB prompt.
    thread_local!(static LAST_LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
    let hint = LAST_LEN.get().clamp(256, 256 * 1024);
    let mut body = Vec::with_capacity(hint + hint / 8);
    serde_json::to_writer(&mut body, value).map_err(|e| ProviderError::Protocol {
        detail: format!("could not serialise the request: {e}"),
    })?;
    LAST_LEN.set(body.len());
    Ok(body)
}

/// A key after `prefix` (`"Bearer "`, or none) as a header value, marked sensitive so no debug output
/// shows it.
pub(crate) fn key_header(key: &UpstreamKey, prefix: &str) -> Result<HeaderValue, ProviderError> {
    let mut text = String::with_capacity(prefix.len() + key.secret().len());
    text.push_str(prefix);
    text.push_str(key.secret());
    let mut value = HeaderValue::try_from(text).map_err(|_| ProviderError::Authentication {
        status: 401,
        detail: format!("key {} holds characters a header cannot carry", key.id()),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The `accept` header of a call.
pub(crate) fn accept(streaming: bool) -> HeaderValue {
    HeaderValue::from_static(if streaming {
        "text/event-stream"
    } else {
        "application/json"
    })
}

/// Sends a request, waiting at most `first_byte` for the response head.
pub(crate) async fn send(
    request: UpstreamRequest,
    timeouts: &Timeouts,
) -> Result<Response<UpstreamBody>, ProviderError> {
    // A traced request carries its trace upstream (W3C trace context), this attempt as the parent.
    let request = match sluice_trace::upstream_traceparent() {
        Some(traceparent) => request.header("traceparent", traceparent),
        None => request,
    };
    tokio::time::timeout(timeouts.first_byte, request.send())
        .await
        .map_err(|_| ProviderError::Timeout {
            phase: TimeoutPhase::FirstByte,
            after: timeouts.first_byte,
        })?
}

/// A response's body as a stream of its bytes.
pub(crate) fn body_stream(response: Response<UpstreamBody>) -> BodyDataStream<UpstreamBody> {
    BodyDataStream::new(response.into_body())
}

/// Reads a whole body, waiting at most `idle` between reads and accepting at most `cap` bytes.
pub(crate) async fn read_body(
    response: Response<UpstreamBody>,
    idle: Duration,
    cap: usize,
) -> Result<Bytes, ProviderError> {
    let mut stream = body_stream(response);
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    loop {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| ProviderError::Timeout {
                phase: TimeoutPhase::Idle,
                after: idle,
            })?;
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                return Err(ProviderError::Truncated {
                    detail: error_chain(&e),
                });
            }
        };
        let total = first.as_ref().map_or(0, Bytes::len) + rest.len() + chunk.len();
        if total > cap {
            return Err(ProviderError::Protocol {
                detail: format!("the response body is larger than {cap} bytes"),
            });
        }
        // Most bodies arrive in one read: keep that buffer as it is instead of copying it.
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(previous) => {
                rest.extend_from_slice(&previous);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// Whether a vendor's stream goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// More events may come.
    Continue,
    /// The vendor's end marker arrived: the answer is whole.
    End,
}

/// One vendor's stream translation: a pure function of one SSE event's data and the state it keeps.
pub(crate) trait SseTranslator: Send + 'static {
    /// Translates one event, appending the OpenAI chunks it means to `out`.
    fn event(&mut self, data: String, out: &mut VecDeque<StreamEvent>) -> Result<Flow, ProviderError>;

    /// The connection closed without an end marker: append what a whole answer still owes, or say the
    /// answer is incomplete.
    fn close(&mut self, out: &mut VecDeque<StreamEvent>) -> Result<(), ProviderError>;
}

/// The client-facing chunks of an SSE body translated by `translator`, waiting at most `idle` for each
/// event. After an error item the stream ends, so a cut answer never looks complete: a read error, an
/// idle timeout, a malformed event, or a line or event past [`crate::sse::MAX_EVENT_BYTES`].
pub(crate) fn sse_events<S, B, E, T>(body: S, idle: Duration, translator: T) -> EventStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    T: SseTranslator + Unpin,
{
    Box::pin(Driver {
        body: Box::pin(body),
        idle,
        deadline: None,
        timer: Box::pin(tokio::time::sleep(idle)),
        parser: SseParser::new(),
        events: VecDeque::new(),
        failed: None,
        body_ended: false,
        translator,
        pending: VecDeque::new(),
        ended: false,
    })
}

/// An SSE body on its way through the parser and a translator. A stream written by hand rather than
/// with `unfold`, which moved this state into and out of a future for every chunk.
struct Driver<S, T> {
    body: std::pin::Pin<Box<S>>,
    idle: Duration,
    /// When the event being waited for is overdue: set when the wait starts, cleared when it ends.
    deadline: Option<Instant>,
    /// The idle timer, set once and moved on only when it fires before the current event's deadline:
    /// re-arming a timer for every read cost about 550 instructions a read.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    parser: SseParser,
    /// Events' data the parser dispatched and the translator has not had yet.
    events: VecDeque<String>,
    /// The parser's error, told once the events before it are through.
    failed: Option<ProviderError>,
    body_ended: bool,
    translator: T,
    pending: VecDeque<StreamEvent>,
    ended: bool,
}

impl<S, B, E, T> Stream for Driver<S, T>
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    T: SseTranslator + Unpin,
{
    type Item = Result<StreamEvent, ProviderError>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        let d = self.get_mut();
        loop {
            if let Some(event) = d.pending.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if d.ended {
                return Poll::Ready(None);
            }
            let result = match std::task::ready!(d.poll_event(cx)) {
                Ok(Some(data)) => match d.translator.event(data, &mut d.pending) {
                    Ok(Flow::Continue) => Ok(()),
                    Ok(Flow::End) => {
                        d.ended = true;
                        Ok(())
                    }
                    Err(err) => Err(err),
                },
                Ok(None) => {
                    d.ended = true;
                    d.translator.close(&mut d.pending)
                }
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                d.ended = true;
                d.pending.clear();
                return Poll::Ready(Some(Err(err)));
            }
        }
    }
}

impl<S, B, E, T> Driver<S, T>
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    /// The body's next item, or `Err` once `deadline` passes first. Deadlines only grow, so a timer that
    /// fires early was set for an earlier event: it is moved to `deadline` and waited on again.
    fn poll_body_by(
        &mut self,
        cx: &mut std::task::Context<'_>,
        deadline: Instant,
    ) -> Poll<Result<Option<Result<B, E>>, ()>> {
        if let Poll::Ready(item) = self.body.as_mut().poll_next(cx) {
            return Poll::Ready(Ok(item));
        }
        loop {
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.timer.deadline() >= deadline => return Poll::Ready(Err(())),
                Poll::Ready(()) => self.timer.as_mut().reset(deadline),
            }
        }
    }

    /// The next event's data, read within `idle` of the wait's start; `None` at the end of the body.
    fn poll_event(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Option<String>, ProviderError>> {
        let result = loop {
            if let Some(data) = self.events.pop_front() {
                break Ok(Some(data));
            }
            if let Some(err) = self.failed.take() {
                break Err(err);
            }
            if self.body_ended {
                break Ok(None);
            }
            let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + self.idle);
            match std::task::ready!(self.poll_body_by(cx, deadline)) {
                Err(()) => {
                    break Err(ProviderError::Timeout {
                        phase: TimeoutPhase::Idle,
                        after: self.idle,
                    });
                }
                Ok(Some(Ok(chunk))) => {
                    if let Err(err) = self.parser.feed(chunk.as_ref(), &mut self.events) {
                        self.failed = Some(err);
                    }
                }
                Ok(Some(Err(e))) => {
                    break Err(ProviderError::Truncated {
                        detail: error_chain(&e),
                    });
                }
                Ok(None) => {
                    self.body_ended = true;
                    if let Err(err) = self.parser.finish() {
                        self.failed = Some(err);
                    }
                }
            }
        };
        self.deadline = None;
        Poll::Ready(result)
    }
}
