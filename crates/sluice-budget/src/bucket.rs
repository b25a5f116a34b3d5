//! The arithmetic of one rate budget at an explicit time: continuously refilled buckets, requests in
//! flight, a cooldown. Pure, so every backend (and its tests) shares it.

use std::time::Duration;

use tokio::time::Instant;

use crate::{Backoff, BudgetView, End, Limits, MAX_COOLDOWN, Refusal};

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
        Some(minutes_of(amount - self.level, self.capacity))
    }

    /// Takes `amount` off the bucket after the fact (an answer longer than its reservation): the bucket
    /// may go into debt, by at most an hour of refill, so that one absurd report cannot lock a budget
    /// for longer than a vendor's longest wait.
    fn charge(&mut self, amount: f64) {
        self.level = (self.level - amount).clamp(-60.0 * self.capacity, self.capacity);
    }

    fn give_back(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        self.level = (self.level + amount).min(self.capacity);
    }
}

/// The time `missing` units take to refill at `per_minute`; at most [`MAX_COOLDOWN`] past an hour of
/// refill, whatever the numbers (never a panic on a huge or non-finite count).
pub(crate) fn minutes_of(missing: f64, per_minute: f64) -> Duration {
    Duration::try_from_secs_f64(missing * 60.0 / per_minute)
        .unwrap_or(MAX_COOLDOWN)
        .min(MAX_COOLDOWN + Duration::from_secs(60))
}

/// How long a key cools down after a 429: the vendor's retry time, or without one an exponential
/// backoff over `strikes` (429s without a retry time in a row) with full jitter; at most [`MAX_COOLDOWN`].
pub(crate) fn pause(retry_after: Option<Duration>, backoff: Backoff, strikes: &mut u32) -> Duration {
    match retry_after {
        Some(after) => {
            *strikes = 0;
            after
        }
        None => {
            *strikes = strikes.saturating_add(1);
            let exponent = strikes.saturating_sub(1).min(16);
            let ceiling = backoff.base.saturating_mul(1 << exponent).min(backoff.max);
            // Full jitter: a random point below the ceiling, so keys refused together do not all come
            // back together.
            ceiling.mul_f64(fastrand::f64()).max(Duration::from_millis(10))
        }
    }
    .min(MAX_COOLDOWN)
}

/// One rate budget's state.
#[derive(Debug)]
pub(crate) struct RateState {
    limits: Limits,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    in_flight: u32,
    cooldown_until: Option<Instant>,
    /// Consecutive 429s without a retry time, for the exponential backoff.
    strikes: u32,
}

/// How long a request waits for a slot in flight: a slot frees when a request ends, which cannot be
/// predicted, so the caller checks again shortly.
pub(crate) const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(50);

impl RateState {
    /// A budget with `limits`, full at `now`.
    pub(crate) fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            requests: limits.rpm.map(|r| Bucket::new(r, now)),
            tokens: limits.tpm.map(|t| Bucket::new(t, now)),
            in_flight: 0,
            cooldown_until: None,
            strikes: 0,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// How long until a request of `tokens` fits, refilling to `now` first.
    pub(crate) fn wait(&mut self, tokens: u64, now: Instant) -> Result<Duration, Refusal> {
        let mut wait = Duration::ZERO;
        if let Some(until) = self.cooldown_until {
            if until > now {
                wait = until - now;
            } else {
                self.cooldown_until = None;
            }
        }
        if let Some(bucket) = &mut self.requests {
            bucket.refill(now);
            wait = wait.max(bucket.wait_for(1.0).ok_or(Refusal::TooLarge)?);
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.refill(now);
            wait = wait.max(bucket.wait_for(tokens as f64).ok_or(Refusal::TooLarge)?);
        }
        if let Some(max) = self.limits.max_in_flight
            && self.in_flight >= max
        {
            wait = wait.max(IN_FLIGHT_RECHECK);
        }
        Ok(wait)
    }

    /// Takes one request and `tokens` if they fit now.
    pub(crate) fn reserve(&mut self, tokens: u64, now: Instant) -> Result<(), Refusal> {
        let wait = self.wait(tokens, now)?;
        if !wait.is_zero() {
            return Err(Refusal::Wait(wait));
        }
        if let Some(bucket) = &mut self.requests {
            bucket.level -= 1.0;
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.level -= tokens as f64;
        }
        self.in_flight = self.in_flight.saturating_add(1);
        Ok(())
    }

    pub(crate) fn settle(&mut self, reserved: u64, end: End, now: Instant) {
        match end {
            End::Used(used) => {
                if let Some(bucket) = &mut self.tokens {
                    bucket.refill(now);
                    bucket.charge(used as f64 - reserved as f64);
                }
            }
            End::Cancelled => {
                if let Some(bucket) = &mut self.requests {
                    bucket.give_back(1.0, now);
                }
                if let Some(bucket) = &mut self.tokens {
                    bucket.give_back(reserved as f64, now);
                }
            }
            End::Abandoned => {}
        }
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub(crate) fn learn_remaining(&mut self, requests: Option<u64>, tokens: Option<u64>, now: Instant) {
        if let (Some(remaining), Some(bucket)) = (requests, &mut self.requests) {
            bucket.refill(now);
            bucket.level = bucket.level.min(remaining as f64);
        }
        if let (Some(remaining), Some(bucket)) = (tokens, &mut self.tokens) {
            bucket.refill(now);
            bucket.level = bucket.level.min(remaining as f64);
        }
    }

    pub(crate) fn cool_down(&mut self, retry_after: Option<Duration>, backoff: Backoff, now: Instant) -> Duration {
        let pause = pause(retry_after, backoff, &mut self.strikes);
        let until = now + pause;
        self.cooldown_until = Some(self.cooldown_until.map_or(until, |current| current.max(until)));
        pause
    }

    pub(crate) fn succeeded(&mut self) {
        self.strikes = 0;
    }

    pub(crate) fn view(&mut self, now: Instant) -> BudgetView {
        for bucket in [&mut self.requests, &mut self.tokens].into_iter().flatten() {
            bucket.refill(now);
        }
        BudgetView {
            rpm: self.requests.as_ref().map(|b| b.capacity as u64),
            remaining_requests: self.requests.as_ref().map(|b| b.level.max(0.0).floor() as u64),
            tpm: self.tokens.as_ref().map(|b| b.capacity as u64),
            remaining_tokens: self.tokens.as_ref().map(|b| b.level.max(0.0).floor() as u64),
            in_flight: self.in_flight,
            max_in_flight: self.limits.max_in_flight,
            cooldown_ms: self
                .cooldown_until
                .filter(|until| *until > now)
                .map(|until| (until - now).as_millis() as u64),
        }
    }
}
