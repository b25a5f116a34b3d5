//! A tenant's spend shared through Redis: for a tenant with a cap, each request's worst case is held by
//! one script (spent plus every replica's holds plus this request within the cap, atomically); costs and
//! released holds are written in the background, merged per period; a tenant without a cap only counts,
//! in the background. While Redis is away, each replica may spend its part of what was left, divided by
//! the replicas last seen alive.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
        }
    }

    fn key(&self, period: Period) -> String {
        format!("{}{}", self.base, period.0)
    }

    async fn reserve_remote(&self, period: Period, cap: i64, micros: i64) -> Result<(), OverBudget> {
        let key = self.key(period);
        let known = lock(&self.state).spent;
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
                    .invoke_async::<(i64, i64, i64)>(&mut connection)
                    .await
            })
            .await;
        let mut s = lock(&self.state);
        match replies {
            Ok((held, committed, spent)) => {
                if s.period == Some(period) {
                    s.committed = committed;
                    s.spent = spent.saturating_add(s.unwritten(period));
                }
                if held == 1 {
                    Ok(())
                } else {
                    Err(OverBudget { committed })
                }
            }
            Err(_) if s.period != Some(period) => Ok(()),
            Err(_) => {
                let replicas = self.link.replicas();
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
            if s.pending.is_empty() || !self.link.is_up() {
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
            return Reserve::ready(s.reserve_share(cap, micros, replicas));
        }
        s.share = None;
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
            release -= unheld;
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
