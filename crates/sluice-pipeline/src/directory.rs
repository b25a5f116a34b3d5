//! Who holds a virtual key: keys and tenants read from the store into memory and refreshed every few
//! seconds, so the request path never waits on the database and a revoked key stops working within one
//! refresh. With replicas sharing a budget backend, a change made on one is announced to the others: a
//! revoked key is dropped from every replica's memory at once, without reading the database (which may
//! be unreachable), and a change to tenants or keys makes them read it again. Grants and pending
//! subscription requests are reloaded whenever the store's access version moves, read every
//! [`ACCESS_POLL`], so an approval takes effect on every replica within a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sluice_budget::{Announcement, BudgetBackend};
use sluice_store::{KeyHash, Store, StoreError, SubscriptionStatus};

use crate::access::{self, TenantAccess};

use crate::caller::{Authenticator, Principal, StaticKeys};
use crate::tenancy::TenantState;

/// A virtual key as the cache holds it.
#[derive(Debug, Clone)]
struct CachedKey {
    id: Arc<str>,
    tenant: String,
    expires_at: Option<DateTime<Utc>>,
}

/// The authenticator backed by the store: configured keys first, then virtual keys by their hash.
pub struct Directory {
    store: Store,
    configured: StaticKeys,
    budgets: Arc<dyn BudgetBackend>,
    keys: RwLock<HashMap<KeyHash, CachedKey>>,
    tenants: RwLock<HashMap<String, Arc<TenantState>>>,
    /// Keys revoked by an announcement, by id, and when: kept out of the cache until a read of the
    /// database that began after the announcement no longer lists them (a read begun before it would
    /// bring them back).
    revoked: RwLock<HashMap<Arc<str>, Instant>>,
    /// Each tenant's grants and pending requests, by tenant name.
    access: RwLock<HashMap<String, Arc<TenantAccess>>>,
    /// The store's access version they were read at.
    access_version: AtomicI64,
}

/// How often the store's access version is read: an approval or a grant made through any replica takes
/// effect on every replica within this (plus one read of the grants).
pub const ACCESS_POLL: Duration = Duration::from_millis(250);

/// How long a revocation heard from another replica is kept when the database still lists the key.
const REVOKED_KEPT: Duration = Duration::from_secs(600);

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl Directory {
    /// A directory over `store`, accepting the `configured` keys too, with tenants' budgets in `budgets`;
    /// loaded once before serving.
    pub async fn load(
        store: Store,
        configured: StaticKeys,
        budgets: Arc<dyn BudgetBackend>,
    ) -> Result<Self, StoreError> {
        let directory = Self {
            store,
            configured,
            budgets,
            keys: RwLock::new(HashMap::new()),
            tenants: RwLock::new(HashMap::new()),
            revoked: RwLock::new(HashMap::new()),
            access: RwLock::new(HashMap::new()),
            access_version: AtomicI64::new(i64::MIN),
        };
        directory.refresh().await?;
        Ok(directory)
    }

    /// Reloads keys and tenants from the store. A tenant seen for the first time has its spend for the
    /// current period seeded from the ledger.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let began = Instant::now();
        let now = Utc::now();
        let tenants = self.store.list_tenants().await?;
        let mut fresh = HashMap::with_capacity(tenants.len());
        for tenant in tenants {
            let existing = self.tenant(&tenant.name);
            let state = match existing {
                Some(state) => {
                    // A budget now counted over another period starts from what the ledger holds for it.
                    let new_period = state.settings().budget_period != tenant.budget_period;
                    let since = tenant.budget_period.start(now);
                    state.update(tenant, self.budgets.as_ref());
                    if new_period {
                        let spent = self.store.tenant_spend_since(state.name(), since).await?;
                        state.seed_spend(spent, now).await;
                    }
                    state
                }
                None => {
                    let since = tenant.budget_period.start(now);
                    let spent = self.store.tenant_spend_since(&tenant.name, since).await?;
                    let state = TenantState::new(tenant, self.budgets.as_ref());
                    state.seed_spend(spent, now).await;
                    Arc::new(state)
                }
            };
            fresh.insert(state.name().to_owned(), state);
        }
        let active = self.store.list_active_keys().await?;
        {
            let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
            revoked.retain(|id, heard| {
                let listed = active.iter().any(|a| a.key.id.as_str() == id.as_ref());
                (*heard >= began || listed) && heard.elapsed() < REVOKED_KEPT
            });
            let keys = active
                .into_iter()
                .filter(|active| !revoked.contains_key(active.key.id.as_str()))
                .map(|active| {
                    (
                        active.hash,
                        CachedKey {
                            id: active.key.id.as_str().into(),
                            tenant: active.key.tenant.clone(),
                            expires_at: active.key.expires_at,
                        },
                    )
                })
                .collect();
            *self.tenants.write().unwrap_or_else(PoisonError::into_inner) = fresh;
            *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        }
        // The guard is gone before the next read: the refresh task must be `Send`.
        self.reload_access().await
    }

    /// Reads every grant and pending subscription request again and hands each tenant its own.
    pub async fn reload_access(&self) -> Result<(), StoreError> {
        // Read first: a change made while the rows are read moves it again, and the next poll reloads.
        let version = self.store.access_version().await?;
        let grants = self.store.list_grants().await?;
        let pending = self.store.list_subscriptions(Some(SubscriptionStatus::Pending)).await?;
        let map: HashMap<String, Arc<TenantAccess>> = access::by_tenant(grants, pending)
            .into_iter()
            .map(|(tenant, access)| (tenant, Arc::new(access)))
            .collect();
        *self.access.write().unwrap_or_else(PoisonError::into_inner) = map;
        self.apply_access();
        self.access_version.store(version, Ordering::Release);
        Ok(())
    }

    /// Reloads access when the store's access version moved: cheap enough to run several times a second.
    pub async fn poll_access(&self) -> Result<(), StoreError> {
        let version = self.store.access_version().await?;
        if version != self.access_version.load(Ordering::Acquire) {
            self.reload_access().await?;
        }
        Ok(())
    }

    fn apply_access(&self) {
        let access = self.access.read().unwrap_or_else(PoisonError::into_inner);
        for tenant in self.tenants.read().unwrap_or_else(PoisonError::into_inner).values() {
            tenant.set_access(access.get(tenant.name()).cloned().unwrap_or_default());
        }
    }

    /// The key with this `id` was revoked in the store through this replica: it stops working here at
    /// once, and every other replica sharing the budget backend is told.
    pub fn key_revoked(&self, id: &str) {
        self.forget_key(id);
        self.budgets.announce(Announcement::KeyRevoked(Arc::from(id)));
    }

    /// Tenants or keys changed in the store through this replica: the other replicas read them again.
    pub fn changed(&self) {
        self.budgets.announce(Announcement::TenantsChanged);
    }

    /// Drops the key `id` from memory, and keeps it out until the database agrees.
    fn forget_key(&self, id: &str) {
        self.revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(Arc::from(id), Instant::now());
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, key| key.id.as_ref() != id);
    }

    /// Applies a change another replica announced.
    async fn apply(&self, change: Announcement) {
        match change {
            Announcement::KeyRevoked(id) => {
                self.forget_key(&id);
                tracing::info!(key = %id, "key revoked on another replica");
            }
            Announcement::TenantsChanged => {
                if let Err(err) = self.refresh().await {
                    tracing::warn!(%err, "could not read keys and tenants changed on another replica");
                }
            }
        }
    }

    /// Refreshes every `every` until the task is dropped, and applies at once what other replicas
    /// announce; a failed refresh keeps the last good view.
    pub fn spawn_refresh(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut heard = self.budgets.announcements();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut poll = tokio::time::interval(ACCESS_POLL.min(every));
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll.tick().await;
            loop {
                let announced = async {
                    match heard.as_mut() {
                        Some(heard) => heard.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(err) = self.refresh().await {
                            tracing::warn!(%err, "could not refresh keys and tenants; serving the last known ones");
                        }
                    }
                    _ = poll.tick() => {
                        if let Err(err) = self.poll_access().await {
                            tracing::debug!(%err, "could not read the access version; serving the last known grants");
                        }
                    }
                    change = announced => match change {
                        Ok(change) => self.apply(change).await,
                        // Announcements were missed: read everything again.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            self.apply(Announcement::TenantsChanged).await;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => heard = None,
                    },
                }
            }
        })
    }

    /// A tenant's live state by name.
    pub fn tenant(&self, name: &str) -> Option<Arc<TenantState>> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }
}

impl Authenticator for Directory {
    fn authenticate(&self, token: &str) -> Option<Principal> {
        if let Some(principal) = self.configured.authenticate(token) {
            return Some(principal);
        }
        let hash = KeyHash::of(token);
        let key = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
            .cloned()?;
        if key.expires_at.is_some_and(|at| at <= Utc::now()) {
            return None;
        }
        let tenant = self.tenant(&key.tenant)?;
        Some(Principal {
            name: Arc::clone(&key.id),
            admin: false,
            key_id: Some(key.id),
            tenant: Some(tenant),
        })
    }
}
