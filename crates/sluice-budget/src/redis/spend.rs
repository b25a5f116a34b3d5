//! A tenant's spend shared through Redis. For a tenant with a cap, a replica holds an *allowance* taken
//! by one script (spent plus every replica's holds plus the allowance within the cap, atomically) and
//! holds its requests' worst cases against it locally: a round trip only when the allowance runs short,
//! as for rate leases. An allowance is sized by the replica's recent spending and is at most
//! `lease_share` of what is left divided by the replicas alive (never less than the request); what is
//! left of it goes back after `lease`. Costs (moved from held to spent) and returned allowances are written
//! in the background, merged per period; a tenant without a cap only counts, in the background. While
//! Redis is away, each replica may spend its part of what was left, divided by the replicas last seen
//! alive.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::link::Link;
use crate::{OverBudget, Period, Reserve, SpendBudget};

/// How long a period's hash lives untouched: longer than a month, so a month's spend outlives it.
const HASH_LIFETIME_S: u64 = 40 * 86_400;

/// One tenant's spend of this replica, shared through Redis.
#[derive(Debug)]
pub(crate) struct RedisSpend {
    /// The keys' common start; the period's start follows.
    base: String,
    link: Arc<Link>,
    state: Mutex<SpendLocal>,
    /// One allowance request at a time: the requests behind it look at what it brought first.
    turn: tokio::sync::Mutex<()>,
}

/// Micro-dollars this replica holds in Redis and has not given to a request yet.
#[derive(Debug, Default, Clone, Copy)]
struct Allowance {
    /// Left to give out (negative: answers cost more than their worst case).
    left: i64,
    /// Serves requests until then.
    until: Option<Instant>,
    /// Given out since the last grant, and when that grant came: the recent rate of spending.
    taken: i64,
    since: Option<Instant>,
}

#[derive(Debug, Default)]
struct SpendLocal {
    /// `None` until the first reservation or seed.
    period: Option<Period>,
    /// Settled spend: as Redis last said, plus this replica's costs not written yet.
    spent: i64,
    /// Spent and held, as Redis last said.
    committed: i64,
    /// Reserved here without a hold in Redis (no cap, or while Redis was away): released locally.
    unheld: i64,
    /// While Redis is away: what was committed at the switch, and what this replica committed since.
    share: Option<(i64, i64)>,
    /// Released holds and costs to write, one entry per period.
    pending: Vec<Pending>,
    allowance: Allowance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    period: Period,
    release: i64,
    add: i64,
}

impl SpendLocal {
    /// Moves to `period` if it is newer; true when the state is now in `period`.
    fn enter(&mut self, period: Period) -> bool {
        match self.period {
            Some(current) if current == period => true,
            Some(current) if current > period => false,
            _ => {
                self.period = Some(period);
                self.spent = 0;
                self.committed = 0;
                self.unheld = 0;
                self.share = None;
                self.allowance = Allowance::default();
                true
            }
        }
    }

    fn unwritten(&self, period: Period) -> i64 {
        self.pending.iter().filter(|p| p.period == period).map(|p| p.add).sum()
    }

    fn queue(&mut self, entry: Pending) {
        match self.pending.iter_mut().find(|p| p.period == entry.period) {
            Some(p) => {
                p.release = p.release.saturating_add(entry.release);
                p.add = p.add.saturating_add(entry.add);
            }
            None => self.pending.push(entry),
        }
    }

    /// Takes `micros` from the allowance if it covers them now; `None` when it does not.
    fn take_allowance(&mut self, micros: i64, now: Instant) -> Option<Result<(), OverBudget>> {
        let allowance = &mut self.allowance;
        if allowance.until.is_some_and(|until| until > now) && allowance.left >= micros {
            allowance.left -= micros;
            allowance.taken = allowance.taken.saturating_add(micros);
            return Some(Ok(()));
        }
        None
    }

    /// Gives back what is left of an allowance that stopped serving (or all of it, `now` being `None`).
    fn return_allowance(&mut self, now: Option<Instant>) {
        let expired = match (now, self.allowance.until) {
            (Some(now), Some(until)) => until <= now,
            _ => true,
        };
        if !expired {
            return;
        }
        if let Some(period) = self.period
            && self.allowance.left > 0
        {
            self.queue(Pending {
                period,
                release: self.allowance.left,
                add: 0,
            });
        }
        self.allowance.left = 0;
        self.allowance.until = None;
    }

    /// Holds `micros` against this replica's part of what was left when Redis went away.
    fn reserve_share(&mut self, cap: i64, micros: i64, replicas: u32) -> Result<(), OverBudget> {
        let base = self.committed.max(self.spent);
        let (base, used) = *self.share.get_or_insert((base, 0));
        let allowance = cap.saturating_sub(base).max(0) / i64::from(replicas.max(1));
        if used.saturating_add(micros) > allowance {
            return Err(OverBudget {
                committed: base.saturating_add(used),
            });
        }
        self.share = Some((base, used.saturating_add(micros)));
        self.unheld = self.unheld.saturating_add(micros);
        Ok(())
    }
}

fn lock(state: &Mutex<SpendLocal>) -> MutexGuard<'_, SpendLocal> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisSpend {
    pub(crate) fn new(name: &str, link: Arc<Link>) -> Self {
        Self {
            base: format!("{}:spend:{name}:", link.settings.prefix),
            link,
            state: Mutex::default(),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// How much to ask for: this replica's recent spending over a lease's lifetime plus the request,
    /// at most `lease_share` of what is left divided by the replicas alive, at least the request.
    fn want(&self, s: &SpendLocal, cap: i64, micros: i64, now: Instant) -> i64 {
        let settings = &self.link.settings;
        let recent = s.allowance.since.map_or(0.0, |since| {
            let elapsed = now.saturating_duration_since(since).as_secs_f64().max(0.001);
            s.allowance.taken as f64 / elapsed * settings.lease.as_secs_f64()
        });
        let left = cap.saturating_sub(s.committed.max(s.spent)).max(0) as f64;
        let ceiling = left * settings.lease_share / f64::from(self.link.replicas());
        ((recent + micros as f64).min(ceiling).max(micros as f64)) as i64
    }

    fn key(&self, period: Period) -> String {
        format!("{}{}", self.base, period.0)
    }

    async fn reserve_remote(&self, period: Period, cap: i64, micros: i64) -> Result<(), OverBudget> {
        let _turn = self.turn.lock().await;
        let (known, want) = {
            let now = Instant::now();
            let mut s = lock(&self.state);
            if s.period != Some(period) {
                return Ok(());
            }
            if let Some(done) = s.take_allowance(micros, now) {
                return done;
            }
            (s.spent, self.want(&s, cap, micros, now))
        };
        let key = self.key(period);
        let replies = self
            .link
            .call(|mut connection| async move {
                self.link
                    .scripts
                    .spend_reserve
                    .key(&key)
                    .key(&self.link.replicas_key)
                    .arg(cap)
                    .arg(micros)
                    .arg(&self.link.id)
                    .arg(known)
                    .arg(HASH_LIFETIME_S)
                    .arg(self.link.dead_after_us())
                    .arg(want)
                    .invoke_async::<(i64, i64, i64)>(&mut connection)
                    .await
            })
            .await;
        let now = Instant::now();
        let mut s = lock(&self.state);
        match replies {
            Ok((granted, committed, spent)) => {
                if s.period == Some(period) {
                    s.committed = committed;
                    s.spent = spent.saturating_add(s.unwritten(period));
                }
                if granted <= 0 {
                    return Err(OverBudget { committed });
                }
                if s.period == Some(period) {
                    let allowance = &mut s.allowance;
                    allowance.left = allowance.left.saturating_add(granted - micros);
                    allowance.until = Some(now + self.link.settings.lease);
                    allowance.taken = micros;
                    allowance.since = Some(now);
                }
                Ok(())
            }
            Err(_) if s.period != Some(period) => Ok(()),
            Err(_) => {
                let replicas = self.link.replicas();
                s.return_allowance(None);
                s.reserve_share(cap, micros, replicas)
            }
        }
    }

    async fn seed_remote(&self, period: Period, micros: i64) -> bool {
        let key = self.key(period);
        let reply = self
            .link
            .call(|mut connection| async move {
                self.link
                    .scripts
                    .spend_seed
                    .key(&key)
                    .arg(micros)
                    .arg(HASH_LIFETIME_S)
                    .invoke_async::<(i64, i64)>(&mut connection)
                    .await
            })
            .await;
        let mut s = lock(&self.state);
        match reply {
            Ok((seeded, spent)) => {
                if s.enter(period) {
                    s.spent = spent.saturating_add(s.unwritten(period));
                    s.committed = s.committed.max(s.spent);
                }
                seeded == 1
            }
            // Redis is away: the period starts here, and in Redis from this replica's count if Redis lost it.
            Err(_) if s.period != Some(period) && s.enter(period) => {
                s.spent = micros.max(0);
                s.committed = s.spent;
                true
            }
            Err(_) => false,
        }
    }

    /// Writes the released holds and costs waiting, off the request path; what fails waits for Redis.
    pub(crate) async fn flush(&self) {
        let (pending, current, spent) = {
            let mut s = lock(&self.state);
            if !self.link.is_up() {
                return;
            }
            s.return_allowance(Some(Instant::now()));
            if s.pending.is_empty() {
                return;
            }
            (std::mem::take(&mut s.pending), s.period, s.spent)
        };
        for (i, entry) in pending.iter().enumerate() {
            // Should Redis have lost the hash, it starts again from this replica's count.
            let known = if Some(entry.period) == current {
                spent.saturating_sub(entry.add)
            } else {
                0
            };
            let key = self.key(entry.period);
            let written = self
                .link
                .call(|mut connection| async move {
                    self.link
                        .scripts
                        .spend_settle
                        .key(&key)
                        .arg(entry.release)
                        .arg(entry.add)
                        .arg(&self.link.id)
                        .arg(known)
                        .arg(HASH_LIFETIME_S)
                        .invoke_async::<i64>(&mut connection)
                        .await
                })
                .await;
            let mut s = lock(&self.state);
            match written {
                Ok(total) if s.period == Some(entry.period) => {
                    s.spent = total.saturating_add(s.unwritten(entry.period));
                }
                Ok(_) => {}
                Err(_) => {
                    for unsent in &pending[i..] {
                        s.queue(*unsent);
                    }
                    return;
                }
            }
        }
    }
}

impl SpendBudget for RedisSpend {
    fn reserve(&self, period: Period, cap: Option<i64>, micros: i64) -> Reserve<'_, Result<(), OverBudget>> {
        let mut s = lock(&self.state);
        if !s.enter(period) {
            // A request from a period already over: nothing to hold against.
            return Reserve::ready(Ok(()));
        }
        let Some(cap) = cap.filter(|_| micros > 0) else {
            // Nothing to check: the cost is counted when settled, without a round trip.
            s.unheld = s.unheld.saturating_add(micros.max(0));
            return Reserve::ready(Ok(()));
        };
        if !self.link.is_up() {
            let replicas = self.link.replicas();
            // What the allowance held in Redis goes back when Redis does; the share replaces it.
            s.return_allowance(None);
            return Reserve::ready(s.reserve_share(cap, micros, replicas));
        }
        s.share = None;
        if let Some(done) = s.take_allowance(micros, Instant::now()) {
            return Reserve::ready(done);
        }
        drop(s);
        Reserve::pending(self.reserve_remote(period, cap, micros))
    }

    fn settle(&self, period: Period, reserved: i64, used: i64) {
        let (reserved, used) = (reserved.max(0), used.max(0));
        let mut s = lock(&self.state);
        let mut release = reserved;
        if s.period == Some(period) {
            let unheld = s.unheld.min(reserved);
            s.unheld -= unheld;
            release = 0;
            if unheld < reserved {
                // Held in Redis as part of the allowance: the cost moves from held to spent, and what
                // the worst case did not use stays in the allowance.
                release = used;
                let allowance = &mut s.allowance;
                allowance.left = allowance.left.saturating_add(reserved - unheld - used);
            }
            s.spent = s.spent.saturating_add(used);
            s.committed = s.committed.saturating_add(used - reserved).max(s.spent);
            if let Some((_, committed)) = &mut s.share {
                *committed = committed.saturating_add(used - reserved).max(0);
            }
        }
        s.queue(Pending {
            period,
            release,
            add: used,
        });
        drop(s);
        self.link.wake.notify_one();
    }

    fn spent(&self, period: Period) -> i64 {
        let s = lock(&self.state);
        if s.period == Some(period) { s.spent } else { 0 }
    }

    fn seed(&self, period: Period, micros: i64) -> Reserve<'_, bool> {
        Reserve::pending(self.seed_remote(period, micros))
    }
}
