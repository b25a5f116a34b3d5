//! The arithmetic of one replica's part of a shared rate budget, at explicit times, pure so it is
//! unit-tested alone:
//! - [`Lease`]: capacity this replica took from the shared bucket and spends without asking, as a
//!   balance owed back (negative when an answer was longer than its reservation), the reservations on
//!   their way to the vendor, what the replica holds outside the bucket, and how large a lease to ask for
//!   next;
//! - [`Share`]: the local bucket a replica falls back on while Redis is unreachable, its limits divided by
//!   the replicas last seen alive;
//! - [`Seen`]: the shared bucket as the last answer showed it, for honest waits without a round trip.

use std::time::Duration;

use tokio::time::Instant;

use crate::{Limits, Refusal};

// === impl Lease ===

/// Capacity taken from the shared bucket and not used yet.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// Requests left to give out here (or owed back, when negative). Ignored without an rpm.
    requests: f64,
    /// Tokens left to give out here (or owed back, when negative). Ignored without a tpm.
    tokens: f64,
    /// New reservations are served from the balance until then; after it, the balance only goes back.
    until: Option<Instant>,
    /// Reservations made here that the vendor has not answered yet (requests, tokens): on their way to
    /// it, so not counted by it yet.
    transit: (f64, f64),
    /// Reservations and their tokens since the last grant, for sizing the next one.
    taken: u32,
    taken_tokens: f64,
    since: Instant,
}

/// How a lease is sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LeasePolicy {
    /// How long a lease serves reservations.
    pub(crate) ttl: Duration,
    /// The largest lease, as a share of a limit divided by the replicas alive.
    pub(crate) share: f64,
}

impl Lease {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            requests: 0.0,
            tokens: 0.0,
            until: None,
            transit: (0.0, 0.0),
            taken: 0,
            taken_tokens: 0.0,
            since: now,
        }
    }

    /// Whether a request of `tokens` fits in the lease now.
    pub(crate) fn fits(&self, limits: Limits, tokens: u64, now: Instant) -> bool {
        self.until.is_some_and(|until| until > now)
            && (limits.rpm.is_none() || self.requests >= 1.0)
            && (limits.tpm.is_none() || self.tokens >= tokens as f64)
    }

    /// Takes one request and `tokens` from the lease (checked with [`Lease::fits`] first); the request is
    /// on its way to the vendor until [`Lease::reached`].
    pub(crate) fn take(&mut self, tokens: u64) {
        self.requests -= 1.0;
        self.tokens -= tokens as f64;
        self.taken = self.taken.saturating_add(1);
        self.taken_tokens += tokens as f64;
        self.carry(tokens);
    }

    /// A reservation made elsewhere (the local share, while Redis is away) is on its way to the vendor
    /// until [`Lease::reached`].
    pub(crate) fn carry(&mut self, tokens: u64) {
        self.transit.0 += 1.0;
        self.transit.1 += tokens as f64;
    }

    /// A reservation of `tokens` reached the vendor (it answered) or never will.
    pub(crate) fn reached(&mut self, tokens: u64) {
        self.transit.0 = (self.transit.0 - 1.0).max(0.0);
        self.transit.1 = (self.transit.1 - tokens as f64).max(0.0);
    }

    /// What this replica holds outside the shared bucket and the vendor has not counted: the balance
    /// (a debt counts as nothing: it is owed, not held) and the reservations on their way. The shared
    /// bucket does not refill into this room: a vendor that counted none of it may still be full.
    pub(crate) fn held(&self, limits: Limits) -> (f64, f64) {
        (
            if limits.rpm.is_some() {
                self.requests.max(0.0) + self.transit.0
            } else {
                0.0
            },
            if limits.tpm.is_some() {
                self.tokens.max(0.0) + self.transit.1
            } else {
                0.0
            },
        )
    }

    /// Puts `requests` and `tokens` back in the balance (negative: charges it).
    pub(crate) fn refund(&mut self, requests: f64, tokens: f64) {
        self.requests += requests;
        self.tokens += tokens;
    }

    /// Adds a grant from the shared bucket, serving until `now + ttl`.
    pub(crate) fn grant(&mut self, requests: u64, tokens: u64, now: Instant, ttl: Duration) {
        self.requests += requests as f64;
        self.tokens += tokens as f64;
        self.until = Some(now + ttl);
        self.taken = 0;
        self.taken_tokens = 0.0;
        self.since = now;
    }

    /// Whether the lease stopped serving and still holds or owes something.
    pub(crate) fn expired_with_balance(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| until <= now) && (self.requests != 0.0 || self.tokens != 0.0)
    }

    /// The balance to give back to the shared bucket, leaving nothing here.
    pub(crate) fn drain(&mut self, limits: Limits) -> (f64, f64) {
        let balance = (
            if limits.rpm.is_some() { self.requests } else { 0.0 },
            if limits.tpm.is_some() { self.tokens } else { 0.0 },
        );
        self.requests = 0.0;
        self.tokens = 0.0;
        self.until = None;
        balance
    }

    /// Caps the balance to what the vendor says is left.
    pub(crate) fn cap(&mut self, requests: Option<u64>, tokens: Option<u64>) {
        if let Some(requests) = requests {
            self.requests = self.requests.min(requests as f64);
        }
        if let Some(tokens) = tokens {
            self.tokens = self.tokens.min(tokens as f64);
        }
    }

    /// The balance as (requests, tokens), for views.
    pub(crate) fn balance(&self) -> (f64, f64) {
        (self.requests, self.tokens)
    }

    /// How much to ask for when a request of `tokens` does not fit: what this replica used over the last
    /// lease, scaled to a lease's lifetime, plus the requests waiting now; never less than the request,
    /// never more than `share` of each limit divided by the `replicas` alive (but at least the request).
    pub(crate) fn want(
        &self,
        limits: Limits,
        tokens: u64,
        waiting: u32,
        replicas: u32,
        policy: LeasePolicy,
        now: Instant,
    ) -> (u64, u64) {
        let replicas = f64::from(replicas.max(1));
        let elapsed = now.saturating_duration_since(self.since).as_secs_f64().max(0.001);
        let rate = f64::from(self.taken) / elapsed;
        let expected = (rate * policy.ttl.as_secs_f64()).ceil() + f64::from(waiting) + 1.0;
        let requests = limits.rpm.map_or(expected, |rpm| {
            let ceiling = (rpm as f64 * policy.share / replicas).floor().max(1.0);
            expected.clamp(1.0, ceiling)
        });
        let per_request = if self.taken > 0 {
            (self.taken_tokens / f64::from(self.taken)).max(tokens as f64)
        } else {
            tokens as f64
        };
        let want_tokens = limits.tpm.map_or(0.0, |tpm| {
            let ceiling = (tpm as f64 * policy.share / replicas).floor();
            (per_request * requests).min(ceiling).max(tokens as f64)
        });
        (
            if limits.rpm.is_some() { requests as u64 } else { 0 },
            want_tokens.ceil() as u64,
        )
    }
}

// === impl Seen ===

/// The shared bucket's levels as the last answer from Redis showed them, after this replica's grant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub(crate) requests: f64,
    pub(crate) tokens: f64,
    pub(crate) at: Instant,
}

impl Seen {
    /// The levels projected to `now` by the refill: what the shared bucket holds at most, unless other
    /// replicas took some since.
    pub(crate) fn project(&self, limits: Limits, now: Instant) -> (f64, f64) {
        let minutes = now.saturating_duration_since(self.at).as_secs_f64() / 60.0;
        let level = |level: f64, limit: Option<u64>| {
            limit.map_or(f64::INFINITY, |limit| {
                (level + minutes * limit as f64).min(limit as f64)
            })
        };
        (level(self.requests, limits.rpm), level(self.tokens, limits.tpm))
    }

    /// How long until a request of `tokens` would fit, from the projection plus `balance` held here.
    pub(crate) fn wait(&self, limits: Limits, tokens: u64, balance: (f64, f64), now: Instant) -> Duration {
        let (requests, held_tokens) = self.project(limits, now);
        let wait = |level: f64, need: f64, limit: Option<u64>| match limit {
            Some(limit) if limit > 0 && level < need => crate::bucket::minutes_of(need - level, limit as f64),
            _ => Duration::ZERO,
        };
        wait(requests + balance.0, 1.0, limits.rpm).max(wait(held_tokens + balance.1, tokens as f64, limits.tpm))
    }
}

// === impl Share ===

/// One per-minute allowance of a [`Share`].
#[derive(Debug, Clone)]
struct Level {
    capacity: f64,
    level: f64,
    last: Instant,
}

impl Level {
    fn refill(&mut self, now: Instant) {
        let minutes = now.saturating_duration_since(self.last).as_secs_f64() / 60.0;
        self.level = (self.level + minutes * self.capacity).min(self.capacity);
        self.last = now;
    }

    /// A request larger than the whole share may go once the share is full, so a request the shared
    /// limit would take is never refused as too large because Redis is away.
    fn wait(&self, amount: f64) -> Duration {
        let need = amount.min(self.capacity);
        if self.level >= need || self.capacity <= 0.0 {
            return Duration::ZERO;
        }
        crate::bucket::minutes_of(need - self.level, self.capacity)
    }
}

/// A replica's local bucket while Redis is unreachable: each limit divided by the replicas last seen
/// alive, so together they stay within it.
#[derive(Debug, Clone)]
pub(crate) struct Share {
    requests: Option<Level>,
    tokens: Option<Level>,
}

impl Share {
    /// A share of `limits` for one of `replicas`, starting from this replica's part of the shared
    /// bucket as last seen (`seen`, already projected; full when never seen) plus its lease `balance`.
    pub(crate) fn new(
        limits: Limits,
        replicas: u32,
        seen: Option<(f64, f64)>,
        balance: (f64, f64),
        now: Instant,
    ) -> Self {
        let replicas = f64::from(replicas.max(1));
        let level = |limit: Option<u64>, seen: Option<f64>, balance: f64| {
            limit.map(|limit| {
                let capacity = limit as f64 / replicas;
                let start = seen.map_or(capacity, |s| s / replicas + balance);
                Level {
                    capacity,
                    level: start.min(capacity),
                    last: now,
                }
            })
        };
        Self {
            requests: level(limits.rpm, seen.map(|s| s.0), balance.0),
            tokens: level(limits.tpm, seen.map(|s| s.1), balance.1),
        }
    }

    /// How long until a request of `tokens` fits.
    pub(crate) fn wait(&mut self, tokens: u64, now: Instant) -> Duration {
        let mut wait = Duration::ZERO;
        if let Some(level) = &mut self.requests {
            level.refill(now);
            wait = wait.max(level.wait(1.0));
        }
        if let Some(level) = &mut self.tokens {
            level.refill(now);
            wait = wait.max(level.wait(tokens as f64));
        }
        wait
    }

    /// Takes one request and `tokens` if they fit now.
    pub(crate) fn reserve(&mut self, tokens: u64, now: Instant) -> Result<(), Refusal> {
        let wait = self.wait(tokens, now);
        if !wait.is_zero() {
            return Err(Refusal::Wait(wait));
        }
        self.refund(-1.0, -(tokens as f64), now);
        Ok(())
    }

    /// Puts `requests` and `tokens` back (negative: charges them).
    pub(crate) fn refund(&mut self, requests: f64, tokens: f64, now: Instant) {
        for (level, amount) in [(&mut self.requests, requests), (&mut self.tokens, tokens)] {
            if let Some(level) = level {
                level.refill(now);
                level.level = (level.level + amount).min(level.capacity);
            }
        }
    }

    /// How far below full the share is (zero or negative): what this replica used beyond the refill,
    /// charged to the shared bucket when Redis is back.
    pub(crate) fn shortfall(&mut self, now: Instant) -> (f64, f64) {
        let mut out = [0.0, 0.0];
        for (slot, level) in out.iter_mut().zip([&mut self.requests, &mut self.tokens]) {
            if let Some(level) = level {
                level.refill(now);
                *slot = level.level - level.capacity;
            }
        }
        (out[0], out[1])
    }

    /// What is left now, for views.
    pub(crate) fn levels(&mut self, now: Instant) -> (Option<f64>, Option<f64>) {
        let level = |l: &mut Option<Level>| {
            l.as_mut().map(|l| {
                l.refill(now);
                l.level
            })
        };
        (level(&mut self.requests), level(&mut self.tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LeasePolicy = LeasePolicy {
        ttl: Duration::from_secs(1),
        share: 0.1,
    };

    fn limits(rpm: Option<u64>, tpm: Option<u64>) -> Limits {
        Limits {
            rpm,
            tpm,
            max_in_flight: None,
        }
    }

    #[test]
    fn a_lease_serves_until_it_expires_and_gives_back_what_is_left() {
        let now = Instant::now();
        let limits = limits(Some(600), Some(60_000));
        let mut lease = Lease::new(now);
        assert!(!lease.fits(limits, 1, now), "nothing leased yet");
        lease.grant(3, 300, now, POLICY.ttl);
        assert!(lease.fits(limits, 100, now));
        lease.take(100);
        lease.take(100);
        assert!(!lease.fits(limits, 101, now), "100 tokens left");
        lease.refund(0.0, 60.0);
        assert!(
            lease.fits(limits, 160, now),
            "an answer shorter than reserved refunds the lease"
        );
        let later = now + Duration::from_secs(1);
        assert!(!lease.fits(limits, 1, later), "expired");
        assert!(lease.expired_with_balance(later));
        assert_eq!(lease.drain(limits), (1.0, 160.0));
        assert!(!lease.expired_with_balance(later));
    }

    #[test]
    fn an_overrun_is_owed_back_as_a_negative_balance() {
        let now = Instant::now();
        let limits = limits(None, Some(1_000));
        let mut lease = Lease::new(now);
        lease.grant(0, 100, now, POLICY.ttl);
        lease.take(100);
        lease.refund(0.0, -250.0);
        assert_eq!(
            lease.drain(limits),
            (0.0, -250.0),
            "the rpm is unlimited: no request balance"
        );
    }

    #[test]
    fn leases_are_small_for_small_limits_and_grow_with_demand() {
        let start = Instant::now();
        let rpm120 = limits(Some(120), Some(12_000));
        let mut lease = Lease::new(start);
        assert_eq!(
            lease.want(rpm120, 50, 0, 3, POLICY, start),
            (1, 50),
            "no history: the request alone"
        );
        // 120 rpm over 3 replicas: a tenth of 40 is 4 requests, 400 tokens at most.
        lease.grant(1, 50, start, POLICY.ttl);
        for _ in 0..50 {
            lease.take(50);
        }
        let later = start + Duration::from_millis(500);
        assert_eq!(lease.want(rpm120, 50, 10, 3, POLICY, later), (4, 200));
        // A large limit: demand decides (100 per second over a 1 s lease, plus waiters and this one).
        let big = limits(Some(1_000_000), Some(100_000_000));
        assert_eq!(lease.want(big, 50, 2, 3, POLICY, later), (103, 5150));
        // A request larger than the cap still gets its own size.
        assert_eq!(lease.want(rpm120, 5_000, 0, 3, POLICY, later).1, 5_000);
        // Without limits on a dimension, nothing is asked of it.
        assert_eq!(
            Lease::new(start).want(limits(None, Some(600)), 10, 0, 1, POLICY, start),
            (0, 10)
        );
    }

    #[test]
    fn a_replica_holds_its_balance_and_its_requests_until_the_vendor_answered() {
        let now = Instant::now();
        let both = limits(Some(60), Some(6_000));
        let mut lease = Lease::new(now);
        lease.grant(4, 400, now, POLICY.ttl);
        lease.take(100);
        lease.take(100);
        assert_eq!(lease.held(both), (4.0, 400.0), "two sent, two left: all held");
        // A new lease drains the balance; what was sent is still on its way.
        assert_eq!(lease.drain(both), (2.0, 200.0));
        assert_eq!(lease.held(both), (2.0, 200.0));
        lease.reached(100);
        assert_eq!(lease.held(both), (1.0, 100.0), "one answered");
        // An overrun owed back holds nothing: it is owed, not held.
        lease.refund(0.0, -300.0);
        assert_eq!(lease.held(both), (1.0, 100.0));
        lease.reached(100);
        assert_eq!(lease.held(both), (0.0, 0.0));
        lease.reached(100);
        assert_eq!(lease.held(both), (0.0, 0.0), "never below nothing");
        // Reservations from the local share are on their way too; a dimension without a limit holds nothing.
        lease.carry(50);
        assert_eq!(lease.held(limits(None, Some(6_000))), (0.0, 50.0));
    }

    #[test]
    fn a_vendors_remaining_caps_the_lease() {
        let now = Instant::now();
        let mut lease = Lease::new(now);
        lease.grant(10, 1_000, now, POLICY.ttl);
        lease.cap(Some(3), None);
        assert_eq!(lease.balance(), (3.0, 1_000.0));
    }

    #[test]
    fn the_shared_bucket_is_projected_by_its_refill() {
        let now = Instant::now();
        let limits = limits(Some(60), Some(6_000));
        let seen = Seen {
            requests: 0.0,
            tokens: 1_000.0,
            at: now,
        };
        let later = now + Duration::from_secs(10);
        assert_eq!(seen.project(limits, later), (10.0, 2_000.0));
        assert_eq!(seen.wait(limits, 500, (0.0, 0.0), now), Duration::from_secs(1));
        assert_eq!(seen.wait(limits, 1_500, (1.0, 0.0), now), Duration::from_secs(5));
    }

    #[test]
    fn a_share_divides_the_limits_and_starts_from_what_was_left() {
        let now = Instant::now();
        let limits = limits(Some(120), Some(3_000));
        let mut share = Share::new(limits, 3, None, (0.0, 0.0), now);
        assert_eq!(
            share.levels(now),
            (Some(40.0), Some(1_000.0)),
            "never seen: a full third"
        );
        let mut share = Share::new(limits, 3, Some((30.0, 300.0)), (2.0, 50.0), now);
        assert_eq!(share.levels(now), (Some(12.0), Some(150.0)));
        assert!(share.reserve(150, now).is_ok());
        assert_eq!(
            share.reserve(10, now),
            Err(Refusal::Wait(Duration::from_millis(600))),
            "1,000 a minute over three replicas: 10 tokens in 0.6 s"
        );
        assert_eq!(share.shortfall(now), (-29.0, -1_000.0));
    }

    #[test]
    fn a_request_larger_than_a_share_waits_for_a_full_share_instead_of_failing() {
        let now = Instant::now();
        let mut share = Share::new(limits(None, Some(300)), 3, Some((0.0, 0.0)), (0.0, 0.0), now);
        assert_eq!(share.wait(250, now), Duration::from_secs(60), "a full share of 100");
        let later = now + Duration::from_secs(60);
        assert!(share.reserve(250, later).is_ok());
        assert_eq!(share.shortfall(later), (0.0, -250.0), "in debt");
    }
}
