//! A rate budget shared through Redis: reservations served from a local lease, a round trip only when
//! the lease runs short (one at a time per budget: the requests behind it wait for the same answer),
//! overruns and unused leases given back, what the replica holds outside the shared bucket (its lease and
//! its requests not answered yet) told to it, cooldowns announced to every replica, and a local share of
//! the limits while Redis is away.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::events::{Event, encode};
use super::lease::{Lease, LeasePolicy, Seen, Share};
use super::link::{Failure, Link};
use crate::bucket::{IN_FLIGHT_RECHECK, pause};
use crate::{Backoff, BudgetView, End, Limits, RateBudget, Refusal, Reserve};

/// How long the shared bucket's hash lives untouched: past the longest cooldown, after which a bucket
/// has refilled anyway.
const HASH_LIFETIME_MS: u64 = 3_660_000;

/// One rate budget of this replica, shared through Redis.
#[derive(Debug)]
pub(crate) struct RedisRate {
    name: Arc<str>,
    key: String,
    limits: Limits,
    link: Arc<Link>,
    state: Mutex<RateLocal>,
    /// One lease request at a time: the requests behind it look at the lease it brought first.
    turn: tokio::sync::Mutex<()>,
    waiting: AtomicU32,
}

#[derive(Debug)]
struct RateLocal {
    lease: Lease,
    in_flight: u32,
    cooldown_until: Option<Instant>,
    /// 429s without a retry time in a row.
    strikes: u32,
    /// The shared bucket said a request of at least this many tokens cannot fit before then.
    closed: Option<(Instant, u64)>,
    seen: Option<Seen>,
    /// While Redis is unreachable: this replica's share of the limits.
    share: Option<Share>,
    /// A cooldown to announce, in ms (0: none).
    cool_ms: u64,
    /// What the vendor said is left, to tighten the shared bucket with.
    learnt: (Option<u64>, Option<u64>),
    /// What this replica last told the shared bucket it holds, and when it asked.
    reported: Option<((f64, f64), Instant)>,
}

/// What a look at the local state decided.
enum Step {
    Done(Result<(), Refusal>),
    /// The lease is short: ask Redis.
    Ask,
}

/// The answer of the rate script.
#[derive(Debug)]
struct RateReply {
    wait_ms: u64,
    cool_left_ms: u64,
    granted: (u64, u64),
    left: (f64, f64),
}

/// What one call of the rate script carries.
#[derive(Debug, Default, Clone, Copy)]
struct RateCall {
    give: (f64, f64),
    want: (u64, u64),
    need: (u64, u64),
    learnt: (Option<u64>, Option<u64>),
    cool_ms: u64,
    /// What this replica holds outside the bucket after `give`: its balance, if it keeps it, and its
    /// reservations on their way to the vendor.
    held: (f64, f64),
}

fn lock(state: &Mutex<RateLocal>) -> MutexGuard<'_, RateLocal> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisRate {
    pub(crate) fn new(name: &str, limits: Limits, link: Arc<Link>) -> Self {
        Self {
            key: format!("{}:rate:{name}", link.settings.prefix),
            name: name.into(),
            limits,
            link,
            state: Mutex::new(RateLocal {
                lease: Lease::new(Instant::now()),
                in_flight: 0,
                cooldown_until: None,
                strikes: 0,
                closed: None,
                seen: None,
                share: None,
                cool_ms: 0,
                learnt: (None, None),
                reported: None,
            }),
            turn: tokio::sync::Mutex::new(()),
            waiting: AtomicU32::new(0),
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    fn policy(&self) -> LeasePolicy {
        LeasePolicy {
            ttl: self.link.settings.lease,
            share: self.link.settings.lease_share,
        }
    }

    fn too_large(&self, tokens: u64) -> bool {
        self.limits.rpm == Some(0) || self.limits.tpm.is_some_and(|tpm| tokens > tpm)
    }

    /// The local checks, and the lease when it covers the request.
    fn local(&self, s: &mut RateLocal, tokens: u64, now: Instant) -> Step {
        if self.too_large(tokens) {
            return Step::Done(Err(Refusal::TooLarge));
        }
        if let Some(until) = s.cooldown_until {
            if until > now {
                return Step::Done(Err(Refusal::Wait(until - now)));
            }
            s.cooldown_until = None;
        }
        if let Some(max) = self.limits.max_in_flight {
            // A cap in flight cannot be leased: each replica takes its part of it.
            let mine = (max / self.link.replicas()).max(1);
            if s.in_flight >= mine {
                return Step::Done(Err(Refusal::Wait(IN_FLIGHT_RECHECK)));
            }
        }
        if !self.link.is_up() {
            let share = self.share(s, now);
            let taken = share.reserve(tokens, now);
            if taken.is_ok() {
                s.in_flight = s.in_flight.saturating_add(1);
                s.lease.carry(tokens);
            }
            return Step::Done(taken);
        }
        if let Some(mut share) = s.share.take() {
            // Redis is back: what this replica used beyond its share's refill is owed to the shared
            // bucket, which refilled meanwhile as if nobody used it.
            let (requests, tokens) = share.shortfall(now);
            s.lease.refund(requests, tokens);
            s.seen = None;
            s.closed = None;
        }
        if (self.limits.rpm.is_none() && self.limits.tpm.is_none()) || s.lease.fits(self.limits, tokens, now) {
            s.lease.take(tokens);
            s.in_flight = s.in_flight.saturating_add(1);
            return Step::Done(Ok(()));
        }
        if let Some((until, size)) = s.closed {
            if until <= now {
                s.closed = None;
            } else if tokens >= size {
                return Step::Done(Err(Refusal::Wait(until - now)));
            }
        }
        Step::Ask
    }

    /// This replica's share while Redis is away, made from what it last knew.
    fn share<'s>(&self, s: &'s mut RateLocal, now: Instant) -> &'s mut Share {
        let RateLocal { share, lease, seen, .. } = s;
        share.get_or_insert_with(|| {
            let balance = lease.drain(self.limits);
            let seen = seen.map(|seen| seen.project(self.limits, now));
            Share::new(self.limits, self.link.replicas(), seen, balance, now)
        })
    }

    async fn reserve_remote(&self, tokens: u64) -> Result<(), Refusal> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _turn = self.turn.lock().await;
        let waiting = self.waiting.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        let call = {
            let now = Instant::now();
            let mut s = lock(&self.state);
            if let Step::Done(result) = self.local(&mut s, tokens, now) {
                return result;
            }
            let want = s
                .lease
                .want(self.limits, tokens, waiting, self.link.replicas(), self.policy(), now);
            let give = s.lease.drain(self.limits);
            RateCall {
                give,
                held: s.lease.held(self.limits),
                want,
                need: (
                    u64::from(self.limits.rpm.is_some()),
                    if self.limits.tpm.is_some() { tokens } else { 0 },
                ),
                learnt: std::mem::take(&mut s.learnt),
                cool_ms: std::mem::take(&mut s.cool_ms),
            }
        };
        // The lease serves from when it was asked for, not from when the answer came: Redis counts it out
        // from the script's run, which is between the two, so a slow answer cannot stretch the lease past
        // the time the bucket keeps room for it.
        let asked = Instant::now();
        let reply = self.run(call).await;
        let now = Instant::now();
        let mut s = lock(&self.state);
        match reply {
            Ok(reply) => {
                self.observe(&mut s, &reply, now);
                let granted = (reply.granted.0 as f64, reply.granted.1 as f64);
                s.reported = Some(((call.held.0 + granted.0, call.held.1 + granted.1), asked));
                if reply.wait_ms == 0 {
                    s.lease
                        .grant(reply.granted.0, reply.granted.1, asked, self.link.settings.lease);
                    s.lease.take(tokens);
                    s.in_flight = s.in_flight.saturating_add(1);
                    Ok(())
                } else {
                    let wait = Duration::from_millis(reply.wait_ms);
                    s.closed = Some((now + wait, tokens));
                    Err(Refusal::Wait(wait))
                }
            }
            Err(_) => {
                // Redis is away now: what was being given back stays here, in the share.
                s.lease.refund(call.give.0, call.give.1);
                match self.local(&mut s, tokens, now) {
                    Step::Done(result) => result,
                    Step::Ask => Err(Refusal::Wait(IN_FLIGHT_RECHECK)),
                }
            }
        }
    }

    /// Learns the shared bucket's state from an answer.
    fn observe(&self, s: &mut RateLocal, reply: &RateReply, now: Instant) {
        s.seen = Some(Seen {
            requests: reply.left.0,
            tokens: reply.left.1,
            at: now,
        });
        if reply.cool_left_ms > 0 {
            let until = now + Duration::from_millis(reply.cool_left_ms);
            s.cooldown_until = Some(s.cooldown_until.map_or(until, |current| current.max(until)));
        }
    }

    async fn run(&self, call: RateCall) -> Result<RateReply, Failure> {
        let limit = |l: Option<u64>| l.map_or(-1, |v| v as i64);
        let learnt = |l: Option<u64>| l.map_or(-1, |v| v as i64);
        let message = encode(
            &self.link.id,
            &Event::Cooldown {
                name: self.name.as_ref().into(),
                pause: Duration::from_millis(call.cool_ms),
            },
        );
        // What a replica holds counts for a lease and a half after it said so: it says so again at least
        // every half lease while it holds anything (`flush`), and a replica gone holds nothing.
        let lease_out_ms = u64::try_from(self.link.settings.lease.as_millis() * 3 / 2).unwrap_or(u64::MAX);
        let reply: (u64, u64, u64, u64, String, String) = self
            .link
            .call(|mut connection| async move {
                self.link
                    .scripts
                    .rate
                    .key(&self.key)
                    .arg(limit(self.limits.rpm))
                    .arg(limit(self.limits.tpm))
                    .arg(call.give.0)
                    .arg(call.give.1)
                    .arg(call.want.0)
                    .arg(call.want.1)
                    .arg(call.need.0)
                    .arg(call.need.1)
                    .arg(learnt(call.learnt.0))
                    .arg(learnt(call.learnt.1))
                    .arg(call.cool_ms)
                    .arg(HASH_LIFETIME_MS)
                    .arg(&self.link.channel)
                    .arg(message)
                    .arg(&self.link.id)
                    .arg(lease_out_ms)
                    .arg(call.held.0)
                    .arg(call.held.1)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(RateReply {
            granted: (reply.0, reply.1),
            wait_ms: reply.2,
            cool_left_ms: reply.3,
            left: (reply.4.parse().unwrap_or(0.0), reply.5.parse().unwrap_or(0.0)),
        })
    }

    /// Sends what waits to be written (an expired lease's balance, a cooldown, what the vendor said is
    /// left, what this replica holds when that changed or is due again), off the request path.
    pub(crate) async fn flush(&self) {
        // After a lease request in progress, whose answer's holding this call must not overwrite.
        let _turn = self.turn.lock().await;
        let asked = Instant::now();
        let call = {
            let mut s = lock(&self.state);
            if s.share.is_some() || !self.link.is_up() {
                return;
            }
            let give = if s.lease.expired_with_balance(asked) {
                s.lease.drain(self.limits)
            } else {
                (0.0, 0.0)
            };
            let held = s.lease.held(self.limits);
            let call = RateCall {
                give,
                held,
                learnt: std::mem::take(&mut s.learnt),
                cool_ms: std::mem::take(&mut s.cool_ms),
                ..RateCall::default()
            };
            // Holdings are told at most twice a lease: often enough that they never lapse while held
            // (they count for a lease and a half), and that the room answers free comes back soon.
            let report_due = match s.reported {
                None => held != (0.0, 0.0),
                Some((told, at)) => {
                    (held != told || held != (0.0, 0.0))
                        && asked.saturating_duration_since(at) >= self.link.settings.lease / 2
                }
            };
            if call.give == (0.0, 0.0) && call.cool_ms == 0 && call.learnt == (None, None) && !report_due {
                return;
            }
            call
        };
        if let Ok(reply) = self.run(call).await {
            let mut s = lock(&self.state);
            s.reported = Some((call.held, asked));
            self.observe(&mut s, &reply, Instant::now());
        }
    }

    /// Another replica cooled this budget down.
    pub(crate) fn cooled_elsewhere(&self, pause: Duration) {
        let until = Instant::now() + pause.min(crate::MAX_COOLDOWN);
        let mut s = lock(&self.state);
        s.cooldown_until = Some(s.cooldown_until.map_or(until, |current| current.max(until)));
    }
}

impl RateBudget for RedisRate {
    fn reserve(&self, tokens: u64) -> Reserve<'_, Result<(), Refusal>> {
        let now = Instant::now();
        match self.local(&mut lock(&self.state), tokens, now) {
            Step::Done(result) => Reserve::ready(result),
            Step::Ask => Reserve::pending(self.reserve_remote(tokens)),
        }
    }

    fn settle(&self, reserved: u64, end: End) {
        let now = Instant::now();
        let mut s = lock(&self.state);
        s.in_flight = s.in_flight.saturating_sub(1);
        let (requests, tokens) = match end {
            End::Used(used) => (0.0, reserved as f64 - used as f64),
            End::Cancelled => (1.0, reserved as f64),
            End::Abandoned => return,
        };
        match &mut s.share {
            Some(share) => share.refund(requests, tokens, now),
            None => s.lease.refund(requests, tokens),
        }
    }

    fn reached(&self, reserved: u64) {
        lock(&self.state).lease.reached(reserved);
    }

    fn available_in(&self, tokens: u64) -> Result<Duration, Refusal> {
        if self.too_large(tokens) {
            return Err(Refusal::TooLarge);
        }
        let now = Instant::now();
        let mut s = lock(&self.state);
        let mut wait = s
            .cooldown_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        if let Some(max) = self.limits.max_in_flight
            && s.in_flight >= (max / self.link.replicas()).max(1)
        {
            wait = wait.max(IN_FLIGHT_RECHECK);
        }
        if !self.link.is_up() {
            return Ok(wait.max(self.share(&mut s, now).wait(tokens, now)));
        }
        if (self.limits.rpm.is_none() && self.limits.tpm.is_none()) || s.lease.fits(self.limits, tokens, now) {
            return Ok(wait);
        }
        if let Some((until, size)) = s.closed
            && until > now
            && tokens >= size
        {
            return Ok(wait.max(until - now));
        }
        let balance = if s.lease.fits(self.limits, 0, now) {
            s.lease.balance()
        } else {
            (0.0, 0.0)
        };
        Ok(s.seen
            .map_or(wait, |seen| wait.max(seen.wait(self.limits, tokens, balance, now))))
    }

    fn learn_remaining(&self, requests: Option<u64>, tokens: Option<u64>) {
        let requests = requests.filter(|_| self.limits.rpm.is_some());
        let tokens = tokens.filter(|_| self.limits.tpm.is_some());
        if requests.is_none() && tokens.is_none() {
            return;
        }
        let now = Instant::now();
        let mut s = lock(&self.state);
        s.lease.cap(requests, tokens);
        let Some(mut seen) = s.seen else { return };
        // Only news that tightens the shared bucket is worth a write: the vendor counts fewer left than
        // the bucket holds outside every lease.
        let (held_requests, held_tokens) = seen.project(self.limits, now);
        let tighter = |said: Option<u64>, held: f64| said.filter(|said| (*said as f64) < held);
        let (requests, tokens) = (tighter(requests, held_requests), tighter(tokens, held_tokens));
        if requests.is_none() && tokens.is_none() {
            return;
        }
        let lower = |pending: Option<u64>, said: Option<u64>| match (pending, said) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        s.learnt = (lower(s.learnt.0, requests), lower(s.learnt.1, tokens));
        seen.requests = requests.map_or(held_requests, |r| r as f64);
        seen.tokens = tokens.map_or(held_tokens, |t| t as f64);
        seen.at = now;
        s.seen = Some(seen);
    }

    fn cool_down(&self, retry_after: Option<Duration>, backoff: Backoff) -> Duration {
        let now = Instant::now();
        let mut s = lock(&self.state);
        let pause = pause(retry_after, backoff, &mut s.strikes);
        let until = now + pause;
        s.cooldown_until = Some(s.cooldown_until.map_or(until, |current| current.max(until)));
        s.cool_ms = s.cool_ms.max(pause.as_millis() as u64).max(1);
        drop(s);
        // Announced at once: every request another replica sends meanwhile would be refused too.
        self.link.urgent.notify_one();
        pause
    }

    fn succeeded(&self) {
        lock(&self.state).strikes = 0;
    }

    fn view(&self) -> BudgetView {
        let now = Instant::now();
        let mut s = lock(&self.state);
        let (requests, tokens) = match &mut s.share {
            Some(share) => {
                let (r, t) = share.levels(now);
                (r.unwrap_or(0.0), t.unwrap_or(0.0))
            }
            None => {
                let full = |limit: Option<u64>| limit.map_or(0.0, |l| l as f64);
                let (r, t) = s.seen.map_or((full(self.limits.rpm), full(self.limits.tpm)), |seen| {
                    seen.project(self.limits, now)
                });
                let (lr, lt) = if s.lease.fits(self.limits, 0, now) {
                    s.lease.balance()
                } else {
                    (0.0, 0.0)
                };
                (r + lr, t + lt)
            }
        };
        let remaining = |level: f64, limit: Option<u64>| limit.map(|l| level.clamp(0.0, l as f64).floor() as u64);
        BudgetView {
            rpm: self.limits.rpm,
            remaining_requests: remaining(requests, self.limits.rpm),
            tpm: self.limits.tpm,
            remaining_tokens: remaining(tokens, self.limits.tpm),
            in_flight: s.in_flight,
            max_in_flight: self.limits.max_in_flight,
            cooldown_ms: s
                .cooldown_until
                .filter(|until| *until > now)
                .map(|until| (until - now).as_millis() as u64),
        }
    }
}
