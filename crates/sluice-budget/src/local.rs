//! Budgets in this process's memory: each one a short mutex around its state, held for a few instructions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::bucket::RateState;
use crate::{
    BackendStatus, Backoff, BudgetBackend, BudgetView, End, Limits, OverBudget, Period, RateBudget, Refusal, Reserve,
    SpendBudget,
};

/// Every budget of one process. With several replicas each enforces the full limits on its own; a shared
/// backend divides them.
#[derive(Debug, Default)]
pub struct LocalBudgets {
    rates: Mutex<HashMap<Box<str>, Arc<LocalRate>>>,
    spends: Mutex<HashMap<Box<str>, Arc<LocalSpend>>>,
}

impl LocalBudgets {
    /// An empty set of budgets.
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BudgetBackend for LocalBudgets {
    fn rate(&self, name: &str, limits: Limits) -> Arc<dyn RateBudget> {
        let mut rates = lock(&self.rates);
        if let Some(existing) = rates.get(name)
            && existing.limits() == limits
        {
            return Arc::clone(existing) as Arc<dyn RateBudget>;
        }
        let fresh = Arc::new(LocalRate::new(limits));
        rates.insert(name.into(), Arc::clone(&fresh));
        fresh
    }

    fn spend(&self, name: &str) -> Arc<dyn SpendBudget> {
        let mut spends = lock(&self.spends);
        Arc::clone(spends.entry(name.into()).or_default()) as Arc<dyn SpendBudget>
    }

    fn status(&self) -> BackendStatus {
        BackendStatus {
            backend: "memory",
            shared: false,
            replicas: 1,
            fallbacks: 0,
        }
    }
}

// === impl LocalRate ===

/// A rate budget in memory.
#[derive(Debug)]
pub struct LocalRate {
    state: Mutex<RateState>,
}

impl LocalRate {
    /// A budget with `limits`, full now.
    pub fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(RateState::new(limits, Instant::now())),
        }
    }

    fn limits(&self) -> Limits {
        lock(&self.state).limits()
    }
}

impl RateBudget for LocalRate {
    fn reserve(&self, tokens: u64) -> Reserve<'_, Result<(), Refusal>> {
        Reserve::ready(lock(&self.state).reserve(tokens, Instant::now()))
    }

    fn settle(&self, reserved: u64, end: End) {
        lock(&self.state).settle(reserved, end, Instant::now());
    }

    fn available_in(&self, tokens: u64) -> Result<Duration, Refusal> {
        lock(&self.state).wait(tokens, Instant::now())
    }

    fn learn_remaining(&self, requests: Option<u64>, tokens: Option<u64>) {
        lock(&self.state).learn_remaining(requests, tokens, Instant::now());
    }

    fn cool_down(&self, retry_after: Option<Duration>, backoff: Backoff) -> Duration {
        lock(&self.state).cool_down(retry_after, backoff, Instant::now())
    }

    fn succeeded(&self) {
        lock(&self.state).succeeded();
    }

    fn view(&self) -> BudgetView {
        lock(&self.state).view(Instant::now())
    }
}

// === impl LocalSpend ===

/// A spend budget in memory: the current period's settled spend and what requests in flight hold.
#[derive(Debug, Default)]
pub struct LocalSpend {
    state: Mutex<SpendState>,
}

#[derive(Debug, Default)]
struct SpendState {
    /// `None` until the first reservation or seed.
    period: Option<Period>,
    spent: i64,
    held: i64,
}

impl SpendState {
    /// Moves to `period` if it is newer than the current one; true when the state is now in `period`.
    fn enter(&mut self, period: Period) -> bool {
        match self.period {
            Some(current) if current == period => true,
            Some(current) if current > period => false,
            _ => {
                *self = Self {
                    period: Some(period),
                    spent: 0,
                    held: 0,
                };
                true
            }
        }
    }
}

impl SpendBudget for LocalSpend {
    fn reserve(&self, period: Period, cap: Option<i64>, micros: i64) -> Reserve<'_, Result<(), OverBudget>> {
        let mut state = lock(&self.state);
        if !state.enter(period) {
            // A request from a period already over: nothing to hold against.
            return Reserve::ready(Ok(()));
        }
        let committed = state.spent.saturating_add(state.held);
        if let Some(cap) = cap
            && micros > 0
            && committed.saturating_add(micros) > cap
        {
            return Reserve::ready(Err(OverBudget { committed }));
        }
        state.held = state.held.saturating_add(micros.max(0));
        Reserve::ready(Ok(()))
    }

    fn settle(&self, period: Period, reserved: i64, used: i64) {
        let mut state = lock(&self.state);
        if state.period != Some(period) {
            return;
        }
        state.held = state.held.saturating_sub(reserved.max(0)).max(0);
        state.spent = state.spent.saturating_add(used.max(0));
    }

    fn spent(&self, period: Period) -> i64 {
        let state = lock(&self.state);
        if state.period == Some(period) { state.spent } else { 0 }
    }

    fn seed(&self, period: Period, micros: i64) -> Reserve<'_, bool> {
        let mut state = lock(&self.state);
        if state.period == Some(period) {
            return Reserve::ready(false);
        }
        if !state.enter(period) {
            return Reserve::ready(false);
        }
        state.spent = micros.max(0);
        Reserve::ready(true)
    }
}
