//! Tenants' spend against their budgets, read from the store (the ledger's per-day rollups, which every
//! replica writes), so that what one replica spent counts on all of them. A threshold crossed is recorded
//! in the store before it is announced ([`Store::record_alert`]): the replica whose insert made the
//! row sends it, the others and any later start find it there. A replica that dies between the record
//! and the delivery loses that alert: at most once, never twice.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sluice_store::{BudgetPeriod, FiredAlert, GroupBy, SpendFilter, Store, StoreError, format_usd, period_key};

use crate::payload::Event;

/// Budget thresholds across checks.
#[derive(Debug)]
pub struct BudgetWatch {
    store: Store,
    /// Thresholds announced, in basis points, ascending.
    thresholds: Vec<u32>,
    /// (tenant, period, threshold) known recorded, so a check does not ask the store again.
    known: HashSet<(String, String, u32)>,
}

impl BudgetWatch {
    /// Watches the tenants of `store` for `thresholds` (basis points).
    pub fn new(store: Store, thresholds: Vec<u32>) -> Self {
        Self {
            store,
            thresholds,
            known: HashSet::new(),
        }
    }

    /// Reads every budgeted tenant's spend this period and returns the thresholds this replica is the first
    /// to see crossed. Three queries a check, whatever the number of tenants.
    pub async fn check(&mut self, now: DateTime<Utc>) -> Result<Vec<Event>, StoreError> {
        if self.thresholds.is_empty() {
            return Ok(Vec::new());
        }
        let tenants: Vec<_> = self
            .store
            .list_tenants()
            .await?
            .into_iter()
            .filter(|t| t.budget_micros.is_some_and(|b| b > 0))
            .collect();
        let mut events = Vec::new();
        for period in [BudgetPeriod::Month, BudgetPeriod::Day] {
            let budgeted: Vec<_> = tenants.iter().filter(|t| t.budget_period == period).collect();
            if budgeted.is_empty() {
                continue;
            }
            let mut filter = SpendFilter::new(GroupBy::Tenant);
            filter.from = Some(period.start(now).date_naive());
            let spend = self.store.spend(&filter).await?;
            let key = period_key(period, now);
            for tenant in budgeted {
                let budget = tenant.budget_micros.unwrap_or(i64::MAX);
                let spent = spend
                    .iter()
                    .find(|row| row.group == tenant.name)
                    .map_or(0, |row| row.cost_micros);
                for &bp in &self.thresholds {
                    if i128::from(spent) * 10_000 < i128::from(budget) * i128::from(bp) {
                        break;
                    }
                    let id = (tenant.name.clone(), key.clone(), bp);
                    if self.known.contains(&id) {
                        continue;
                    }
                    let fired = FiredAlert {
                        tenant: tenant.name.clone(),
                        period: key.clone(),
                        threshold_bp: bp,
                        spend_micros: spent,
                        fired_at: now,
                    };
                    if self.store.record_alert(&fired).await? {
                        events.push(Event::BudgetThreshold {
                            tenant: tenant.name.clone(),
                            period: key.clone(),
                            threshold: f64::from(bp) / 10_000.0,
                            spend_usd: format_usd(spent),
                            budget_usd: format_usd(budget),
                        });
                    }
                    self.known.insert(id);
                }
            }
        }
        // Forget past periods.
        let current = [period_key(BudgetPeriod::Month, now), period_key(BudgetPeriod::Day, now)];
        self.known.retain(|(_, period, _)| current.contains(period));
        Ok(events)
    }
}
