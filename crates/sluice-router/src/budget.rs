//! Budgets of one upstream key for one vendor model: requests and tokens per minute, refilled
//! continuously, an optional cap on requests in flight, and the key's cooldown after a 429.
//!
//! Every decision takes one short lock: checking and taking capacity happen together, so concurrent
//! requests cannot all see the same free capacity and overrun it (the check-then-act race).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use sluice_providers::RateLimitSnapshot;
use tokio::time::Instant;

/// A per-minute allowance refilled continuously.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u64, now: Instant) -> Self {
        Self {
            capacity: per_minute as f64,
            level: per_minute as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + elapsed * self.capacity / 60.0).min(self.capacity);
        self.last = now;
    }

    /// Time until `amount` is available, or `None` if it never will be (more than the capacity).
    fn wait_for(&self, amount: f64) -> Option<Duration> {
        if self.level >= amount {
            return Some(Duration::ZERO);
        }
        if amount > self.capacity || self.capacity <= 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64((amount - self.level) * 60.0 / self.capacity))
    }
}

/// Why a key cannot take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Capacity comes back after this long.
    Wait(Duration),
    /// The request is larger than the key's whole per-minute token budget.
    TooLarge,
}

#[derive(Debug)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    in_flight: u32,
    max_in_flight: Option<u32>,
    cooldown_until: Option<Instant>,
    /// Consecutive 429s without a retry time, for the exponential backoff.
    strikes: u32,
}

/// The limits of one key for one deployment.
#[derive(Debug)]
pub struct KeyBudget {
    state: Mutex<State>,
}

/// Limits given to a budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_in_flight: Option<u32>,
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

/// Capacity held for one request; given back or settled when the answer is known. Dropping it without
/// settling (a cancelled request) frees its in-flight slot and keeps the tokens counted, since the
/// vendor may have counted them too.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<KeyBudget>,
    tokens: u64,
    open: bool,
}

impl KeyBudget {
    /// A budget with `limits`, full at `now`.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            state: Mutex::new(State {
                requests: limits.rpm.map(|r| Bucket::new(r, now)),
                tokens: limits.tpm.map(|t| Bucket::new(t, now)),
                in_flight: 0,
                max_in_flight: limits.max_in_flight,
                cooldown_until: None,
                strikes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one request and `tokens` tokens if the key has them now, or says how long until it will.
    pub fn try_reserve(self: &Arc<Self>, tokens: u64, now: Instant) -> Result<Reservation, Refusal> {
        let mut state = self.lock();
        let wait = Self::wait_locked(&mut state, tokens, now)?;
        if !wait.is_zero() {
            return Err(Refusal::Wait(wait));
        }
        if let Some(bucket) = &mut state.requests {
            bucket.level -= 1.0;
        }
        if let Some(bucket) = &mut state.tokens {
            bucket.level -= tokens as f64;
        }
        state.in_flight += 1;
        Ok(Reservation {
            budget: Arc::clone(self),
            tokens,
            open: true,
        })
    }

    /// How long until the key could take a request of `tokens`, without taking anything.
    pub fn available_in(&self, tokens: u64, now: Instant) -> Result<Duration, Refusal> {
        Self::wait_locked(&mut self.lock(), tokens, now)
    }

    fn wait_locked(state: &mut State, tokens: u64, now: Instant) -> Result<Duration, Refusal> {
        let mut wait = Duration::ZERO;
        if let Some(until) = state.cooldown_until {
            if until > now {
                wait = until - now;
            } else {
                state.cooldown_until = None;
            }
        }
        if let Some(bucket) = &mut state.requests {
            bucket.refill(now);
            wait = wait.max(bucket.wait_for(1.0).ok_or(Refusal::TooLarge)?);
        }
        if let Some(bucket) = &mut state.tokens {
            bucket.refill(now);
            wait = wait.max(bucket.wait_for(tokens as f64).ok_or(Refusal::TooLarge)?);
        }
        if let Some(max) = state.max_in_flight
            && state.in_flight >= max
        {
            // A slot frees when a request ends, which cannot be predicted; check again shortly.
            wait = wait.max(Duration::from_millis(50));
        }
        Ok(wait)
    }

    /// Tightens the budget to what the vendor says is left; never loosens it.
    pub fn learn(&self, snapshot: &RateLimitSnapshot, now: Instant) {
        let mut state = self.lock();
        if let (Some(remaining), Some(bucket)) = (snapshot.remaining_requests, &mut state.requests) {
            bucket.refill(now);
            bucket.level = bucket.level.min(remaining as f64);
        }
        if let (Some(remaining), Some(bucket)) = (snapshot.remaining_tokens, &mut state.tokens) {
            bucket.refill(now);
            bucket.level = bucket.level.min(remaining as f64);
        }
    }

    /// The vendor refused with a 429: no new request until `retry_after`, or an exponential backoff
    /// with full jitter when it gave no time. Returns the cooldown chosen.
    pub fn cool_down(&self, retry_after: Option<Duration>, backoff: Backoff, now: Instant) -> Duration {
        let mut state = self.lock();
        let pause = match retry_after {
            Some(after) => {
                state.strikes = 0;
                after
            }
            None => {
                state.strikes = state.strikes.saturating_add(1);
                let exponent = state.strikes.saturating_sub(1).min(16);
                let ceiling = backoff.base.saturating_mul(1 << exponent).min(backoff.max);
                // Full jitter: a random point below the ceiling, so keys refused together do not
                // all come back together.
                ceiling.mul_f64(fastrand::f64()).max(Duration::from_millis(10))
            }
        };
        let until = now + pause;
        state.cooldown_until = Some(state.cooldown_until.map_or(until, |current| current.max(until)));
        pause
    }

    /// A success clears the backoff.
    pub fn succeeded(&self) {
        self.lock().strikes = 0;
    }

    /// What the budget looks like now, for the admin view.
    pub fn view(&self, now: Instant) -> BudgetView {
        let mut guard = self.lock();
        let state = &mut *guard;
        for bucket in [&mut state.requests, &mut state.tokens].into_iter().flatten() {
            bucket.refill(now);
        }
        BudgetView {
            rpm: state.requests.as_ref().map(|b| b.capacity as u64),
            remaining_requests: state.requests.as_ref().map(|b| b.level.max(0.0).floor() as u64),
            tpm: state.tokens.as_ref().map(|b| b.capacity as u64),
            remaining_tokens: state.tokens.as_ref().map(|b| b.level.max(0.0).floor() as u64),
            in_flight: state.in_flight,
            max_in_flight: state.max_in_flight,
            cooldown_ms: state
                .cooldown_until
                .filter(|until| *until > now)
                .map(|until| (until - now).as_millis() as u64),
        }
    }
}

impl Reservation {
    /// The tokens held.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Settles with the tokens actually used: the difference is given back (or charged, when the
    /// answer was longer than reserved, leaving the bucket in debt until it refills).
    pub fn settle(mut self, used_tokens: u64, now: Instant) {
        let mut state = self.budget.lock();
        if let Some(bucket) = &mut state.tokens {
            bucket.refill(now);
            bucket.level = (bucket.level + self.tokens as f64 - used_tokens as f64).min(bucket.capacity);
        }
        state.in_flight = state.in_flight.saturating_sub(1);
        self.open = false;
    }

    /// Gives everything back: the request never counted upstream (refused with a 429, never connected).
    pub fn cancel(mut self, now: Instant) {
        let mut state = self.budget.lock();
        if let Some(bucket) = &mut state.requests {
            bucket.refill(now);
            bucket.level = (bucket.level + 1.0).min(bucket.capacity);
        }
        if let Some(bucket) = &mut state.tokens {
            bucket.refill(now);
            bucket.level = (bucket.level + self.tokens as f64).min(bucket.capacity);
        }
        state.in_flight = state.in_flight.saturating_sub(1);
        self.open = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.open {
            let mut state = self.budget.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

/// One budget as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(rpm: Option<u64>, tpm: Option<u64>) -> Arc<KeyBudget> {
        Arc::new(KeyBudget::new(
            Limits {
                rpm,
                tpm,
                max_in_flight: None,
            },
            Instant::now(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_refill_continuously_and_waits_are_exact() {
        let budget = budget(None, Some(600));
        let held = budget.try_reserve(600, Instant::now()).unwrap();
        assert_eq!(
            budget.try_reserve(100, Instant::now()).unwrap_err(),
            Refusal::Wait(Duration::from_secs(10)),
            "600 per minute refills 10 per second"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let second = budget.try_reserve(100, Instant::now()).unwrap();
        assert_eq!(budget.try_reserve(700, Instant::now()).unwrap_err(), Refusal::TooLarge);
        held.settle(600, Instant::now());
        second.settle(100, Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn settling_gives_back_the_unused_part_and_charges_overruns() {
        let budget = budget(None, Some(1000));
        let reservation = budget.try_reserve(800, Instant::now()).unwrap();
        reservation.settle(300, Instant::now());
        assert_eq!(budget.view(Instant::now()).remaining_tokens, Some(700));
        let reservation = budget.try_reserve(700, Instant::now()).unwrap();
        reservation.settle(900, Instant::now());
        assert_eq!(
            budget.view(Instant::now()).remaining_tokens,
            Some(0),
            "in debt, shown as zero"
        );
        assert!(matches!(budget.try_reserve(1, Instant::now()), Err(Refusal::Wait(_))));
        // 1,000 a minute refills 16.7 a second: the 200 of debt and one more token take 12.06 s.
        assert_eq!(
            budget.try_reserve(1, Instant::now()).unwrap_err(),
            Refusal::Wait(Duration::from_secs_f64(201.0 * 60.0 / 1000.0))
        );
        tokio::time::advance(Duration::from_secs_f64(12.06)).await;
        assert!(budget.try_reserve(1, Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_gives_everything_back() {
        let budget = budget(Some(1), Some(100));
        let reservation = budget.try_reserve(100, Instant::now()).unwrap();
        reservation.cancel(Instant::now());
        assert!(budget.try_reserve(100, Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_reservation_frees_its_slot_but_keeps_its_tokens() {
        let budget = Arc::new(KeyBudget::new(
            Limits {
                rpm: None,
                tpm: Some(100),
                max_in_flight: Some(1),
            },
            Instant::now(),
        ));
        let reservation = budget.try_reserve(60, Instant::now()).unwrap();
        assert!(
            matches!(budget.try_reserve(10, Instant::now()), Err(Refusal::Wait(_))),
            "one in flight"
        );
        drop(reservation);
        assert_eq!(budget.view(Instant::now()).in_flight, 0);
        assert_eq!(budget.view(Instant::now()).remaining_tokens, Some(40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_blocks_until_the_retry_time_then_lifts_by_itself() {
        let budget = budget(None, None);
        budget.cool_down(Some(Duration::from_secs(3)), Backoff::default(), Instant::now());
        assert_eq!(
            budget.try_reserve(1, Instant::now()).unwrap_err(),
            Refusal::Wait(Duration::from_secs(3))
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(budget.try_reserve(1, Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_without_a_retry_time_grows_and_stays_capped() {
        let budget = budget(None, None);
        let backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        for strike in 0..10u32 {
            let pause = budget.cool_down(None, backoff, Instant::now());
            let ceiling = Duration::from_secs(1u64 << strike.min(3));
            assert!(pause <= ceiling, "strike {strike}: {pause:?} > {ceiling:?}");
        }
        budget.succeeded();
    }

    #[tokio::test(start_paused = true)]
    async fn the_vendors_headers_tighten_but_never_loosen() {
        let budget = budget(Some(100), Some(10_000));
        budget.learn(
            &RateLimitSnapshot {
                remaining_requests: Some(3),
                remaining_tokens: Some(50_000),
                ..RateLimitSnapshot::default()
            },
            Instant::now(),
        );
        let view = budget.view(Instant::now());
        assert_eq!(view.remaining_requests, Some(3));
        assert_eq!(view.remaining_tokens, Some(10_000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reservations_never_overrun() {
        let budget = budget(Some(1_000), Some(10_000));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let budget = Arc::clone(&budget);
                tokio::spawn(async move { budget.try_reserve(100, Instant::now()).ok() })
            })
            .collect();
        let mut granted = Vec::new();
        for task in tasks {
            if let Some(reservation) = task.await.unwrap() {
                granted.push(reservation);
            }
        }
        // 10,000 tokens hold exactly 100 reservations of 100 (refill over the test is a few tokens).
        assert!((100..=101).contains(&granted.len()), "{}", granted.len());
    }
}
