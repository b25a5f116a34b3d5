//! Pooled HTTP/1.1 connections, each driven by the task waiting on its answer.
//!
//! hyper's pooled client runs every connection in a task of its own and hands an answer's body to the
//! caller over a one-slot channel, one HTTP chunk per hand-over: two task wake-ups per chunk, and a
//! stream's events reached the client in as many scheduler rounds as it had chunks. Here nothing runs a
//! connection but the caller: polling the answer's body drives it, so every chunk one upstream read
//! brings is decoded and passed on within one poll of the caller's task.
//!
//! An idle connection is polled by no one. When it is taken it is polled once, with a waker that does
//! nothing: a connection the upstream closed is finished then and is dropped. Connections idle longer
//! than the pool's idle timeout are closed when the pool is next used, and every few seconds at most the
//! whole pool is swept the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use tokio::time::Instant;

use super::Io;

/// Where a connection goes: the scheme and the authority of the URIs it serves.
pub(crate) type PoolKey = (Scheme, Authority);

/// The connection as hyper drives it: it reads and writes only when polled.
type Driver = http1::Connection<Io, Full<Bytes>>;

/// One HTTP/1.1 connection: the handle requests are sent through and the state machine that does the
/// reading and writing.
pub(crate) struct Conn {
    pub(crate) sender: http1::SendRequest<Full<Bytes>>,
    /// Boxed: hyper's connection state is nearly 2 KB, and a connection moves in and out of the pool and
    /// through the futures of every call made on it.
    driver: Option<Pin<Box<Driver>>>,
    /// Requests on it go to a proxy, so they are written in absolute form.
    pub(crate) proxied: bool,
}

impl Conn {
    pub(crate) fn new(sender: http1::SendRequest<Full<Bytes>>, driver: Driver, proxied: bool) -> Self {
        Self {
            sender,
            driver: Some(Box::pin(driver)),
            proxied,
        }
    }

    /// Moves the connection on as far as it can go now. Once the connection has ended (closed by the
    /// upstream, or broken) it is let go: whatever waited on it has been told.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && driver.as_mut().poll(cx).is_ready()
        {
            self.driver = None;
        }
    }

    /// Whether a request can be sent on it now; it is driven once first, without a waker, so that a
    /// connection the upstream closed while it sat idle is seen as ended.
    fn usable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()));
        self.driver.is_some() && self.sender.is_ready()
    }

    /// Whether it may still be used, idle since `since`: not idle longer than `timeout` at `now`, and
    /// [`Self::usable`].
    fn usable_after_idle(&mut self, since: Instant, now: Instant, timeout: Duration) -> bool {
        now.duration_since(since) <= timeout && self.usable()
    }

    /// Whether it has ended.
    pub(crate) fn ended(&self) -> bool {
        self.driver.is_none()
    }
}

/// Idle connections by destination.
pub(crate) struct Pool {
    idle: Mutex<Idle>,
    timeout: Duration,
}

struct Idle {
    /// A list, not a map: a gateway calls a handful of destinations, and hashing an `Authority` (byte by
    /// byte, case-folded) cost more than comparing it with each of them.
    by_key: Vec<(PoolKey, Vec<(Conn, Instant)>)>,
    swept: Instant,
}

/// How often at most the whole pool is looked through for closed and expired connections.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Pool {
    /// A pool closing connections idle for longer than `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(Idle {
                by_key: Vec::new(),
                swept: Instant::now(),
            }),
            timeout,
        }
    }

    /// The most recently used idle connection to `key` that can take a request, if any.
    pub(crate) fn take(&self, key: &PoolKey) -> Option<Conn> {
        loop {
            let (mut conn, since) = self.lock().conns(key)?.pop()?;
            // Checked outside the lock; one that fails is dropped (closed) there too.
            if conn.usable_after_idle(since, Instant::now(), self.timeout) {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for the next request to `key`, unless it has ended.
    pub(crate) fn put(&self, key: PoolKey, mut conn: Conn) {
        // Driven once more without a waker: the answer just read may still have to be closed off, and the
        // task that read it is not to be woken for this connection again.
        if !conn.usable() {
            return;
        }
        let now = Instant::now();
        let expired = {
            let mut idle = self.lock();
            match idle.conns(&key) {
                Some(conns) => conns.push((conn, now)),
                None => idle.by_key.push((key, vec![(conn, now)])),
            }
            if now.duration_since(idle.swept) < SWEEP_EVERY {
                return;
            }
            idle.swept = now;
            idle.sweep(now, self.timeout)
        };
        drop(expired);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // A panic elsewhere cannot leave the map inconsistent: every change is one call on it.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many idle connections it holds, for the tests.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.lock().by_key.iter().map(|(_, conns)| conns.len()).sum()
    }
}

impl Idle {
    /// The idle connections to `key`, if it has had any since the last sweep.
    fn conns(&mut self, key: &PoolKey) -> Option<&mut Vec<(Conn, Instant)>> {
        self.by_key.iter_mut().find(|(k, _)| k == key).map(|(_, conns)| conns)
    }

    /// Takes out the connections that expired or ended, to be dropped after the lock is let go.
    fn sweep(&mut self, now: Instant, timeout: Duration) -> Vec<Conn> {
        let mut gone = Vec::new();
        for (_, conns) in &mut self.by_key {
            let mut kept = Vec::with_capacity(conns.len());
            for (mut conn, since) in conns.drain(..) {
                if conn.usable_after_idle(since, now, timeout) {
                    kept.push((conn, since));
                } else {
                    gone.push(conn);
                }
            }
            *conns = kept;
        }
        self.by_key.retain(|(_, conns)| !conns.is_empty());
        gone
    }
}

/// Where an answer's connection goes back to once the answer is read.
pub(crate) struct Lease {
    pub(crate) conn: Conn,
    pub(crate) pool: std::sync::Arc<Pool>,
    pub(crate) key: PoolKey,
}

/// An upstream answer's body: polling it reads the connection. Read to its end, the connection goes
/// back to the pool; dropped before, the connection is closed.
pub(crate) struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    pub(crate) fn new(body: Incoming, lease: Lease) -> Self {
        Self {
            body,
            lease: Some(lease),
        }
    }

    /// The body is read: its connection is kept for another request.
    fn release(&mut self) {
        if let Some(Lease { conn, pool, key }) = self.lease.take() {
            pool.put(key, conn);
        }
    }
}

/// The most frames a dropped body reads to reach its end.
const DRAIN_FRAMES: usize = 16;

impl Drop for UpstreamBody {
    /// A body given up before its end (a stream's reader stops at the vendor's end marker, and the
    /// chunked body's last chunk is still unread) keeps its connection if the rest has already arrived:
    /// what was read is skipped, without waiting. Otherwise the connection is closed.
    fn drop(&mut self) {
        if self.lease.is_none() {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..DRAIN_FRAMES {
            match Pin::new(&mut *self).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) | Poll::Pending => return,
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => match &mut this.lease {
                // Nothing decoded yet: read the connection, then look again.
                Some(lease) => {
                    lease.conn.drive(cx);
                    if lease.conn.ended() {
                        this.lease = None;
                    }
                    Pin::new(&mut this.body).poll_frame(cx)
                }
                None => Poll::Pending,
            },
            ready => ready,
        };
        match polled {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                this.lease = None;
                Poll::Ready(Some(Err(err)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;

    /// A connection to a listener that never answers: enough for the pool, which only holds it.
    async fn conn(listener: &tokio::net::TcpListener) -> (Conn, tokio::net::TcpStream) {
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let io = Io::Http(super::super::UpstreamStream {
            io: TokioIo::new(tcp),
            via_proxy: false,
        });
        let (sender, driver) = http1::handshake(io).await.unwrap();
        (Conn::new(sender, driver, false), server)
    }

    fn key() -> PoolKey {
        (Scheme::HTTP, Authority::from_static("upstream.test"))
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_taken_newest_first_and_dropped_once_expired_or_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::new(Duration::from_secs(90));
        let (old, _old_server) = conn(&listener).await;
        pool.put(key(), old);
        tokio::time::advance(Duration::from_secs(60)).await;
        let (new, new_server) = conn(&listener).await;
        pool.put(key(), new);
        assert_eq!(pool.idle(), 2);
        assert!(
            pool.take(&(Scheme::HTTPS, Authority::from_static("upstream.test")))
                .is_none()
        );

        // Past the sweep interval, the next put looks through the pool: the first connection is 91
        // seconds idle and goes.
        tokio::time::advance(Duration::from_secs(31)).await;
        let (third, _third_server) = conn(&listener).await;
        pool.put(key(), third);
        assert_eq!(pool.idle(), 2);

        // The newest first; then the one whose server closed it is found ended and dropped.
        let taken = pool.take(&key()).unwrap();
        drop(new_server);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(pool.take(&key()).is_none(), "the closed connection is not handed out");
        assert_eq!(pool.idle(), 0);
        pool.put(key(), taken);
        assert_eq!(pool.idle(), 1);
    }
}
