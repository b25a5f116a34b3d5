//! Who may call a service: its [`Access`] (open, approval, private), the tenant's grants and pending
//! subscription requests, and the tenant's allow-lists.
//!
//! A tenant may call a service it holds a grant of (given by an admin, or by an approved subscription),
//! and an open service its allow-list does not exclude. It may ask for an `approval` service it cannot
//! call yet; a `private` one only an admin's grant opens. The [`crate::Directory`] keeps each tenant's
//! grants and pending requests in memory, reloaded when the store's access version moves.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sluice_store::{Grant, Subscription, SubscriptionStatus, Tenant};

pub use sluice_store::{Service, ServiceKind};

/// Who may call a service: models take it from the configuration, prompts from their files; one type
/// for both, defined beside the prompt files that name it.
pub use sluice_prompts::Access;

/// What the configuration says of a model for the catalog: who may call it and what it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPolicy {
    /// Who may call it.
    pub access: Access,
    /// What it is, for the catalog.
    pub description: Option<String>,
}

/// What a tenant may do with a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "permission")]
pub enum Permission {
    /// It may call it.
    Call,
    /// It may ask for it (`POST /v1/subscriptions`).
    Request,
    /// It asked; an admin has not decided yet.
    Pending {
        /// The request's id.
        subscription: String,
    },
    /// Neither: a private service not granted, or an open one its allow-list excludes.
    None,
}

/// A tenant's grants and pending requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantAccess {
    granted: HashSet<Service>,
    pending: HashMap<Service, String>,
}

impl TenantAccess {
    /// Whether the tenant holds a grant of `service`.
    pub fn is_granted(&self, service: &Service) -> bool {
        self.granted.contains(service)
    }

    /// What `tenant`, holding these grants and requests, may do with `service` of `access`.
    pub fn permission(&self, tenant: &Tenant, service: &Service, access: Access) -> Permission {
        if self.granted.contains(service) {
            return Permission::Call;
        }
        match access {
            Access::Open => {
                let listed = match service.kind {
                    ServiceKind::Model => tenant.allows_model(&service.name),
                    ServiceKind::Prompt => tenant.allows_prompt(&service.name),
                };
                if listed { Permission::Call } else { Permission::None }
            }
            Access::Approval => match self.pending.get(service) {
                Some(id) => Permission::Pending {
                    subscription: id.clone(),
                },
                None => Permission::Request,
            },
            Access::Private => Permission::None,
        }
    }
}

/// Every tenant's grants and pending requests, by tenant name, from the store's rows.
pub fn by_tenant(grants: Vec<Grant>, requests: Vec<Subscription>) -> HashMap<String, TenantAccess> {
    let mut map: HashMap<String, TenantAccess> = HashMap::new();
    for grant in grants {
        map.entry(grant.tenant).or_default().granted.insert(grant.service);
    }
    for request in requests.into_iter().filter(|r| r.status == SubscriptionStatus::Pending) {
        map.entry(request.tenant)
            .or_default()
            .pending
            .insert(request.service, request.id);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(models: Option<Vec<&str>>) -> Tenant {
        let mut t = Tenant {
            id: 1,
            name: "acme".into(),
            rpm: None,
            tpm: None,
            budget_micros: None,
            budget_period: sluice_store::BudgetPeriod::Month,
            models: None,
            prompts: None,
            created_at: chrono::Utc::now(),
        };
        t.models = models.map(|m| m.into_iter().map(str::to_owned).collect());
        t
    }

    #[test]
    fn grants_open_what_access_and_lists_close() {
        let at = chrono::Utc::now();
        let grant = |service: &str| Grant {
            tenant: "acme".into(),
            service: service.parse().unwrap(),
            granted_at: at,
            granted_by: "admin".into(),
        };
        let pending = Subscription {
            id: "s1".into(),
            tenant: "acme".into(),
            service: Service::prompt("review"),
            reason: "r".into(),
            status: SubscriptionStatus::Pending,
            created_at: at,
            decided_at: None,
            decided_by: None,
        };
        let map = by_tenant(vec![grant("model:secret")], vec![pending]);
        let acme = &map["acme"];
        let listed = tenant(Some(vec!["small"]));
        let all = tenant(None);
        let p = |t: &Tenant, s: Service, a| acme.permission(t, &s, a);
        assert_eq!(p(&all, Service::model("big"), Access::Open), Permission::Call);
        assert_eq!(p(&listed, Service::model("big"), Access::Open), Permission::None);
        assert_eq!(p(&listed, Service::model("small"), Access::Open), Permission::Call);
        assert_eq!(p(&all, Service::model("secret"), Access::Private), Permission::Call);
        assert_eq!(p(&all, Service::model("other"), Access::Private), Permission::None);
        assert_eq!(
            p(&all, Service::prompt("summarize"), Access::Approval),
            Permission::Request
        );
        assert_eq!(
            p(&all, Service::prompt("review"), Access::Approval),
            Permission::Pending {
                subscription: "s1".into()
            }
        );
        assert_eq!(
            TenantAccess::default().permission(&all, &Service::prompt("review"), Access::Approval),
            Permission::Request
        );
    }
}
