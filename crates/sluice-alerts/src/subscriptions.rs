//! Tenants' subscription requests waiting for an admin, read from the store (whichever replica took the
//! request). Each is recorded in `alerts_fired` under the period `subscription:<id>` before it is
//! announced, so it is announced once, by the replica whose insert made the row, across restarts.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sluice_store::{FiredAlert, Store, StoreError, SubscriptionStatus};

use crate::payload::Event;

/// Pending subscription requests across checks.
#[derive(Debug)]
pub struct SubscriptionWatch {
    store: Store,
    /// Request ids known recorded, so a check does not ask the store again.
    known: HashSet<String>,
}

impl SubscriptionWatch {
    /// Watches the subscription requests of `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            known: HashSet::new(),
        }
    }

    /// Reads the pending requests and returns those this replica is the first to see.
    pub async fn check(&mut self, now: DateTime<Utc>) -> Result<Vec<Event>, StoreError> {
        let pending = self.store.list_subscriptions(Some(SubscriptionStatus::Pending)).await?;
        let mut events = Vec::new();
        for request in &pending {
            if self.known.contains(&request.id) {
                continue;
            }
            let fired = FiredAlert {
                tenant: request.tenant.clone(),
                period: format!("subscription:{}", request.id),
                threshold_bp: 0,
                spend_micros: 0,
                fired_at: now,
            };
            if self.store.record_alert(&fired).await? {
                events.push(Event::SubscriptionRequested {
                    request: request.id.clone(),
                    tenant: request.tenant.clone(),
                    service: request.service.to_string(),
                    reason: request.reason.clone(),
                });
            }
            self.known.insert(request.id.clone());
        }
        // Decided requests leave the pending list: forget them.
        let ids: HashSet<&str> = pending.iter().map(|r| r.id.as_str()).collect();
        self.known.retain(|id| ids.contains(id.as_str()));
        Ok(events)
    }
}
