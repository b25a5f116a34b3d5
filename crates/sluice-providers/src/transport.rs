//! What every HTTP adapter does the same way: serialise, send within the first-byte timeout, read a
//! bounded body within the idle timeout, and drive an SSE stream through a vendor's translator.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use http::HeaderValue;
use serde::Serialize;

use crate::error::error_chain;
use crate::{EventStream, ProviderError, StreamEvent, TimeoutPhase, UpstreamKey};

/// How long to wait for each phase of an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (set on the shared HTTP client; kept here to report it).
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
    serde_json::to_vec(value).map_err(|e| ProviderError::Protocol {
        detail: format!("could not serialise the request: {e}"),
    })
}

/// A key as a header value, marked sensitive so no debug output shows it.
pub(crate) fn key_header(key: &UpstreamKey) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(key.secret()).map_err(|_| ProviderError::Authentication {
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
    request: reqwest::RequestBuilder,
    timeouts: &Timeouts,
) -> Result<reqwest::Response, ProviderError> {
    tokio::time::timeout(timeouts.first_byte, request.send())
        .await
        .map_err(|_| ProviderError::Timeout {
            phase: TimeoutPhase::FirstByte,
            after: timeouts.first_byte,
        })?
        .map_err(|e| ProviderError::from_transport(&e, timeouts.connect))
}

/// Reads a whole body, waiting at most `idle` between reads and accepting at most `cap` bytes.
pub(crate) async fn read_body(response: reqwest::Response, idle: Duration, cap: usize) -> Result<Bytes, ProviderError> {
    let mut stream = response.bytes_stream();
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

/// The client-facing chunks of an SSE body translated by `translator`, waiting at most `idle` between
/// events. After an error item the stream ends, so a cut answer never looks complete.
pub(crate) fn sse_events<S, B, E, T>(body: S, idle: Duration, translator: T) -> EventStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    T: SseTranslator,
{
    struct Driver<P, T> {
        sse: P,
        translator: T,
        pending: VecDeque<StreamEvent>,
        ended: bool,
    }
    let driver = Driver {
        sse: Box::pin(skip_bom(body).eventsource()),
        translator,
        pending: VecDeque::new(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(driver, move |mut d| async move {
        loop {
            if let Some(event) = d.pending.pop_front() {
                return Some((Ok(event), d));
            }
            if d.ended {
                return None;
            }
            let result = match tokio::time::timeout(idle, d.sse.next()).await {
                Err(_) => Err(ProviderError::Timeout {
                    phase: TimeoutPhase::Idle,
                    after: idle,
                }),
                Ok(Some(Ok(event))) => match d.translator.event(event.data, &mut d.pending) {
                    Ok(Flow::Continue) => Ok(()),
                    Ok(Flow::End) => {
                        d.ended = true;
                        Ok(())
                    }
                    Err(err) => Err(err),
                },
                Ok(Some(Err(e))) => Err(ProviderError::Truncated {
                    detail: error_chain(&e),
                }),
                Ok(None) => {
                    d.ended = true;
                    d.translator.close(&mut d.pending)
                }
            };
            if let Err(err) = result {
                d.ended = true;
                d.pending.clear();
                return Some((Err(err), d));
            }
        }
    }))
}

/// The UTF-8 byte order mark, which the SSE format allows once at the start of a stream.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// A piece of an SSE body as the SSE parser gets it from [`skip_bom`].
enum Piece<B> {
    /// The comment line that starts every stream.
    Comment,
    /// A piece as it came.
    Whole(B),
    /// A piece past its first bytes (a byte order mark).
    From(B, usize),
    /// The start of the stream, gathered while it could still be a byte order mark.
    Owned(Vec<u8>),
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Piece<B> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Piece::Comment => b":\n",
            Piece::Whole(bytes) => bytes.as_ref(),
            Piece::From(bytes, at) => bytes.as_ref().get(*at..).unwrap_or_default(),
            Piece::Owned(bytes) => bytes,
        }
    }
}

/// `body` without the byte order mark it may start with, however its first bytes are cut, and with an
/// empty comment line (which the SSE format ignores) before it.
///
/// eventsource-stream 0.2.3 panics on a stream whose first text starts with U+FEFF: it skips the 3-byte
/// mark as if it were 1 byte, slicing inside a character. So the mark is skipped here, as the SSE format
/// says, and the comment makes sure the parser never sees one at the start: a second mark, which the
/// format treats as part of the first field's name, stays so.
fn skip_bom<S, B, E>(body: S) -> impl Stream<Item = Result<Piece<B>, E>> + Send + 'static
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: Send + 'static,
{
    struct State<S> {
        body: std::pin::Pin<Box<S>>,
        started: bool,
        /// The first bytes while they could be the start of a mark; `None` once decided.
        head: Option<Vec<u8>>,
        ended: bool,
    }
    let state = State {
        body: Box::pin(body),
        started: false,
        head: Some(Vec::new()),
        ended: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if !s.started {
            s.started = true;
            return Some((Ok(Piece::Comment), s));
        }
        if s.ended {
            return None;
        }
        let piece = match s.body.next().await {
            Some(Ok(chunk)) => match s.head.take() {
                None => Piece::Whole(chunk),
                Some(held) if held.is_empty() && chunk.as_ref().len() >= BOM.len() => {
                    if chunk.as_ref().starts_with(BOM) {
                        Piece::From(chunk, BOM.len())
                    } else {
                        Piece::Whole(chunk)
                    }
                }
                Some(mut held) => {
                    held.extend_from_slice(chunk.as_ref());
                    if held.len() < BOM.len() && BOM.starts_with(&held) {
                        s.head = Some(held);
                        Piece::Owned(Vec::new())
                    } else {
                        if held.starts_with(BOM) {
                            held.drain(..BOM.len());
                        }
                        Piece::Owned(held)
                    }
                }
            },
            Some(Err(e)) => return Some((Err(e), s)),
            None => {
                // A body that ends inside what could have been a mark: hand those bytes on, for the
                // parser to report them as the incomplete UTF-8 they are.
                s.ended = true;
                match s.head.take() {
                    Some(held) if !held.is_empty() => Piece::Owned(held),
                    _ => return None,
                }
            }
        };
        Some((Ok(piece), s))
    })
}
