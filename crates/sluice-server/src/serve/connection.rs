//! One client connection: served by hyper, watched for slow clients, its requests counted.
//!
//! The watcher runs in the connection's own task, beside hyper's connection future, and sleeps until the
//! earliest of the connection's deadlines:
//! - no request in flight and the bytes of a request head arriving (HTTP/1.1): the head must be whole
//!   within `header_timeout` of its first byte, else the connection is closed;
//! - a new connection that has not started a request (either protocol): `header_timeout` from opening;
//! - no request in flight after one was served: `keep_alive_timeout` from the last answer's end, then a
//!   graceful close (HTTP/2: GOAWAY);
//! - a write waiting on a client that reads nothing: `send_timeout`, then the connection is cut.
//!
//! Requests are counted where hyper calls the service and where it drops the answer's body, so an
//! HTTP/2 stream (run on a task of its own) is counted like an HTTP/1.1 request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use super::held::HeldWrites;
use super::{PeerAddr, Shared};
use crate::error::ApiError;

/// After a graceful close for idleness, how long the connection may take to go before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one connection until it ends, a deadline passes, or the server stops and it drains.
pub(super) async fn run(
    builder: Arc<auto::Builder<TokioExecutor>>,
    tcp: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) {
    let stats = Arc::clone(&shared.stats);
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let _open = OnDrop(move || {
        stats.connections.fetch_sub(1, Ordering::Relaxed);
    });
    let settings = shared.settings;
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched {
        tcp,
        state: Arc::clone(&state),
        stats: Arc::clone(&shared.stats),
        first_read: true,
        held: HeldWrites::default(),
    });
    let service = RequestService {
        app,
        peer,
        shared: Arc::clone(&shared),
        state: Arc::clone(&state),
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *stopping.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    // Set once the connection was asked to close for idleness: past it, an idle connection is dropped.
    let mut closing: Option<Instant> = None;
    loop {
        let deadline = state.deadline(&settings, closing);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, err = %err, "connection ended with an error");
                }
                return;
            }
            changed = stopping.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = state.changed.notified() => {}
            () = sleep_until(deadline) => match state.expired(&settings, closing, Instant::now()) {
                None => {}
                // Nothing in flight (a request that slipped in after the close began is served first).
                Some(Expiry::Closing) => return,
                Some(Expiry::Idle) => {
                    tracing::debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
                Some(expiry) => {
                    shared.stats.connections_timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, ?expiry, "closing a connection: its client is too slow");
                    return;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// A request head not whole in time, or a new connection that sent none.
    Header,
    /// No request in flight for the keep-alive time.
    Idle,
    /// The client took none of its answer for the send time.
    Send,
    /// The graceful close for idleness ran out of time.
    Closing,
}

/// What the watcher knows of a connection. Times are milliseconds since `opened`, plus one, so that zero
/// means "not set".
struct ConnState {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Whether a request has started on this connection.
    served: AtomicBool,
    /// When the last request in flight ended.
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived, while no request was in flight.
    head_since: AtomicU64,
    /// When a write began to wait on the client.
    blocked_since: AtomicU64,
    /// HTTP/2: its frames (pings, settings) arrive between requests, so bytes do not start a head.
    h2: AtomicBool,
    /// Wakes the watcher when a deadline may have moved earlier.
    changed: Notify,
}

impl ConnState {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            blocked_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_mark(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn at(&self, mark: u64) -> Instant {
        self.opened + Duration::from_millis(mark.saturating_sub(1))
    }

    /// The earliest time something may expire; `None` while nothing can (a request in flight whose
    /// answer is not waiting on the client).
    fn deadline(&self, settings: &super::ServeSettings, closing: Option<Instant>) -> Option<Instant> {
        let blocked = self.blocked_since.load(Ordering::Acquire);
        let send = (blocked != 0).then(|| self.at(blocked) + settings.send_timeout);
        let idle = if self.in_flight.load(Ordering::Acquire) > 0 {
            None
        } else if let Some(closing) = closing {
            Some(closing)
        } else {
            let head = self.head_since.load(Ordering::Acquire);
            if head != 0 {
                Some(self.at(head) + settings.header_timeout)
            } else if !self.served.load(Ordering::Acquire) {
                Some(self.opened + settings.header_timeout)
            } else {
                Some(self.at(self.idle_since.load(Ordering::Acquire)) + settings.keep_alive_timeout)
            }
        };
        match (send, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What expired by `now`, if anything.
    fn expired(&self, settings: &super::ServeSettings, closing: Option<Instant>, now: Instant) -> Option<Expiry> {
        let blocked = self.blocked_since.load(Ordering::Acquire);
        if blocked != 0 && self.at(blocked) + settings.send_timeout <= now {
            return Some(Expiry::Send);
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if let Some(closing) = closing {
            return (closing <= now).then_some(Expiry::Closing);
        }
        let head = self.head_since.load(Ordering::Acquire);
        if head != 0 {
            return (self.at(head) + settings.header_timeout <= now).then_some(Expiry::Header);
        }
        if !self.served.load(Ordering::Acquire) {
            return (self.opened + settings.header_timeout <= now).then_some(Expiry::Header);
        }
        let idle = self.idle_since.load(Ordering::Acquire);
        (self.at(idle) + settings.keep_alive_timeout <= now).then_some(Expiry::Idle)
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        self.head_since.store(0, Ordering::Release);
    }

    fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now_mark(), Ordering::Release);
            self.changed.notify_one();
        }
    }
}

/// The TCP stream, telling the watcher when a request head starts and when writes wait on the client,
/// and consolidating an answer's flushes (`held.rs`).
struct Watched {
    tcp: TcpStream,
    state: Arc<ConnState>,
    stats: Arc<super::ServeStats>,
    first_read: bool,
    held: HeldWrites,
}

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI *";

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            let this = &mut *self;
            this.held.read_some();
            if this.first_read {
                this.first_read = false;
                if buf.filled()[before..].starts_with(H2_PREFACE) {
                    this.state.h2.store(true, Ordering::Release);
                }
            }
            let state = &this.state;
            if !state.h2.load(Ordering::Relaxed)
                && state.in_flight.load(Ordering::Acquire) == 0
                && state.head_since.load(Ordering::Relaxed) == 0
            {
                state.head_since.store(state.now_mark(), Ordering::Release);
                state.changed.notify_one();
            }
        }
        result
    }
}

impl Watched {
    fn track_write<T>(&self, result: &Poll<std::io::Result<T>>) {
        let state = &self.state;
        match result {
            Poll::Pending => {
                if state.blocked_since.load(Ordering::Relaxed) == 0 {
                    state.blocked_since.store(state.now_mark(), Ordering::Release);
                    state.changed.notify_one();
                }
            }
            Poll::Ready(_) => {
                if state.blocked_since.load(Ordering::Relaxed) != 0 {
                    state.blocked_since.store(0, Ordering::Release);
                }
            }
        }
    }
}

impl Watched {
    /// Writes what is held, until the socket takes it all or would block.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.held.pending().is_empty() {
            let result = Pin::new(&mut self.tcp).poll_write(cx, self.held.pending());
            self.track_write(&result);
            match result {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.stats.client_writes.fetch_add(1, Ordering::Relaxed);
                    self.held.sent(n);
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes `bufs` to the socket now (after anything held).
    fn poll_write_now(&mut self, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_write_held(cx))?;
        let result = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.track_write(&result);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            self.stats.client_writes.fetch_add(1, Ordering::Relaxed);
            self.held.wrote();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let len = bufs.iter().map(|buf| buf.len()).sum();
        if self.held.holds(len) {
            return Poll::Ready(Ok(self.held.hold(bufs)));
        }
        self.poll_write_now(cx, bufs)
    }

    /// No: hyper then copies what it writes into one buffer, where with vectored writes it queues the
    /// pieces and flushes after 16 of them (a stream's event is three: its chunk size, its data, a line
    /// break), so a burst of events went out in several writes. Every piece is small, and held writes
    /// are copied anyway.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.held.defer_flush(cx) {
            return Poll::Pending;
        }
        std::task::ready!(self.poll_write_held(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_write_held(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Hands each request to the app, unless too many are in flight.
#[derive(Clone)]
struct RequestService {
    app: axum::Router,
    peer: SocketAddr,
    shared: Arc<Shared>,
    state: Arc<ConnState>,
}

type AnswerFuture = Pin<Box<dyn Future<Output = Result<Response<CountedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<CountedBody>;
    type Error = Infallible;
    type Future = AnswerFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        // Health probes and metrics answer whatever the load: they are what tells an operator about it.
        let probe = matches!(request.uri().path(), "/healthz" | "/metrics");
        let Some(counted) = InFlight::enter(&self.shared, &self.state, probe) else {
            return Box::pin(std::future::ready(Ok(overloaded(&self.shared))));
        };
        request
            .extensions_mut()
            .insert::<PeerAddr>(axum::extract::ConnectInfo(self.peer));
        request.extensions_mut().insert(Arc::clone(&self.shared.stats));
        let answer = self.app.clone().oneshot(request.map(Body::new));
        Box::pin(async move {
            let response = match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| CountedBody {
                body,
                counted: Some(counted),
            }))
        })
    }
}

fn overloaded(shared: &Shared) -> Response<CountedBody> {
    shared.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
    if !shared.warned_in_flight.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            max_in_flight = shared.settings.max_in_flight,
            "request limit reached: new requests are answered 503 until some finish"
        );
    }
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "The gateway is handling as many requests as it allows; retry shortly.",
        None,
        Some("gateway_overloaded"),
    );
    error.retry_after = Some(Duration::from_secs(1));
    error.into_response().map(|body| CountedBody { body, counted: None })
}

/// One request in flight, counted on its connection and on the server until dropped.
struct InFlight {
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    /// A health probe or metrics scrape: served whatever the load, and not counted against the limit, so
    /// that a scrape arriving with the limit's last request does not turn that request away.
    probe: bool,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>, state: &Arc<ConnState>, probe: bool) -> Option<Self> {
        if !probe {
            let before = shared.limited_in_flight.fetch_add(1, Ordering::AcqRel);
            if before >= shared.settings.max_in_flight {
                shared.limited_in_flight.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            if before + 1 < shared.settings.max_in_flight {
                shared.warned_in_flight.store(false, Ordering::Relaxed);
            }
        }
        shared.stats.in_flight.fetch_add(1, Ordering::AcqRel);
        state.request_started();
        Some(Self {
            shared: Arc::clone(shared),
            state: Arc::clone(state),
            probe,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.probe {
            self.shared.limited_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        self.shared.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.state.request_ended();
    }
}

/// An answer's body, holding its request's place in the count until the body ends or is dropped.
pub(crate) struct CountedBody {
    body: Body,
    counted: Option<InFlight>,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.counted = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Runs a closure when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::{ServeSettings, ServeStats};

    fn settings() -> ServeSettings {
        ServeSettings {
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            ..ServeSettings::default()
        }
    }

    #[test]
    fn probes_are_counted_but_take_no_request_s_place() {
        let shared = Arc::new(Shared {
            settings: ServeSettings {
                max_in_flight: 2,
                ..settings()
            },
            stats: Arc::new(ServeStats::default()),
            warned_connections: AtomicBool::new(false),
            warned_in_flight: AtomicBool::new(false),
            limited_in_flight: AtomicUsize::new(0),
        });
        let state = Arc::new(ConnState::new());
        let first = InFlight::enter(&shared, &state, false).expect("the first request");
        let scrape = InFlight::enter(&shared, &state, true).expect("a scrape is always served");
        // A scrape is in flight with one request: the limit's second request still gets its place.
        let second = InFlight::enter(&shared, &state, false).expect("the limit's second request");
        assert_eq!(shared.stats.in_flight.load(Ordering::Acquire), 3);
        assert!(
            InFlight::enter(&shared, &state, false).is_none(),
            "a third request is over the limit"
        );
        assert!(
            InFlight::enter(&shared, &state, true).is_some(),
            "a probe is served over the limit"
        );
        drop((first, scrape));
        assert_eq!(shared.stats.in_flight.load(Ordering::Acquire), 1);
        assert_eq!(shared.limited_in_flight.load(Ordering::Acquire), 1);
        assert!(InFlight::enter(&shared, &state, false).is_some());
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_start_a_request_within_the_header_timeout() {
        let state = ConnState::new();
        let s = settings();
        assert_eq!(state.deadline(&s, None), Some(state.opened + s.header_timeout));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(state.expired(&s, None, Instant::now()), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(state.expired(&s, None, Instant::now()), Some(Expiry::Header));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_has_no_deadline_until_its_answer_waits_on_the_client() {
        let state = ConnState::new();
        let s = settings();
        state.request_started();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(state.deadline(&s, None), None);
        assert_eq!(state.expired(&s, None, Instant::now()), None);
        state.blocked_since.store(state.now_mark(), Ordering::Release);
        let blocked_at = Instant::now();
        assert_eq!(state.deadline(&s, None), Some(blocked_at + s.send_timeout));
        tokio::time::advance(s.send_timeout).await;
        assert_eq!(state.expired(&s, None, Instant::now()), Some(Expiry::Send));
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_answer_the_keep_alive_runs_and_a_new_head_gets_the_header_timeout() {
        let state = ConnState::new();
        let s = settings();
        state.request_started();
        tokio::time::advance(Duration::from_secs(5)).await;
        state.request_ended();
        let idle_at = Instant::now();
        assert_eq!(state.deadline(&s, None), Some(idle_at + s.keep_alive_timeout));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(state.expired(&s, None, Instant::now()), None);
        // The next head's first byte: now it must be whole within the header timeout.
        state.head_since.store(state.now_mark(), Ordering::Release);
        assert_eq!(state.deadline(&s, None), Some(Instant::now() + s.header_timeout));
        tokio::time::advance(s.header_timeout).await;
        assert_eq!(state.expired(&s, None, Instant::now()), Some(Expiry::Header));
        // Without it, the keep-alive alone.
        state.head_since.store(0, Ordering::Release);
        tokio::time::advance(s.keep_alive_timeout).await;
        assert_eq!(state.expired(&s, None, Instant::now()), Some(Expiry::Idle));
    }
}
