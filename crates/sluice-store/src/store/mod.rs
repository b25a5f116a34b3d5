//! `Store`: one handle over a Postgres or a SQLite database.
//!
//! # One implementation, two dialects
//!
//! Every query is written once, generic over the sqlx database ([`queries::Db`]); the few things that
//! truly differ (how instants and days are stored and turned back into text, which migrations apply) are
//! the [`dialect::Dialect`] trait, implemented for Postgres and SQLite. `Store` holds one of the two
//! pools in a private enum and hands each call to the same generic code ([`on_backend!`]): static
//! dispatch, no boxed futures, one concrete type for callers to hold. (sqlx's `Any` driver was not used:
//! it loses the typed timestamps and dates.) Error codes differ too; [`crate::StoreError::classify`]
//! reads both.
//!
//! `Store` is cheap to clone: both pools are reference-counted.

mod dialect;
mod ledger_copy;
mod ledger_insert;
mod logs;
mod queries;
mod rollups;
mod statement;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use self::queries::{Db, KeyQuery, Source};
use crate::alerts::FiredAlert;
use crate::error::StoreError;
use crate::keys::{self, KeyHash};
use crate::ledger::UsageRow;
use crate::model::{
    ActiveKey, CreatedKey, ExportFilter, InsertOutcome, KeyInfo, KeyLookup, NO_KEY, NewTenant, SpendFilter, SpendRow,
    Tenant, TenantChange, validate_name,
};
use crate::request_log::{LogSettings, RequestLog};

/// Runs `$body` with `$db` bound to the store's [`Db`], whichever database it is: the body is written
/// once and compiled for both.
macro_rules! on_backend {
    ($store:expr, $db:ident => $body:expr) => {
        match &$store.backend {
            Backend::Postgres($db) => $body,
            Backend::Sqlite($db) => $body,
        }
    };
}

mod access;

/// How a store connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Pool size.
    pub max_connections: u32,
    /// How long an operation waits for a connection (Postgres) or a lock (SQLite's busy timeout) before
    /// failing. Short, so that the usage writer notices an outage quickly and spools.
    pub acquire_timeout: Duration,
    /// Postgres only: do not connect until first used, so a gateway can start while the database is down.
    pub lazy: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            lazy: false,
        }
    }
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// PostgreSQL.
    Postgres,
    /// SQLite, one local file.
    Sqlite,
}

/// Tenants, virtual keys and the usage ledger in one database. See the module docs for the design.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

impl std::fmt::Debug for Store {
    // Not derived: the pools' connect options hold the database password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.kind()).finish()
    }
}

#[derive(Clone)]
enum Backend {
    Postgres(Db<Postgres>),
    Sqlite(Db<Sqlite>),
}

// === impl Store ===

impl Store {
    /// Opens `url` with default options: `sqlite://path/to/file.db` (the file and its folder are created
    /// if missing; WAL journal) or `postgres://user@host/db`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, &StoreOptions::default()).await
    }

    /// Opens `url` with `options`.
    pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Self::open_sqlite(url, options).await,
            "postgres" | "postgresql" => {
                let connect = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout);
                let pool = if options.lazy {
                    pool.connect_lazy_with(connect)
                } else {
                    pool.connect_with(connect).await?
                };
                Ok(Self {
                    backend: Backend::Postgres(Db { pool }),
                })
            }
            other => Err(StoreError::UnsupportedUrl {
                scheme: other.to_owned(),
            }),
        }
    }

    async fn open_sqlite(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.acquire_timeout);
        let file = connect.get_filename();
        let in_memory = file.to_string_lossy().starts_with("file:") || file == Path::new(":memory:");
        if !in_memory && let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::io(format!("creating the database folder {}", dir.display()), e))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Self {
            backend: Backend::Sqlite(Db { pool }),
        })
    }

    /// Which database this is.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Postgres(_) => BackendKind::Postgres,
            Backend::Sqlite(_) => BackendKind::Sqlite,
        }
    }

    /// Applies the embedded migrations that have not been applied yet; a no-op when up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        on_backend!(self, db => db.migrate().await)
    }

    /// One round trip to the database (for readiness probes, and for the writer to tell an outage from
    /// a bad row).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, db => db.ping().await)
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        on_backend!(self, db => db.pool.close().await)
    }

    // === Tenants ===

    /// Creates a tenant. A taken name is [`StoreError::DuplicateTenant`].
    pub async fn create_tenant(&self, tenant: &NewTenant) -> Result<Tenant, StoreError> {
        tenant.validate()?;
        let now = now();
        let result = on_backend!(self, db => db.create_tenant(tenant, now).await);
        let id = result.map_err(|e| match e {
            StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                StoreError::DuplicateTenant(tenant.name.clone())
            }
            other => other,
        })?;
        Ok(Tenant {
            id,
            name: tenant.name.clone(),
            rpm: tenant.rpm,
            tpm: tenant.tpm,
            budget_micros: tenant.budget_micros,
            budget_period: tenant.budget_period,
            models: tenant.models.clone(),
            prompts: tenant.prompts.clone(),
            created_at: now,
        })
    }

    /// Every tenant, by name.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        on_backend!(self, db => db.tenants(None).await)
    }

    /// The tenant named `name`, if any.
    pub async fn tenant(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        let found = on_backend!(self, db => db.tenants(Some(name)).await)?;
        Ok(found.into_iter().next())
    }

    /// Changes the limits of the tenant named `name` and returns it as changed. Only the columns the
    /// change sets are written, so two admins changing different limits at once both keep their change.
    /// An unknown name is [`StoreError::TenantNotFound`]; values are checked as on creation.
    pub async fn update_tenant(&self, name: &str, change: &TenantChange) -> Result<Tenant, StoreError> {
        let current = self
            .tenant(name)
            .await?
            .ok_or_else(|| StoreError::TenantNotFound(name.to_owned()))?;
        change.validate(&current)?;
        if !change.is_empty() {
            let found = on_backend!(self, db => db.update_tenant(name, change).await)?;
            if !found {
                return Err(StoreError::TenantNotFound(name.to_owned()));
            }
        }
        self.tenant(name)
            .await?
            .ok_or_else(|| StoreError::TenantNotFound(name.to_owned()))
    }

    // === Virtual keys ===

    /// Creates a key for the tenant named `tenant`. The plaintext is in the answer and nowhere else; the
    /// store keeps its SHA-256 and display prefix. An `expires_at` in the past makes a key that is
    /// already expired (the admin API may refuse that; the store does not).
    pub async fn create_key(
        &self,
        tenant: &str,
        name: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<CreatedKey, StoreError> {
        if let Some(name) = name {
            validate_name("key name", name)?;
        }
        let owner = self
            .tenant(tenant)
            .await?
            .ok_or_else(|| StoreError::TenantNotFound(tenant.to_owned()))?;
        let generated = keys::generate()?;
        let key = KeyInfo {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: owner.id,
            tenant: owner.name,
            name: name.map(str::to_owned),
            prefix: generated.prefix,
            created_at: now(),
            expires_at: expires_at.map(|t| t.trunc_subsecs(6)),
            revoked_at: None,
        };
        on_backend!(self, db => db.insert_key(&key, &generated.hash).await)?;
        Ok(CreatedKey {
            id: key.id,
            key: generated.plaintext,
            prefix: key.prefix,
            tenant: key.tenant,
            name: key.name,
            created_at: key.created_at,
            expires_at: key.expires_at,
        })
    }

    /// The keys of the tenant named `tenant` (revoked and expired ones included), oldest first.
    pub async fn list_keys(&self, tenant: &str) -> Result<Vec<KeyInfo>, StoreError> {
        let owner = self
            .tenant(tenant)
            .await?
            .ok_or_else(|| StoreError::TenantNotFound(tenant.to_owned()))?;
        let keys = on_backend!(self, db => db.keys(KeyQuery::Tenant(owner.id)).await)?;
        Ok(keys.into_iter().map(|(key, _)| key).collect())
    }

    /// Revokes the key `id`. Revoking a revoked key keeps its first revocation time;
    /// an unknown id is [`StoreError::KeyNotFound`].
    pub async fn revoke_key(&self, id: &str) -> Result<(), StoreError> {
        let now = now();
        let found = on_backend!(self, db => db.revoke_key(id, now).await)?;
        if found {
            Ok(())
        } else {
            Err(StoreError::KeyNotFound(id.to_owned()))
        }
    }

    /// The key with this hash, its tenant and its state now. Revoked and expired keys are returned too,
    /// with their state, so that auth can say why a key stopped working.
    pub async fn lookup_key(&self, hash: &KeyHash) -> Result<Option<KeyLookup>, StoreError> {
        let found = on_backend!(self, db => db.lookup_key(hash).await)?;
        let now = Utc::now();
        Ok(found.map(|(key, tenant)| KeyLookup {
            state: key.state(now),
            key,
            tenant,
        }))
    }

    /// Every key neither revoked nor expired now, with its hash: what an auth cache loads (and reloads
    /// every few seconds, which is how revocations reach it).
    pub async fn list_active_keys(&self) -> Result<Vec<ActiveKey>, StoreError> {
        let now = now();
        let keys = on_backend!(self, db => db.keys(KeyQuery::Active(now)).await)?;
        Ok(keys.into_iter().map(|(key, hash)| ActiveKey { hash, key }).collect())
    }

    // === Alerts ===

    /// Records that a budget alert fired, unless one for its (tenant, period, threshold) already did:
    /// true when this call recorded it, and the caller should send it. Replicas racing on the same
    /// threshold get one true between them; a restart finds the record.
    pub async fn record_alert(&self, alert: &FiredAlert) -> Result<bool, StoreError> {
        let mut alert = alert.clone();
        alert.fired_at = alert.fired_at.trunc_subsecs(6);
        alert.tenant = crate::cap(&alert.tenant, crate::MAX_TENANT_BYTES).to_owned();
        on_backend!(self, db => db.record_alert(&alert).await)
    }

    /// The budget alerts fired for the tenant named `tenant`, by period and threshold.
    pub async fn fired_alerts(&self, tenant: &str) -> Result<Vec<FiredAlert>, StoreError> {
        on_backend!(self, db => db.fired_alerts(tenant).await)
    }

    // === Request logs ===

    /// Sets what the tenant named `tenant` keeps of its requests. An unknown tenant is
    /// [`StoreError::TenantNotFound`].
    pub async fn set_log_settings(&self, tenant: &str, settings: LogSettings) -> Result<(), StoreError> {
        settings.validate()?;
        if self.tenant(tenant).await?.is_none() {
            return Err(StoreError::TenantNotFound(tenant.to_owned()));
        }
        let now = now();
        on_backend!(self, db => db.set_log_settings(tenant, settings, now).await)
    }

    /// Every tenant's request-log settings that were ever set, by tenant; the others log nothing.
    pub async fn log_settings(&self) -> Result<Vec<(String, LogSettings)>, StoreError> {
        on_backend!(self, db => db.log_settings().await)
    }

    /// Writes request logs, ignoring ids already there; returns how many were new.
    pub async fn insert_request_logs(&self, logs: &[RequestLog]) -> Result<u64, StoreError> {
        let logs: Vec<RequestLog> = logs
            .iter()
            .map(|log| RequestLog {
                created_at: log.created_at.trunc_subsecs(6),
                ..log.clone()
            })
            .collect();
        on_backend!(self, db => db.insert_logs(&logs).await)
    }

    /// The tenant's latest request logs, newest first, at most `limit`.
    pub async fn request_logs(&self, tenant: &str, limit: u32) -> Result<Vec<RequestLog>, StoreError> {
        on_backend!(self, db => db.logs(tenant, i64::from(limit)).await)
    }

    /// Deletes the tenant's request logs made before `before`; returns how many.
    pub async fn purge_request_logs(&self, tenant: &str, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let before = before.trunc_subsecs(6);
        on_backend!(self, db => db.purge_logs(tenant, before).await)
    }

    /// The tenants that have request logs.
    pub async fn logged_tenants(&self) -> Result<Vec<String>, StoreError> {
        on_backend!(self, db => db.logged_tenants().await)
    }

    // === Usage ===

    /// Appends `rows` to the ledger in one transaction, ignoring ids already there (or repeated in
    /// `rows`), and adds the rows that were new to the per-day rollups in the same transaction.
    ///
    /// Client strings are capped as they are written ([`crate::cap`]); timestamps are truncated to
    /// microseconds, so both backends agree on every row's day. Rollup rows are upserted in a fixed order
    /// (day, tenant, key, model), so concurrent writers (several gateways) cannot deadlock on them.
    ///
    /// On PostgreSQL the rows go in by `COPY`, which costs its backend about 40% less CPU a row; should one
    /// of their ids be in the ledger already, that transaction is rolled back and the rows inserted by a
    /// statement that skips such ids.
    pub async fn insert_usage(&self, rows: &[UsageRow]) -> Result<InsertOutcome, StoreError> {
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        let unique: Vec<&UsageRow> = rows
            .iter()
            .filter(|r| seen.insert(crate::cap(&r.id, crate::MAX_ID_BYTES)))
            .collect();
        if unique.is_empty() {
            return Ok(InsertOutcome {
                inserted: 0,
                duplicates: rows.len() as u64,
            });
        }
        let inserted = match &self.backend {
            Backend::Postgres(db) => match db.copy_usage(&unique).await? {
                Some(inserted) => inserted,
                // An id was in the ledger already: the batch again, skipping such ids.
                None => db.insert_usage(&unique).await?,
            },
            Backend::Sqlite(db) => db.insert_usage(&unique).await?,
        };
        Ok(InsertOutcome {
            inserted,
            duplicates: rows.len() as u64 - inserted,
        })
    }

    /// The ledger's rows matching `filter`, oldest first (by `created_at`, then id), a page at a time, so
    /// that a month of rows never sits in memory at once. For finance: `sluice spend export`.
    pub fn export(&self, filter: ExportFilter) -> Export {
        Export {
            store: self.clone(),
            filter,
            after: None,
            page_size: EXPORT_PAGE,
            done: false,
        }
    }

    /// Spend from the per-day rollups, grouped as `filter` says, ordered by group.
    pub async fn spend(&self, filter: &SpendFilter) -> Result<Vec<SpendRow>, StoreError> {
        let rows = on_backend!(self, db => db.spend(filter, Source::Rollups).await)?;
        Ok(label_keys(rows, filter))
    }

    /// The same totals as [`Store::spend`], summed from the raw ledger: slower, for audits and for
    /// checking that the rollups agree with the ledger.
    pub async fn spend_from_ledger(&self, filter: &SpendFilter) -> Result<Vec<SpendRow>, StoreError> {
        let rows = on_backend!(self, db => db.spend(filter, Source::Ledger).await)?;
        Ok(label_keys(rows, filter))
    }

    /// Micro-dollars the tenant named `tenant` spent from `since` on, exactly: whole days after `since`'s
    /// day from the rollups, the rest of `since`'s own day from the ledger (skipped when `since` is a
    /// midnight), in one statement. For seeding in-memory budgets at start with
    /// `tenant_spend_since(name, period.start(now))`.
    pub async fn tenant_spend_since(&self, tenant: &str, since: DateTime<Utc>) -> Result<i64, StoreError> {
        let since = since.trunc_subsecs(6);
        let day = since.date_naive();
        let window = if since == crate::model::midnight(day) {
            None
        } else {
            let end = day
                .succ_opt()
                .map(crate::model::midnight)
                .ok_or_else(|| StoreError::invalid("since", "out of range"))?;
            Some((since, end))
        };
        on_backend!(self, db => db.tenant_spend_since(tenant, day, window).await)
    }
}

/// Rows per page of an export.
const EXPORT_PAGE: usize = 1000;

/// The ledger's rows in a range, page by page, from [`Store::export`]. Rows written into the range while
/// it is read appear if they sort after the page being read.
#[derive(Debug)]
pub struct Export {
    store: Store,
    filter: ExportFilter,
    /// The last row returned: (created_at, id).
    after: Option<(DateTime<Utc>, String)>,
    page_size: usize,
    done: bool,
}

impl Export {
    /// Rows per page (at least one); 1,000 by default.
    pub fn page_size(mut self, rows: usize) -> Self {
        self.page_size = rows.max(1);
        self
    }

    /// The next page of rows, `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<UsageRow>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let (filter, after, size) = (&self.filter, self.after.as_ref(), self.page_size);
        let rows = on_backend!(self.store, db => db.export_page(filter, after, size).await)?;
        self.done = rows.len() < self.page_size;
        match rows.last() {
            Some(last) => {
                self.after = Some((last.created_at, last.id.clone()));
                Ok(Some(rows))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// The current time at the precision both backends store.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Grouping by key, requests without a key (`''` in the rollups) get the [`NO_KEY`] label.
fn label_keys(mut rows: Vec<SpendRow>, filter: &SpendFilter) -> Vec<SpendRow> {
    if filter.group_by == crate::model::GroupBy::Key {
        for row in &mut rows {
            if row.group.is_empty() {
                NO_KEY.clone_into(&mut row.group);
            }
        }
        rows.sort_by(|a, b| a.group.cmp(&b.group));
    }
    rows
}
