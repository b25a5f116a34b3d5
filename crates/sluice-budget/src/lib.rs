//! Budgets: how much an upstream key or a tenant may still use, behind one small interface.
//!
//! Two kinds of budget cover every limit Sluice keeps:
//! - a [`RateBudget`]: requests and tokens per minute refilled continuously, requests in flight, and a
//!   cooldown (an upstream key after a 429; a tenant's rate limit);
//! - a [`SpendBudget`]: micro-dollars spent in a period (a UTC day or month) against a cap.
//!
//! Both are reserve-then-settle: a request first takes its worst case ([`Reservation`],
//! [`SpendReservation`]) in one atomic step, so concurrent requests never see the same free capacity, and
//! gives back the difference when its real usage is known. A [`BudgetBackend`] hands out budgets by name:
//! [`LocalBudgets`] keeps them in this process's memory; a shared backend (Redis, for several replicas)
//! implements the same traits. Reserving may wait on such a backend, so it returns a [`Reserve`] future;
//! everything else is fire-and-forget, so the request path never waits on a shared store to give back.
//!
//! [`RedisBudgets`] shares every budget between replicas through Redis: see the [`redis`] module for its
//! consistency model and what it does when Redis fails.
//!
//! Times come from tokio's clock, so tests run on paused time.

mod bucket;
mod local;
pub mod redis;
mod reserve;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use crate::local::LocalBudgets;
pub use crate::redis::{RedisBudgets, RedisSettings};
pub use crate::reserve::{BoxFuture, Reserve};

/// Why a budget backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The Redis URL is not one the client can use.
    #[error("the Redis URL is not valid: {0}")]
    InvalidUrl(String),
    /// A shared backend runs background tasks and needs a tokio runtime to start them in.
    #[error("the Redis budgets must be started inside a tokio runtime")]
    NoRuntime,
    /// Redis did not answer.
    #[error("Redis did not answer: {0}")]
    Unreachable(String),
}

/// A change to virtual keys or tenants made on one replica that every other replica must apply at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// The virtual key with this id was revoked: drop it from memory without waiting for the database.
    KeyRevoked(Arc<str>),
    /// Tenants or keys changed: read them again from the database.
    TenantsChanged,
}

/// Limits of a rate budget. `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_in_flight: Option<u32>,
}

/// Why a rate budget cannot take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Capacity comes back after this long.
    Wait(Duration),
    /// The request is larger than the budget's whole per-minute allowance: no wait would help.
    TooLarge,
}

/// How a reservation ended, for [`RateBudget::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The call was made and used this many tokens: the difference from what was reserved is given
    /// back, or charged when the answer was longer (leaving the bucket in debt until it refills).
    Used(u64),
    /// The call never counted upstream (refused with a 429, never connected): everything is given back.
    Cancelled,
    /// The request was dropped before its usage was known: the slot in flight is freed and the tokens
    /// stay counted, since the vendor may have counted them too.
    Abandoned,
}

/// How 429s without a retry time back off: full jitter over an exponential, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first step.
    pub base: Duration,
    /// The largest step.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

/// The longest cooldown a budget accepts, whatever a vendor says: a retry time past it is a vendor bug
/// or an attack, and an hour is already longer than any real rate-limit window.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

/// One budget as the admin API and the `x-ratelimit-*` headers show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BudgetView {
    /// Requests per minute, if limited.
    pub rpm: Option<u64>,
    /// Requests left now.
    pub remaining_requests: Option<u64>,
    /// Tokens per minute, if limited.
    pub tpm: Option<u64>,
    /// Tokens left now.
    pub remaining_tokens: Option<u64>,
    /// Requests in flight.
    pub in_flight: u32,
    /// The cap on requests in flight, if any.
    pub max_in_flight: Option<u32>,
    /// Time left in a cooldown, if cooling down.
    pub cooldown_ms: Option<u64>,
}

/// A rate budget: requests and tokens per minute, requests in flight, a cooldown.
///
/// Only [`RateBudget::reserve`], [`RateBudget::settle`] and [`RateBudget::available_in`] are required; a
/// budget that learns nothing from vendors or shows nothing to admins can leave the rest to their defaults.
pub trait RateBudget: Send + Sync + Debug + 'static {
    /// Takes one request and `tokens` tokens if the budget has them now, or says how long until it will.
    /// Check and take are one atomic step.
    fn reserve(&self, tokens: u64) -> Reserve<'_, Result<(), Refusal>>;

    /// Ends a reservation of `reserved` tokens; see [`End`]. [`RateBudget::reached`] came first.
    fn settle(&self, reserved: u64, end: End);

    /// The request of a reservation of `reserved` tokens reached the vendor (it began to answer) or
    /// never will: the vendor has counted what it counts of it. Once per reservation, before
    /// [`RateBudget::settle`] ([`Reservation`] sees to both). A shared budget counts the reservation as
    /// held outside the shared bucket until then, since a vendor counts a request when it arrives.
    fn reached(&self, reserved: u64) {
        let _ = reserved;
    }

    /// How long until the budget could take a request of `tokens`, without taking anything: what an
    /// honest `retry-after` is made of.
    fn available_in(&self, tokens: u64) -> Result<Duration, Refusal>;

    /// Tightens the budget to what the vendor says is left; never loosens it.
    fn learn_remaining(&self, requests: Option<u64>, tokens: Option<u64>) {
        let _ = (requests, tokens);
    }

    /// The vendor refused with a 429: no new request until `retry_after` (at most [`MAX_COOLDOWN`]), or
    /// an exponential backoff with full jitter when it gave no time. Returns the cooldown chosen.
    fn cool_down(&self, retry_after: Option<Duration>, backoff: Backoff) -> Duration {
        retry_after.unwrap_or(backoff.base).min(MAX_COOLDOWN)
    }

    /// A success: the backoff starts over.
    fn succeeded(&self) {}

    /// What the budget looks like now.
    fn view(&self) -> BudgetView {
        BudgetView::default()
    }
}

/// A spend period: its start, in Unix seconds. Two reservations are in the same period when their
/// starts are equal; a new start begins the period at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period(pub i64);

/// A spend budget was reached: the request's worst case does not fit in what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// Micro-dollars spent and held by requests in flight in the period.
    pub committed: i64,
}

/// Micro-dollars spent in a period against a cap.
///
/// Only [`SpendBudget::reserve`] and [`SpendBudget::settle`] are required.
pub trait SpendBudget: Send + Sync + Debug + 'static {
    /// Holds `micros` in `period` if what is spent and held, plus `micros`, stays within `cap` (`None`
    /// is no cap); one atomic step. A reservation of zero always succeeds.
    fn reserve(&self, period: Period, cap: Option<i64>, micros: i64) -> Reserve<'_, Result<(), OverBudget>>;

    /// Ends a reservation of `reserved` micro-dollars in `period` that cost `used`. A cost settled after its
    /// period ended belongs to the ended period and does not count against the new one.
    fn settle(&self, period: Period, reserved: i64, used: i64);

    /// Micro-dollars settled in `period`.
    fn spent(&self, period: Period) -> i64 {
        let _ = period;
        0
    }

    /// Starts `period` at `micros` (read from the ledger) unless it already started; returns whether it did.
    /// Seeding is once per period for every replica of a shared backend.
    fn seed(&self, period: Period, micros: i64) -> Reserve<'_, bool> {
        let _ = (period, micros);
        Reserve::ready(false)
    }
}

/// Hands out budgets by name. Two calls with the same name share one budget; a rate budget asked for with
/// other limits than before starts afresh with the new ones.
pub trait BudgetBackend: Send + Sync + Debug + 'static {
    /// The rate budget `name`, with `limits`.
    fn rate(&self, name: &str, limits: Limits) -> Arc<dyn RateBudget>;

    /// The spend budget `name`.
    fn spend(&self, name: &str) -> Arc<dyn SpendBudget>;

    /// What the backend is doing, for `/readyz` and `/metrics`: a shared backend says whether it is
    /// reachable or serving local fallbacks.
    fn status(&self) -> BackendStatus {
        BackendStatus::default()
    }

    /// Tells every other replica sharing the backend about `change`, without waiting; a local backend
    /// has no one to tell.
    fn announce(&self, change: Announcement) {
        let _ = change;
    }

    /// Changes other replicas announce, as they arrive; `None` for a backend no other replica shares.
    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<Announcement>> {
        None
    }
}

/// A backend's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackendStatus {
    /// `memory`, or the shared store's name.
    pub backend: &'static str,
    /// False while a shared backend is unreachable and budgets are enforced locally.
    pub shared: bool,
    /// Replicas sharing the budgets, as last seen (1 for a local backend).
    pub replicas: u32,
    /// Times the backend fell back to local budgets.
    pub fallbacks: u64,
}

// === impl Reservation ===

/// One request and its tokens held on a [`RateBudget`]. Say when the vendor answered it
/// ([`Reservation::reached`]); settle it with the real usage, or cancel it; dropping it is
/// [`End::Abandoned`].
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<dyn RateBudget>,
    tokens: u64,
    open: bool,
    /// Whether the budget was told the request reached the vendor.
    reached: bool,
}

impl Reservation {
    /// Reserves one request and `tokens` on `budget`.
    pub async fn take(budget: &Arc<dyn RateBudget>, tokens: u64) -> Result<Self, Refusal> {
        budget.reserve(tokens).await?;
        Ok(Self {
            budget: Arc::clone(budget),
            tokens,
            open: true,
            reached: false,
        })
    }

    /// The vendor began to answer the request: it has counted it ([`RateBudget::reached`]). Ending the
    /// reservation says so too, if nothing did before.
    pub fn reached(&mut self) {
        if self.open && !std::mem::replace(&mut self.reached, true) {
            self.budget.reached(self.tokens);
        }
    }

    /// The tokens held.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Settles with the tokens actually used.
    pub fn settle(mut self, used_tokens: u64) {
        self.end(End::Used(used_tokens));
    }

    /// Gives everything back: the request never counted upstream.
    pub fn cancel(mut self) {
        self.end(End::Cancelled);
    }

    fn end(&mut self, end: End) {
        self.reached();
        if std::mem::take(&mut self.open) {
            self.budget.settle(self.tokens, end);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.end(End::Abandoned);
    }
}

// === impl SpendReservation ===

/// Micro-dollars held on a [`SpendBudget`] for one request. Settle it with the real cost; dropping it
/// unsettled charges what was held, since the cost is unknown and may have been incurred.
#[derive(Debug)]
pub struct SpendReservation {
    budget: Arc<dyn SpendBudget>,
    period: Period,
    micros: i64,
    open: bool,
}

impl SpendReservation {
    /// Holds `micros` of `budget` in `period`, within `cap`.
    pub async fn take(
        budget: &Arc<dyn SpendBudget>,
        period: Period,
        cap: Option<i64>,
        micros: i64,
    ) -> Result<Self, OverBudget> {
        budget.reserve(period, cap, micros).await?;
        Ok(Self {
            budget: Arc::clone(budget),
            period,
            micros,
            open: true,
        })
    }

    /// The micro-dollars held.
    pub fn micros(&self) -> i64 {
        self.micros
    }

    /// Settles with the real cost.
    pub fn settle(mut self, used_micros: i64) {
        self.end(used_micros);
    }

    fn end(&mut self, used: i64) {
        if std::mem::take(&mut self.open) {
            self.budget.settle(self.period, self.micros, used);
        }
    }
}

impl Drop for SpendReservation {
    fn drop(&mut self) {
        self.end(self.micros);
    }
}

#[cfg(test)]
mod tests;
