//! Failed authentication, throttled per client address.
//!
//! After `max_failures` answers of 401 to one address within `window`, that address's requests to
//! authenticated routes are answered 429 with `retry-after` until the window ends, without their keys
//! being looked at: guessing keys costs a window per `max_failures` guesses. An IPv6 client is counted by
//! its /64, the block one host usually holds. The client address is the TCP peer: behind a reverse proxy
//! every client shares the proxy's address, so there the throttle counts them together.
//!
//! The table holds at most [`CAPACITY`] addresses. When it is full, windows that ended are dropped; if
//! none has, a new address is not tracked (and this is logged): memory stays bounded under a flood from
//! many addresses, at the cost of not throttling the newest of them.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tokio::time::Instant;

use crate::error::{ApiError, retry_after_secs};
use crate::serve::PeerAddr;

/// The most addresses tracked at once (about 3 MB).
pub const CAPACITY: usize = 65_536;

/// How failed authentication is throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures one address may have per window; 0 turns the throttle off.
    pub max_failures: u32,
    /// The window they are counted over.
    pub window: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            max_failures: 20,
            window: Duration::from_secs(60),
        }
    }
}

/// Failures per address in the current window.
#[derive(Debug)]
pub struct AuthThrottle {
    settings: ThrottleSettings,
    capacity: usize,
    table: Mutex<HashMap<IpAddr, Window>>,
    /// The table's size, read without the lock so that a gateway nobody attacks never takes it.
    tracked: AtomicUsize,
    warned_full: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl AuthThrottle {
    /// A throttle with `settings` and the default capacity.
    pub fn new(settings: ThrottleSettings) -> Self {
        Self::with_capacity(settings, CAPACITY)
    }

    fn with_capacity(settings: ThrottleSettings, capacity: usize) -> Self {
        Self {
            settings,
            capacity,
            table: Mutex::new(HashMap::new()),
            tracked: AtomicUsize::new(0),
            warned_full: AtomicBool::new(false),
        }
    }

    fn enabled(&self) -> bool {
        self.settings.max_failures > 0
    }

    /// How long `address` must wait, if it used up its failures.
    pub fn blocked(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        if !self.enabled() || self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let window = table.get(&client(address))?;
        let ends = window.start + self.settings.window;
        (window.failures >= self.settings.max_failures && ends > now).then(|| ends - now)
    }

    /// Counts a failed authentication from `address`.
    pub fn failed(&self, address: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let key = client(address);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.contains_key(&key) && table.len() >= self.capacity {
            let window = self.settings.window;
            table.retain(|_, w| w.start + window > now);
            if table.len() >= self.capacity {
                if !self.warned_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        capacity = self.capacity,
                        "failed-authentication table full: new addresses are not throttled until windows end"
                    );
                }
                return;
            }
            self.warned_full.store(false, Ordering::Relaxed);
        }
        let window = table.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if window.start + self.settings.window <= now {
            *window = Window {
                start: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
        if window.failures == self.settings.max_failures {
            tracing::warn!(client = %key, failures = window.failures, "too many failed authentications; throttling the address");
        }
        self.tracked.store(table.len(), Ordering::Relaxed);
    }
}

/// The address failures are counted under: IPv4 as it is, IPv6 by its /64 (an IPv4-mapped one as IPv4).
fn client(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Middleware before authentication: refuses a throttled address, and counts each 401 it gets.
pub(crate) async fn guard(State(throttle): State<Arc<AuthThrottle>>, request: Request, next: Next) -> Response {
    guard_then(&throttle, request, |request| next.run(request)).await
}

/// [`guard`] in front of `inner`, for a middleware that runs more than the throttle.
pub(crate) async fn guard_then<F>(
    throttle: &AuthThrottle,
    request: Request,
    inner: impl FnOnce(Request) -> F,
) -> Response
where
    F: Future<Output = Response>,
{
    let Some(address) = request.extensions().get::<PeerAddr>().map(|peer| peer.0.ip()) else {
        return inner(request).await;
    };
    if let Some(wait) = throttle.blocked(address, Instant::now()) {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "Too many failed authentications from this address. Retry after {} s.",
                retry_after_secs(wait).max(1)
            ),
            None,
            Some("too_many_failed_authentications"),
        );
        error.retry_after = Some(wait);
        return error.into_response();
    }
    let response = inner(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        throttle.failed(address, Instant::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_failures: u32) -> ThrottleSettings {
        ThrottleSettings {
            max_failures,
            window: Duration::from_secs(60),
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_is_throttled_after_its_failures_until_the_window_ends() {
        let throttle = AuthThrottle::new(settings(3));
        let start = Instant::now();
        for _ in 0..2 {
            throttle.failed(v4(1), Instant::now());
        }
        assert_eq!(throttle.blocked(v4(1), Instant::now()), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        throttle.failed(v4(1), Instant::now());
        assert_eq!(throttle.blocked(v4(1), Instant::now()), Some(Duration::from_secs(50)));
        assert_eq!(throttle.blocked(v4(2), Instant::now()), None, "another address is not");
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(throttle.blocked(v4(1), Instant::now()), None);
        // A new window starts from zero.
        throttle.failed(v4(1), Instant::now());
        assert_eq!(throttle.blocked(v4(1), Instant::now()), None);
        assert!(Instant::now() - start >= Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_clients_are_counted_by_their_64_and_zero_turns_it_off() {
        let throttle = AuthThrottle::new(settings(2));
        throttle.failed("2001:db8:1:2::1".parse().unwrap(), Instant::now());
        throttle.failed("2001:db8:1:2:ffff::9".parse().unwrap(), Instant::now());
        assert!(
            throttle
                .blocked("2001:db8:1:2::77".parse().unwrap(), Instant::now())
                .is_some()
        );
        assert!(
            throttle
                .blocked("2001:db8:1:3::1".parse().unwrap(), Instant::now())
                .is_none()
        );

        let off = AuthThrottle::new(settings(0));
        for _ in 0..100 {
            off.failed(v4(1), Instant::now());
        }
        assert!(off.blocked(v4(1), Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded_and_makes_room_as_windows_end() {
        let throttle = AuthThrottle::with_capacity(settings(1), 4);
        for last in 0..10 {
            throttle.failed(v4(last), Instant::now());
        }
        assert_eq!(throttle.table.lock().unwrap().len(), 4);
        assert!(throttle.blocked(v4(0), Instant::now()).is_some());
        assert!(
            throttle.blocked(v4(9), Instant::now()).is_none(),
            "not tracked while full"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        throttle.failed(v4(9), Instant::now());
        assert!(throttle.blocked(v4(9), Instant::now()).is_some());
        assert_eq!(throttle.table.lock().unwrap().len(), 1);
    }
}
