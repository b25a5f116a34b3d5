//! Grants, subscription requests, the access version and the audit log, written once for both
//! databases as the rest of the store is.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::dialect::Dialect;
use super::queries::Db;
use super::{Backend, Store, now};
use crate::catalog::{AuditEntry, AuditQuery, Grant, Service, Subscription, SubscriptionStatus, validate_reason};
use crate::error::StoreError;

/// The subscription columns every query selects, with the tenant's name.
const SUBSCRIPTION_COLUMNS: &str = "s.id, t.name, s.service, s.reason, s.status, s.created_at, s.decided_at, \
     s.decided_by";

/// Most audit entries one query returns.
const MAX_AUDIT_PAGE: u32 = 1000;

impl<DB> Db<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<DB::Time>: Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn tenant_id(&self, tenant: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar::<DB, i64>("SELECT id FROM tenants WHERE name = $1")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::TenantNotFound(tenant.to_owned()))
    }

    async fn bump<'c, E: Executor<'c, Database = DB>>(executor: E) -> Result<(), StoreError> {
        sqlx::query::<DB>("UPDATE access_version SET version = version + 1 WHERE id = 1")
            .execute(executor)
            .await?;
        Ok(())
    }

    pub(super) async fn access_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar::<DB, i64>("SELECT version FROM access_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Grants `service` to the tenant; false when it held it already (the first grant is kept).
    pub(super) async fn grant(
        &self,
        tenant: &str,
        service: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let tenant_id = self.tenant_id(tenant).await?;
        let mut tx = self.pool.begin().await?;
        let added = sqlx::query::<DB>(
            "INSERT INTO grants (tenant_id, service, granted_at, granted_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, service) DO NOTHING RETURNING service",
        )
        .bind(tenant_id)
        .bind(service)
        .bind(DB::time(at))
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        Self::bump(&mut *tx).await?;
        tx.commit().await?;
        Ok(added)
    }

    pub(super) async fn revoke_grant(&self, tenant: &str, service: &str) -> Result<bool, StoreError> {
        let tenant_id = self.tenant_id(tenant).await?;
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query::<DB>("DELETE FROM grants WHERE tenant_id = $1 AND service = $2 RETURNING service")
            .bind(tenant_id)
            .bind(service)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        Self::bump(&mut *tx).await?;
        tx.commit().await?;
        Ok(removed)
    }

    pub(super) async fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        let rows = sqlx::query::<DB>(
            "SELECT t.name, g.service, g.granted_at, g.granted_by FROM grants g \
             JOIN tenants t ON t.id = g.tenant_id ORDER BY t.name, g.service",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let service: String = row.try_get(1)?;
                Ok(Grant {
                    tenant: row.try_get(0)?,
                    service: stored_service(&service)?,
                    granted_at: DB::read_time(row.try_get(2)?)?,
                    granted_by: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// The tenant's pending request for `service`, else a new one.
    pub(super) async fn request(
        &self,
        tenant: &str,
        service: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Subscription, StoreError> {
        let tenant_id = self.tenant_id(tenant).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.pool.begin().await?;
        let added = sqlx::query::<DB>(
            "INSERT INTO subscriptions (id, tenant_id, service, reason, status, created_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(id.as_str())
        .bind(tenant_id)
        .bind(service)
        .bind(reason)
        .bind(DB::time(at))
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if added {
            Self::bump(&mut *tx).await?;
        }
        tx.commit().await?;
        let mut sql =
            format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id ");
        sql.push_str("WHERE s.tenant_id = $1 AND s.service = $2 AND s.status = 'pending'");
        let row = sqlx::query::<DB>(&sql)
            .bind(tenant_id)
            .bind(service)
            .fetch_one(&self.pool)
            .await?;
        Self::subscription_from_row(&row)
    }

    pub(super) async fn subscriptions(
        &self,
        status: Option<SubscriptionStatus>,
        id: Option<&str>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id \
             WHERE ($1 IS NULL OR s.status = $1) AND ($2 IS NULL OR s.id = $2) ORDER BY s.created_at, s.id"
        );
        let rows = sqlx::query::<DB>(&sql)
            .bind(status.map(SubscriptionStatus::as_str))
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::subscription_from_row).collect()
    }

    fn subscription_from_row(row: &DB::Row) -> Result<Subscription, StoreError> {
        let service: String = row.try_get(2)?;
        let status: String = row.try_get(4)?;
        Ok(Subscription {
            id: row.try_get(0)?,
            tenant: row.try_get(1)?,
            service: stored_service(&service)?,
            reason: row.try_get(3)?,
            status: status
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("subscription status {status:?}")))?,
            created_at: DB::read_time(row.try_get(5)?)?,
            decided_at: row.try_get::<Option<DB::Time>, _>(6)?.map(DB::read_time).transpose()?,
            decided_by: row.try_get(7)?,
        })
    }

    /// Decides the pending request `id`; an approval grants the service in the same transaction.
    /// False when no pending request has that id.
    pub(super) async fn decide(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let status = if approve {
            SubscriptionStatus::Approved
        } else {
            SubscriptionStatus::Rejected
        };
        let mut tx = self.pool.begin().await?;
        let decided = sqlx::query::<DB>(
            "UPDATE subscriptions SET status = $2, decided_at = $3, decided_by = $4 \
             WHERE id = $1 AND status = 'pending' RETURNING tenant_id, service",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(DB::time(at))
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = decided else {
            return Ok(false);
        };
        if approve {
            let tenant_id: i64 = row.try_get(0)?;
            let service: String = row.try_get(1)?;
            sqlx::query::<DB>(
                "INSERT INTO grants (tenant_id, service, granted_at, granted_by) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, service) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(service.as_str())
            .bind(DB::time(at))
            .bind(format!("subscription:{id}"))
            .execute(&mut *tx)
            .await?;
        }
        Self::bump(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query::<DB>("INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(DB::time(at))
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query::<DB>(
            "SELECT id, at, actor, action, target, detail FROM audit_log \
             WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(query.before)
        .bind(i64::from(query.limit.clamp(1, MAX_AUDIT_PAGE)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get(5)?;
                Ok(AuditEntry {
                    id: row.try_get(0)?,
                    at: DB::read_time(row.try_get(1)?)?,
                    actor: row.try_get(2)?,
                    action: row.try_get(3)?,
                    target: row.try_get(4)?,
                    detail: serde_json::from_str(&detail)
                        .map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
                })
            })
            .collect()
    }
}

fn stored_service(text: &str) -> Result<Service, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("service {text:?}")))
}

// === impl Store ===

impl Store {
    /// Grants `service` to the tenant named `tenant`, recorded as done by `by` (an admin key's id). True
    /// when it is new; a grant held already keeps its first date. An unknown tenant is
    /// [`StoreError::TenantNotFound`].
    pub async fn grant(&self, tenant: &str, service: &Service, by: &str) -> Result<bool, StoreError> {
        let service = service.to_string();
        on_backend!(self, db => db.grant(tenant, &service, by, now()).await)
    }

    /// Takes `service` back from the tenant; false when it held no grant of it.
    pub async fn revoke_grant(&self, tenant: &str, service: &Service) -> Result<bool, StoreError> {
        let service = service.to_string();
        on_backend!(self, db => db.revoke_grant(tenant, &service).await)
    }

    /// Every grant, by tenant and service.
    pub async fn list_grants(&self) -> Result<Vec<Grant>, StoreError> {
        on_backend!(self, db => db.grants().await)
    }

    /// A tenant asks for `service`, saying why. A request already pending for it is returned as it is
    /// (one pending request per tenant and service).
    pub async fn request_subscription(
        &self,
        tenant: &str,
        service: &Service,
        reason: &str,
    ) -> Result<Subscription, StoreError> {
        validate_reason(reason)?;
        let service = service.to_string();
        on_backend!(self, db => db.request(tenant, &service, reason.trim(), now()).await)
    }

    /// Subscription requests, oldest first; only those in `status` when given.
    pub async fn list_subscriptions(
        &self,
        status: Option<SubscriptionStatus>,
    ) -> Result<Vec<Subscription>, StoreError> {
        on_backend!(self, db => db.subscriptions(status, None).await)
    }

    /// The subscription request `id`.
    pub async fn subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let found = on_backend!(self, db => db.subscriptions(None, Some(id)).await)?;
        Ok(found.into_iter().next())
    }

    /// Approves (granting the service in the same transaction) or rejects the pending request `id`, as
    /// `by` (an admin key's id). An unknown id is [`StoreError::SubscriptionNotFound`]; a request
    /// decided already is [`StoreError::SubscriptionDecided`].
    pub async fn decide_subscription(&self, id: &str, approve: bool, by: &str) -> Result<Subscription, StoreError> {
        let decided = on_backend!(self, db => db.decide(id, approve, by, now()).await)?;
        let found = self
            .subscription(id)
            .await?
            .ok_or_else(|| StoreError::SubscriptionNotFound(id.to_owned()))?;
        if decided {
            Ok(found)
        } else {
            Err(StoreError::SubscriptionDecided {
                id: id.to_owned(),
                status: found.status.as_str(),
            })
        }
    }

    /// A number that changes with every change to grants or subscriptions: cheap to poll, so replicas
    /// reload access only when it moved.
    pub async fn access_version(&self) -> Result<i64, StoreError> {
        on_backend!(self, db => db.access_version().await)
    }

    /// Appends an admin action to the audit log: `actor` (the admin key's id) did `action` on `target`,
    /// with `detail` (a JSON object, never a secret).
    pub async fn record_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let detail = detail.to_string();
        on_backend!(self, db => db.audit(actor, action, target, &detail, now()).await)
    }

    /// The audit log, newest first.
    pub async fn audit_log(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        on_backend!(self, db => db.audit_log(query).await)
    }
}
