//! Tenants at the edge: which tenant a virtual key belongs to, what it may call, its rate limits and its
//! spend budget.
//!
//! Keys and tenants are read from the store into memory and refreshed every few seconds, so the request
//! path never waits on the database and a revoked key stops working within one refresh. A tenant's rate
//! limit and its spend for the current period are budgets of the [`BudgetBackend`]: its spend is seeded
//! from the ledger once, when the tenant is first seen, then moved by each request's reservation of its
//! worst-case cost and the settlement of its real cost.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_budget::{
    BudgetBackend, BudgetView, Limits, OverBudget, Period, RateBudget, Refusal, Reservation, SpendBudget,
    SpendReservation,
};
use sluice_store::{KeyHash, Store, StoreError, Tenant};

use crate::caller::{Authenticator, Principal, StaticKeys};

/// One tenant's live state: its settings and its budgets.
#[derive(Debug)]
pub struct TenantState {
    name: Arc<str>,
    settings: RwLock<Arc<Tenant>>,
    rate: RwLock<Option<Arc<dyn RateBudget>>>,
    spend: Arc<dyn SpendBudget>,
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
    /// The tenant's spend budget for the period is used up, or the request's worst case does not fit in
    /// what is left of it.
    OverBudget {
        /// The budget, in micro-dollars.
        budget_micros: i64,
        /// Spent and held by requests in flight, in micro-dollars.
        committed: i64,
        /// The request's worst-case cost, in micro-dollars (0 when the budget is already used up).
        request_micros: i64,
        /// When the period resets.
        resets_at: DateTime<Utc>,
    },
    /// The tenant has a spend budget and the model has no price, so its cost could not be counted.
    NotPriced,
}

fn rate_limits(tenant: &Tenant) -> Option<Limits> {
    (tenant.rpm.is_some() || tenant.tpm.is_some()).then_some(Limits {
        rpm: tenant.rpm,
        tpm: tenant.tpm,
        max_in_flight: None,
    })
}

/// The spend period containing `now` for `tenant`.
fn period(tenant: &Tenant, now: DateTime<Utc>) -> Period {
    Period(tenant.budget_period.start(now).timestamp())
}

impl TenantState {
    fn new(tenant: Tenant, budgets: &dyn BudgetBackend) -> Self {
        let name: Arc<str> = tenant.name.as_str().into();
        Self {
            rate: RwLock::new(rate_limits(&tenant).map(|limits| budgets.rate(&format!("tenant/{name}"), limits))),
            spend: budgets.spend(&format!("tenant/{name}")),
            settings: RwLock::new(Arc::new(tenant)),
            name,
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

    fn rate(&self) -> Option<Arc<dyn RateBudget>> {
        self.rate.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Applies changed settings; a changed rate limit starts a fresh budget.
    fn update(&self, tenant: Tenant, budgets: &dyn BudgetBackend) {
        let current = self.settings();
        if current.rpm != tenant.rpm || current.tpm != tenant.tpm {
            *self.rate.write().unwrap_or_else(PoisonError::into_inner) =
                rate_limits(&tenant).map(|limits| budgets.rate(&format!("tenant/{}", self.name), limits));
        }
        *self.settings.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tenant);
    }

    /// What the tenant has spent in the current period, in micro-dollars (requests in flight not included).
    pub fn spent(&self, now: DateTime<Utc>) -> i64 {
        self.spend.spent(period(&self.settings(), now))
    }

    /// Whether the tenant may call `model`, and whether its request rate and its budget leave room for a
    /// request now. Cheap, so it runs before the request's tokens are counted; the reservations after
    /// counting decide.
    pub fn precheck(&self, model: &str) -> Result<(), TenantRefusal> {
        let settings = self.settings();
        if !settings.allows_model(model) {
            return Err(TenantRefusal::ModelNotAllowed);
        }
        if let Some(rate) = self.rate()
            && let Ok(wait) = rate.available_in(0)
            && !wait.is_zero()
        {
            return Err(TenantRefusal::RateLimited { retry_after: wait });
        }
        let now = Utc::now();
        if let Some(budget) = settings.budget_micros {
            let spent = self.spent(now);
            if spent >= budget {
                return Err(TenantRefusal::OverBudget {
                    budget_micros: budget,
                    committed: spent,
                    request_micros: 0,
                    resets_at: settings.budget_period.next_reset(now),
                });
            }
        }
        Ok(())
    }

    /// Takes one request and `tokens` from the tenant's rate budget, when it has one.
    pub async fn reserve_rate(&self, tokens: u64) -> Result<Option<Reservation>, TenantRefusal> {
        let Some(rate) = self.rate() else {
            return Ok(None);
        };
        match Reservation::take(&rate, tokens).await {
            Ok(reservation) => Ok(Some(reservation)),
            Err(Refusal::Wait(retry_after)) => Err(TenantRefusal::RateLimited { retry_after }),
            Err(Refusal::TooLarge) => Err(TenantRefusal::TooLarge {
                tpm: self.settings().tpm.unwrap_or(0),
            }),
        }
    }

    /// Whether the tenant has a spend budget.
    pub fn has_budget(&self) -> bool {
        self.settings().budget_micros.is_some()
    }

    /// Holds a request's worst-case cost, `micros`, against the period's budget (or, without a budget,
    /// just counts it), so that concurrent requests never spend past the budget.
    pub async fn reserve_spend(&self, micros: i64) -> Result<SpendReservation, TenantRefusal> {
        let settings = self.settings();
        let now = Utc::now();
        SpendReservation::take(&self.spend, period(&settings, now), settings.budget_micros, micros)
            .await
            .map_err(|OverBudget { committed }| TenantRefusal::OverBudget {
                budget_micros: settings.budget_micros.unwrap_or(0),
                committed,
                request_micros: micros,
                resets_at: settings.budget_period.next_reset(now),
            })
    }

    /// The rate budget as the `x-ratelimit-*` headers report it, if the tenant has one.
    pub fn rate_view(&self) -> Option<BudgetView> {
        self.rate().map(|rate| rate.view())
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
    budgets: Arc<dyn BudgetBackend>,
    keys: RwLock<HashMap<KeyHash, CachedKey>>,
    tenants: RwLock<HashMap<String, Arc<TenantState>>>,
}

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
        };
        directory.refresh().await?;
        Ok(directory)
    }

    /// Reloads keys and tenants from the store. A tenant seen for the first time has its spend for the
    /// current period seeded from the ledger.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let now = Utc::now();
        let tenants = self.store.list_tenants().await?;
        let mut fresh = HashMap::with_capacity(tenants.len());
        for tenant in tenants {
            let existing = self.tenant(&tenant.name);
            let state = match existing {
                Some(state) => {
                    state.update(tenant, self.budgets.as_ref());
                    state
                }
                None => {
                    let since = tenant.budget_period.start(now);
                    let spent = self.store.tenant_spend_since(&tenant.name, since).await?;
                    let state = TenantState::new(tenant, self.budgets.as_ref());
                    state.spend.seed(period(&state.settings(), now), spent).await;
                    Arc::new(state)
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
