//! A tenant at the edge: what it may call, its rate limits and its spend budget.
//!
//! A tenant's rate limit and its spend for the current period are budgets of the [`BudgetBackend`]: its
//! spend is seeded from the ledger once, when the tenant is first seen (by the [`crate::Directory`]), then
//! moved by each request's reservation of its worst-case cost and the settlement of its real cost.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_budget::{
    BudgetBackend, BudgetView, Limits, OverBudget, Period, RateBudget, Refusal, Reservation, SpendBudget,
    SpendReservation,
};
use sluice_store::Tenant;

use crate::access::{Access, Permission, Service, TenantAccess};

/// One tenant's live state: its settings and its budgets.
#[derive(Debug)]
pub struct TenantState {
    name: Arc<str>,
    settings: RwLock<Arc<Tenant>>,
    rate: RwLock<Option<Arc<dyn RateBudget>>>,
    spend: Arc<dyn SpendBudget>,
    access: RwLock<Arc<TenantAccess>>,
}

/// Why a tenant may not make a request now.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantRefusal {
    /// The tenant may not call this service (model or prompt): what it may do instead is `permission`
    /// (ask for it, wait for its pending request, or nothing).
    NotAllowed {
        /// The service refused.
        service: Service,
        /// What the tenant may do with it.
        permission: Permission,
    },
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
pub(crate) fn period(tenant: &Tenant, now: DateTime<Utc>) -> Period {
    Period(tenant.budget_period.start(now).timestamp())
}

impl TenantState {
    pub(crate) fn new(tenant: Tenant, budgets: &dyn BudgetBackend) -> Self {
        let name: Arc<str> = tenant.name.as_str().into();
        Self {
            rate: RwLock::new(rate_limits(&tenant).map(|limits| budgets.rate(&format!("tenant/{name}"), limits))),
            spend: budgets.spend(&format!("tenant/{name}")),
            access: RwLock::new(Arc::default()),
            settings: RwLock::new(Arc::new(tenant)),
            name,
        }
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tenant's name, shared: for records that outlive the request (its ledger row, an error).
    pub fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The tenant's current settings.
    pub fn settings(&self) -> Arc<Tenant> {
        Arc::clone(&self.settings.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn rate(&self) -> Option<Arc<dyn RateBudget>> {
        self.rate.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Applies changed settings; a changed rate limit starts a fresh budget.
    pub(crate) fn update(&self, tenant: Tenant, budgets: &dyn BudgetBackend) {
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

    /// The tenant's grants and pending requests, as last loaded.
    pub fn access(&self) -> Arc<TenantAccess> {
        Arc::clone(&self.access.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set_access(&self, access: Arc<TenantAccess>) {
        *self.access.write().unwrap_or_else(PoisonError::into_inner) = access;
    }

    /// What the tenant may do with `service`, whose access is `access`.
    pub fn permission(&self, service: &Service, access: Access) -> Permission {
        self.access().permission(&self.settings(), service, access)
    }

    /// Whether the tenant may call `service` now, whose access is `access`.
    pub fn admit(&self, service: &Service, access: Access) -> Result<(), TenantRefusal> {
        match self.permission(service, access) {
            Permission::Call => Ok(()),
            permission => Err(TenantRefusal::NotAllowed {
                service: service.clone(),
                permission,
            }),
        }
    }

    /// Whether the tenant may call `model` (whose access is `access`), and whether its request rate and
    /// its budget leave room for a request now. Cheap, so it runs before the request's tokens are
    /// counted; the reservations after counting decide.
    pub fn precheck(&self, model: &str, access: Access) -> Result<(), TenantRefusal> {
        self.admit(&Service::model(model), access)?;
        let settings = self.settings();
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

    /// Starts the current period's spend at `micros` (read from the ledger) unless it already started.
    pub(crate) async fn seed_spend(&self, micros: i64, now: DateTime<Utc>) {
        self.spend.seed(period(&self.settings(), now), micros).await;
    }

    /// The rate budget as the `x-ratelimit-*` headers report it, if the tenant has one.
    pub fn rate_view(&self) -> Option<BudgetView> {
        self.rate().map(|rate| rate.view())
    }
}
