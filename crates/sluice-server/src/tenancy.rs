//! Tenants at the edge: which tenant a virtual key belongs to, what it may call, its rate limits and its
//! spend budget.
//!
//! Keys and tenants are read from the store into memory and refreshed every few seconds, so the request
//! path never waits on the database and a revoked key stops working within one refresh. The spend a
//! budget check needs is kept in memory too: seeded from the ledger when a tenant is first seen, then
//! raised by each request's cost as it is recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_router::budget::{BudgetView, KeyBudget, Limits, Refusal, Reservation};
use sluice_store::{KeyHash, Store, StoreError, Tenant};
use tokio::time::Instant;

use crate::auth::{Authenticator, Principal, StaticKeys};

/// The tenant name recorded for configured (non-virtual) keys.
pub const DEFAULT_TENANT: &str = "default";

/// One tenant's live state: its settings, its rate budget and what it has spent this period.
#[derive(Debug)]
pub struct TenantState {
    name: Arc<str>,
    settings: RwLock<Arc<Tenant>>,
    rate: RwLock<Option<Arc<KeyBudget>>>,
    spend_micros: AtomicI64,
    period_start: Mutex<DateTime<Utc>>,
}

fn rate_budget(tenant: &Tenant) -> Option<Arc<KeyBudget>> {
    (tenant.rpm.is_some() || tenant.tpm.is_some()).then(|| {
        Arc::new(KeyBudget::new(
            Limits {
                rpm: tenant.rpm,
                tpm: tenant.tpm,
                max_in_flight: None,
            },
            Instant::now(),
        ))
    })
}

/// Why a tenant may not make a request now.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantRefusal {
    /// The tenant may not call this model.
    ModelNotAllowed,
    /// The tenant is over its requests or tokens per minute.
    RateLimited {
        /// When it will have capacity again.
        retry_after: Duration,
    },
    /// The request alone is larger than the tenant's tokens per minute.
    TooLarge {
        /// The tenant's tokens per minute.
        tpm: u64,
    },
    /// The tenant's spend budget for the period is used up.
    OverBudget {
        /// The budget, in micro-dollars.
        budget_micros: i64,
        /// When the period resets.
        resets_at: DateTime<Utc>,
    },
}

impl TenantState {
    fn new(tenant: Tenant, spent: i64, now: DateTime<Utc>) -> Self {
        Self {
            name: tenant.name.as_str().into(),
            period_start: Mutex::new(tenant.budget_period.start(now)),
            rate: RwLock::new(rate_budget(&tenant)),
            settings: RwLock::new(Arc::new(tenant)),
            spend_micros: AtomicI64::new(spent),
        }
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tenant's current settings.
    pub fn settings(&self) -> Arc<Tenant> {
        Arc::clone(&self.settings.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn rate(&self) -> Option<Arc<KeyBudget>> {
        self.rate.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Applies changed settings; a changed rate limit starts a fresh budget.
    fn update(&self, tenant: Tenant) {
        let current = self.settings();
        if current.rpm != tenant.rpm || current.tpm != tenant.tpm {
            *self.rate.write().unwrap_or_else(PoisonError::into_inner) = rate_budget(&tenant);
        }
        *self.settings.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tenant);
    }

    /// What the tenant has spent in the current period, in micro-dollars; a new period starts at zero.
    pub fn spent(&self, now: DateTime<Utc>) -> i64 {
        let settings = self.settings();
        let start = settings.budget_period.start(now);
        let mut period = self.period_start.lock().unwrap_or_else(PoisonError::into_inner);
        if *period != start {
            *period = start;
            self.spend_micros.store(0, Ordering::Relaxed);
        }
        self.spend_micros.load(Ordering::Relaxed)
    }

    /// Adds a recorded request's cost to the period's spend.
    pub fn add_spend(&self, micros: i64) {
        self.spend_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Checks access and budget, then takes one request and `tokens` from the rate budget.
    pub fn admit(&self, model: &str, tokens: u64) -> Result<Option<Reservation>, TenantRefusal> {
        let settings = self.settings();
        if !settings.allows_model(model) {
            return Err(TenantRefusal::ModelNotAllowed);
        }
        let now = Utc::now();
        if let Some(budget) = settings.budget_micros
            && self.spent(now) >= budget
        {
            return Err(TenantRefusal::OverBudget {
                budget_micros: budget,
                resets_at: settings.budget_period.next_reset(now),
            });
        }
        match self.rate() {
            None => Ok(None),
            Some(rate) => match rate.try_reserve(tokens, Instant::now()) {
                Ok(reservation) => Ok(Some(reservation)),
                Err(Refusal::Wait(retry_after)) => Err(TenantRefusal::RateLimited { retry_after }),
                Err(Refusal::TooLarge) => Err(TenantRefusal::TooLarge {
                    tpm: settings.tpm.unwrap_or(0),
                }),
            },
        }
    }

    /// The rate budget as the `x-ratelimit-*` headers report it, if the tenant has one.
    pub fn rate_view(&self) -> Option<BudgetView> {
        self.rate().map(|rate| rate.view(Instant::now()))
    }
}

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
    keys: RwLock<HashMap<KeyHash, CachedKey>>,
    tenants: RwLock<HashMap<String, Arc<TenantState>>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl Directory {
    /// A directory over `store`, accepting the `configured` keys too, loaded once before serving.
    pub async fn load(store: Store, configured: StaticKeys) -> Result<Self, StoreError> {
        let directory = Self {
            store,
            configured,
            keys: RwLock::new(HashMap::new()),
            tenants: RwLock::new(HashMap::new()),
        };
        directory.refresh().await?;
        Ok(directory)
    }

    /// Reloads keys and tenants from the store. A tenant seen for the first time has its spend for the
    /// current period read from the ledger.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let now = Utc::now();
        let tenants = self.store.list_tenants().await?;
        let mut fresh = HashMap::with_capacity(tenants.len());
        for tenant in tenants {
            let existing = self
                .tenants
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&tenant.name)
                .cloned();
            let state = match existing {
                Some(state) => {
                    state.update(tenant);
                    state
                }
                None => {
                    let since = tenant.budget_period.start(now);
                    let spent = self.store.tenant_spend_since(&tenant.name, since).await?;
                    Arc::new(TenantState::new(tenant, spent, now))
                }
            };
            fresh.insert(state.name().to_owned(), state);
        }
        let keys = self
            .store
            .list_active_keys()
            .await?
            .into_iter()
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
        Ok(())
    }

    /// Refreshes every `every` until the task is dropped; a failed refresh keeps the last good view.
    pub fn spawn_refresh(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(err) = self.refresh().await {
                    tracing::warn!(%err, "could not refresh keys and tenants; serving the last known ones");
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
