//! Serving an app on a listener, bounded against slow and greedy clients, with a bounded graceful
//! shutdown.
//!
//! One accept loop over hyper-util's auto builder: HTTP/1.1, and HTTP/2 over cleartext by prior
//! knowledge (h2c), on the same port. What bounds what:
//! - **Connections**: at most `max_connections` open at once; beyond it a new connection gets a short
//!   503 written on a best-effort basis and is closed at once, so a flood is told promptly and connections
//!   already open (a health probe's, say) are served as before.
//! - **Requests in flight**: at most `max_in_flight` across all connections (HTTP/2 streams included);
//!   beyond it a request is answered at once with a 503 and `retry-after`, in OpenAI's error shape,
//!   without reaching the app. `/healthz` and `/metrics` are always served, and take no request's
//!   place: they count in `sluice_requests_in_flight` but not against the limit.
//! - **Slow clients**, per connection (see [`connection`]): a request head must be whole within
//!   `header_timeout` of its first byte (or of the connection opening); an idle connection is closed
//!   after `keep_alive_timeout`; a client that takes no bytes of its answer for `send_timeout` is cut.
//! - **HTTP/2**: at most `max_concurrent_streams` per connection and `max_header_bytes` of headers (also
//!   the HTTP/1.1 head's size bound), with h2's own guards against reset floods left on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

mod connection;
mod held;

/// How the server bounds its clients. [`ServeSettings::default`] holds the defaults the README lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSettings {
    /// Longest time from a request head's first byte (or a new connection) to the whole head.
    pub header_timeout: Duration,
    /// Longest time a connection may stay open with no request in flight.
    pub keep_alive_timeout: Duration,
    /// Longest time an answer may wait on a client that takes none of its bytes.
    pub send_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Requests (HTTP/2 streams included) in flight at once, across every connection.
    pub max_in_flight: usize,
    /// HTTP/2 streams in flight at once on one connection.
    pub max_concurrent_streams: u32,
    /// The largest request head (HTTP/1.1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// How long in-flight requests and streams may run on after the shutdown signal.
    pub grace: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            // Longer than the 60 s idle timeout of common load balancers, so that the balancer, not the
            // gateway, closes an idle pooled connection and never reuses one the gateway just closed.
            keep_alive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_in_flight: 2048,
            max_concurrent_streams: 128,
            max_header_bytes: 32 * 1024,
            grace: Duration::from_secs(20),
        }
    }
}

/// What the server counts, for `/metrics`: added to every request's extensions.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicUsize,
    /// Requests answered 503 because `max_in_flight` were in flight.
    pub requests_refused: AtomicU64,
    /// Connections closed for a slow request head, an idle keep-alive or a client not reading.
    pub connections_timed_out: AtomicU64,
    /// Writes to client sockets (system calls): an answer's chunks that arrive together leave together.
    pub client_writes: AtomicU64,
}

/// Appends the server's counters to a Prometheus text exposition.
pub fn render_metrics(stats: &ServeStats, out: &mut String) {
    use std::fmt::Write;
    let load = |a: &AtomicUsize| a.load(Ordering::Relaxed) as u64;
    let count = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, kind, help, value) in [
        (
            "sluice_connections_open",
            "gauge",
            "Client connections open.",
            load(&stats.connections),
        ),
        (
            "sluice_connections_refused_total",
            "counter",
            "Connections closed at once because server.max_connections were open.",
            count(&stats.connections_refused),
        ),
        (
            "sluice_connections_timed_out_total",
            "counter",
            "Connections closed for a slow request head or a client not reading its answer.",
            count(&stats.connections_timed_out),
        ),
        (
            "sluice_client_writes_total",
            "counter",
            "Writes to client sockets (system calls); a stream's chunks that arrive together leave in one.",
            count(&stats.client_writes),
        ),
        (
            "sluice_requests_in_flight",
            "gauge",
            "Requests in flight.",
            load(&stats.in_flight),
        ),
        (
            "sluice_requests_refused_total",
            "counter",
            "Requests answered 503 because server.max_in_flight were in flight.",
            count(&stats.requests_refused),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// What every connection of one server shares.
struct Shared {
    settings: ServeSettings,
    stats: Arc<ServeStats>,
    /// Whether the limit's warning was logged since the count was last below it: one line per episode,
    /// not one per refusal.
    warned_connections: AtomicBool,
    warned_in_flight: AtomicBool,
    /// The requests among `stats.in_flight` that count against `max_in_flight`: all but health probes and
    /// metrics scrapes.
    limited_in_flight: AtomicUsize,
}

/// Serves `app` on `listener` with the default bounds until `shutdown` resolves, then stops accepting and
/// lets in-flight requests and streams finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    serve_with(
        listener,
        app,
        shutdown,
        ServeSettings {
            grace,
            ..ServeSettings::default()
        },
    )
    .await
}

/// Serves `app` on `listener` within `settings` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests and streams finish for at most `settings.grace`; what is still running then is cut.
pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: ServeSettings,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        settings,
        stats: Arc::new(ServeStats::default()),
        warned_connections: AtomicBool::new(false),
        warned_in_flight: AtomicBool::new(false),
        limited_in_flight: AtomicUsize::new(0),
    });
    let builder = Arc::new(http_builder(&settings));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if connections.len() >= settings.max_connections {
                        // Connections that ended still count until reaped, and `select!` may have
                        // taken this accept before them.
                        while connections.try_join_next().is_some() {}
                        if connections.len() >= settings.max_connections {
                            refuse(tcp, &shared);
                            continue;
                        }
                    }
                    shared.warned_connections.store(false, Ordering::Relaxed);
                    // Nagle's algorithm would hold small writes (stream chunks, keep-alive answers) ~40 ms.
                    if let Err(err) = tcp.set_nodelay(true) {
                        tracing::debug!(%err, "could not set TCP_NODELAY");
                    }
                    connections.spawn(connection::run(
                        Arc::clone(&builder),
                        tcp,
                        peer,
                        app.clone(),
                        Arc::clone(&shared),
                        stopping.clone(),
                    ));
                }
                Err(err) => accept_failed(&err).await,
            }
        }
    }
    drop(listener);
    tracing::info!(
        grace_ms = settings.grace.as_millis() as u64,
        connections = connections.len(),
        "shutting down: no new connections, draining"
    );
    stop.send_replace(true);
    let drained = tokio::time::timeout(settings.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight after the shutdown grace period; closing them"
        );
        // Waits for the connections' tasks to be dropped, so every request they held has been recorded
        // (a ledger entry writes itself when dropped) before the caller flushes the ledger.
        connections.shutdown().await;
    }
    Ok(())
}

fn http_builder(settings: &ServeSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Header and keep-alive timeouts are the connection watcher's: hyper's own header timeout also runs
    // while a connection is idle, which would tie the keep-alive to it.
    builder
        .http1()
        .keep_alive(true)
        .header_read_timeout(None)
        // hyper's floor for its read buffer, which bounds the request head.
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// The answer a connection over the limit gets before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
connection: close\r\ncontent-length: 158\r\n\r\n\
{\"error\":{\"message\":\"The gateway has as many connections open as it allows; retry shortly.\",\
\"type\":\"server_error\",\"param\":null,\"code\":\"too_many_connections\"}}";

fn refuse(tcp: TcpStream, shared: &Shared) {
    shared.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
    if !shared.warned_connections.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            max_connections = shared.settings.max_connections,
            "connection limit reached: new connections are refused until some close"
        );
    }
    // Best effort and never waiting: an HTTP/1.1 client may read why; the socket is closed either way.
    let _ = tcp.try_write(REFUSAL);
}

/// An accept that failed: a connection reset before it was accepted is nothing; running out of file
/// descriptors or memory is waited out briefly rather than retried in a hot loop.
async fn accept_failed(err: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) {
        return;
    }
    tracing::error!(%err, "cannot accept a connection; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The peer of a request, as axum's `ConnectInfo` extractor reads it.
pub type PeerAddr = axum::extract::ConnectInfo<SocketAddr>;

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_well_formed_http_with_an_openai_error() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], "too_many_connections");
    }
}
