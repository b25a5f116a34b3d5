//! The catalog's records: grants of a service to a tenant, subscription requests and their decisions,
//! and the audit log of admin actions.
//!
//! A service is named `model:NAME` or `prompt:NAME` ([`Service`]); the store keeps that text and does not
//! know which services exist (the gateway checks names against its configuration and prompts).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Longest service name, in bytes, `model:` or `prompt:` included.
pub const MAX_SERVICE_BYTES: usize = 200;
/// Longest reason a tenant may give, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// What kind of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// A configured model (`/v1/chat/completions`, `/v1/embeddings`...).
    Model,
    /// A prompt endpoint (`/v1/prompts/{name}`).
    Prompt,
}

/// A model or a prompt, as grants and subscriptions name it: `model:NAME` or `prompt:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service {
    /// Model or prompt.
    pub kind: ServiceKind,
    /// Its name.
    pub name: String,
}

impl Service {
    /// The model `name`.
    pub fn model(name: &str) -> Self {
        Self {
            kind: ServiceKind::Model,
            name: name.to_owned(),
        }
    }

    /// The prompt `name`.
    pub fn prompt(name: &str) -> Self {
        Self {
            kind: ServiceKind::Prompt,
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ServiceKind::Model => "model",
            ServiceKind::Prompt => "prompt",
        };
        write!(f, "{kind}:{}", self.name)
    }
}

impl FromStr for Service {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, name) = match text.split_once(':') {
            Some(("model", name)) => (ServiceKind::Model, name),
            Some(("prompt", name)) => (ServiceKind::Prompt, name),
            _ => {
                return Err(StoreError::invalid(
                    "service",
                    format!("{text:?} must be `model:NAME` or `prompt:NAME`"),
                ));
            }
        };
        if name.is_empty() || text.len() > MAX_SERVICE_BYTES || name.chars().any(char::is_control) {
            return Err(StoreError::invalid(
                "service",
                format!("{text:?}: the name must be 1 to {MAX_SERVICE_BYTES} bytes without control characters"),
            ));
        }
        Ok(Self {
            kind,
            name: name.to_owned(),
        })
    }
}

impl Serialize for Service {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A service granted to a tenant: it may call it whatever the service's access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The tenant's name.
    pub tenant: String,
    /// The service.
    pub service: Service,
    /// When.
    pub granted_at: DateTime<Utc>,
    /// The admin key's id, `subscription:<id>` for an approved request, `migration` for an allow-list
    /// entry.
    pub granted_by: String,
}

/// Where a subscription request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    /// Waiting for an admin.
    Pending,
    /// Approved: the tenant holds a grant.
    Approved,
    /// Rejected: the tenant may ask again.
    Rejected,
}

impl SubscriptionStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
}

impl FromStr for SubscriptionStatus {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pending" => Ok(Self::Pending),
            "approved" => Ok(Self::Approved),
            "rejected" => Ok(Self::Rejected),
            other => Err(StoreError::invalid(
                "status",
                format!("{other:?} must be pending, approved or rejected"),
            )),
        }
    }
}

/// A tenant's request to use a service, and the decision on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// Its id (a UUIDv7).
    pub id: String,
    /// The tenant's name.
    pub tenant: String,
    /// The service asked for.
    pub service: Service,
    /// Why the tenant wants it.
    pub reason: String,
    /// Where it stands.
    pub status: SubscriptionStatus,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
    /// When it was decided.
    pub decided_at: Option<DateTime<Utc>>,
    /// The admin key that decided it.
    pub decided_by: Option<String>,
}

/// One admin action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Increasing with time.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The admin key's id.
    pub actor: String,
    /// `tenant.create`, `tenant.update`, `key.create`, `key.revoke`, `grant.create`, `grant.revoke`,
    /// `subscription.approve`, `subscription.reject`.
    pub action: String,
    /// What it acted on: a tenant name, a key id, `tenant/service`, a subscription id.
    pub target: String,
    /// The details (never a secret).
    pub detail: serde_json::Value,
}

/// Which audit entries to read: newest first, at most `limit`, older than `before` when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditQuery {
    /// At most this many (capped at 1,000).
    pub limit: u32,
    /// Only entries with a smaller id (for paging back).
    pub before: Option<i64>,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            limit: 100,
            before: None,
        }
    }
}

/// Checks a tenant's reason: not blank, bounded.
pub(crate) fn validate_reason(reason: &str) -> Result<(), StoreError> {
    if reason.trim().is_empty() {
        return Err(StoreError::invalid("reason", "say why the tenant needs the service"));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(StoreError::invalid(
            "reason",
            format!("at most {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(())
}
