//! `Store`: one handle over a Postgres or a SQLite database.
//!
//! # Why an enum and not a trait
//!
//! There are exactly two backends, both known at compile time, and every operation is a few queries that
//! differ in placeholders' types (timestamps are `TIMESTAMPTZ`/`DATE` in Postgres, fixed-width UTC text
//! in SQLite) more than in logic. A private enum over the two pools gives static dispatch, no boxed
//! futures and one concrete `Store` type for callers to hold; adding a backend means adding a variant and
//! its module. (sqlx's `Any` driver was not used: it loses the typed timestamps and dates.)
//!
//! `Store` is cheap to clone: both pools are reference-counted.

mod pg;
mod sqlite;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::error::StoreError;
use crate::keys::{self, KeyHash};
use crate::model::{
    ActiveKey, BudgetPeriod, CreatedKey, InsertOutcome, KeyInfo, KeyLookup, NO_KEY, NewTenant, SpendFilter, SpendRow,
    Tenant, UsageRow, validate_name,
};

/// Migrations embedded at build time; `Store::migrate` applies them.
static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Rows per INSERT statement: 17 bound values a row stays far below both backends' parameter limits.
const ROWS_PER_STATEMENT: usize = 1000;

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
    Postgres(PgPool),
    Sqlite(SqlitePool),
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
                    backend: Backend::Postgres(pool),
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
            backend: Backend::Sqlite(pool),
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
        match &self.backend {
            Backend::Postgres(pool) => PG_MIGRATIONS.run(pool).await?,
            Backend::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// One round trip to the database (for readiness probes, and for the writer to tell an outage from
    /// a bad row).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Backend::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Postgres(pool) => pool.close().await,
            Backend::Sqlite(pool) => pool.close().await,
        }
    }

    // === Tenants ===

    /// Creates a tenant. A taken name is [`StoreError::DuplicateTenant`].
    pub async fn create_tenant(&self, tenant: &NewTenant) -> Result<Tenant, StoreError> {
        tenant.validate()?;
        let now = now();
        let result = match &self.backend {
            Backend::Postgres(pool) => pg::create_tenant(pool, tenant, now).await,
            Backend::Sqlite(pool) => sqlite::create_tenant(pool, tenant, now).await,
        };
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
        match &self.backend {
            Backend::Postgres(pool) => pg::tenants(pool, None).await,
            Backend::Sqlite(pool) => sqlite::tenants(pool, None).await,
        }
    }

    /// The tenant named `name`, if any.
    pub async fn tenant(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        let found = match &self.backend {
            Backend::Postgres(pool) => pg::tenants(pool, Some(name)).await?,
            Backend::Sqlite(pool) => sqlite::tenants(pool, Some(name)).await?,
        };
        Ok(found.into_iter().next())
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
        match &self.backend {
            Backend::Postgres(pool) => pg::insert_key(pool, &key, &generated.hash).await?,
            Backend::Sqlite(pool) => sqlite::insert_key(pool, &key, &generated.hash).await?,
        }
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
        let keys = match &self.backend {
            Backend::Postgres(pool) => pg::keys(pool, KeyQuery::Tenant(owner.id)).await?,
            Backend::Sqlite(pool) => sqlite::keys(pool, KeyQuery::Tenant(owner.id)).await?,
        };
        Ok(keys.into_iter().map(|(key, _)| key).collect())
    }

    /// Revokes the key `id`. Revoking a revoked key keeps its first revocation time;
    /// an unknown id is [`StoreError::KeyNotFound`].
    pub async fn revoke_key(&self, id: &str) -> Result<(), StoreError> {
        let now = now();
        let found = match &self.backend {
            Backend::Postgres(pool) => pg::revoke_key(pool, id, now).await?,
            Backend::Sqlite(pool) => sqlite::revoke_key(pool, id, now).await?,
        };
        if found {
            Ok(())
        } else {
            Err(StoreError::KeyNotFound(id.to_owned()))
        }
    }

    /// The key with this hash, its tenant and its state now. Revoked and expired keys are returned too,
    /// with their state, so that auth can say why a key stopped working.
    pub async fn lookup_key(&self, hash: &KeyHash) -> Result<Option<KeyLookup>, StoreError> {
        let found = match &self.backend {
            Backend::Postgres(pool) => pg::lookup_key(pool, hash).await?,
            Backend::Sqlite(pool) => sqlite::lookup_key(pool, hash).await?,
        };
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
        let keys = match &self.backend {
            Backend::Postgres(pool) => pg::keys(pool, KeyQuery::Active(now)).await?,
            Backend::Sqlite(pool) => sqlite::keys(pool, KeyQuery::Active(now)).await?,
        };
        Ok(keys.into_iter().map(|(key, hash)| ActiveKey { hash, key }).collect())
    }

    // === Usage ===

    /// Appends `rows` to the ledger in one transaction, ignoring request ids already there (or repeated
    /// in `rows`), and adds the rows that were new to the per-day rollups in the same transaction.
    ///
    /// Rollup rows are upserted in a fixed order (day, tenant, key, model), so concurrent writers (several
    /// gateways) cannot deadlock on them. Timestamps are truncated to microseconds first, so both
    /// backends agree on every row's day.
    pub async fn insert_usage(&self, rows: &[UsageRow]) -> Result<InsertOutcome, StoreError> {
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        let unique: Vec<UsageRow> = rows
            .iter()
            .filter(|r| seen.insert(r.request_id.as_str()))
            .map(|r| UsageRow {
                created_at: r.created_at.trunc_subsecs(6),
                ..r.clone()
            })
            .collect();
        if unique.is_empty() {
            return Ok(InsertOutcome {
                inserted: 0,
                duplicates: rows.len() as u64,
            });
        }
        let inserted = match &self.backend {
            Backend::Postgres(pool) => pg::insert_usage(pool, &unique).await?,
            Backend::Sqlite(pool) => sqlite::insert_usage(pool, &unique).await?,
        };
        Ok(InsertOutcome {
            inserted,
            duplicates: rows.len() as u64 - inserted,
        })
    }

    /// Spend from the per-day rollups, grouped as `filter` says, ordered by group.
    pub async fn spend(&self, filter: &SpendFilter) -> Result<Vec<SpendRow>, StoreError> {
        let rows = match &self.backend {
            Backend::Postgres(pool) => pg::spend(pool, filter, Source::Rollups).await?,
            Backend::Sqlite(pool) => sqlite::spend(pool, filter, Source::Rollups).await?,
        };
        Ok(label_keys(rows, filter))
    }

    /// The same totals as [`Store::spend`], summed from the raw ledger: slower, for audits and for
    /// checking that the rollups agree with the ledger.
    pub async fn spend_from_ledger(&self, filter: &SpendFilter) -> Result<Vec<SpendRow>, StoreError> {
        let rows = match &self.backend {
            Backend::Postgres(pool) => pg::spend(pool, filter, Source::Ledger).await?,
            Backend::Sqlite(pool) => sqlite::spend(pool, filter, Source::Ledger).await?,
        };
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
        match &self.backend {
            Backend::Postgres(pool) => pg::tenant_spend_since(pool, tenant, day, window).await,
            Backend::Sqlite(pool) => sqlite::tenant_spend_since(pool, tenant, day, window).await,
        }
    }
}

/// Where spend is summed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Rollups,
    Ledger,
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

/// A usage row's per-day rollup key, and the sums added to it.
#[derive(Debug, Default, Clone, Copy)]
struct RollupSums {
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    cost_micros: i64,
}

/// Sums the rows that were new to the ledger by (day, tenant, key, model), in that order: the order the
/// upserts take their row locks in.
fn rollups<'a>(
    rows: impl Iterator<Item = &'a UsageRow>,
) -> std::collections::BTreeMap<(NaiveDate, &'a str, &'a str, &'a str), RollupSums> {
    let mut sums = std::collections::BTreeMap::new();
    for row in rows {
        let key = (
            row.created_at.date_naive(),
            row.tenant.as_str(),
            row.key_id.as_deref().unwrap_or(""),
            row.model.as_str(),
        );
        let entry: &mut RollupSums = sums.entry(key).or_default();
        entry.requests += 1;
        entry.prompt_tokens = entry.prompt_tokens.saturating_add(to_i64(row.prompt_tokens));
        entry.completion_tokens = entry.completion_tokens.saturating_add(to_i64(row.completion_tokens));
        entry.cached_tokens = entry.cached_tokens.saturating_add(to_i64(row.cached_tokens));
        entry.cost_micros = entry.cost_micros.saturating_add(row.cost_micros.unwrap_or(0));
    }
    sums
}

/// Token counts are `u64` on the wire and `BIGINT` in the database; 2^63 tokens do not happen, and
/// saturating keeps a corrupt count from failing a whole batch.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads a row's optional non-negative limit back.
fn to_u64(value: Option<i64>, column: &str) -> Result<Option<u64>, StoreError> {
    value
        .map(|v| u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {column}: {v}"))))
        .transpose()
}

/// A stored JSON list of names (`NULL` for "all").
fn decode_list(value: Option<String>, column: &str) -> Result<Option<Vec<String>>, StoreError> {
    value
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{column} is not a JSON list: {e}")))
        })
        .transpose()
}

fn encode_list(list: &Option<Vec<String>>) -> Option<String> {
    // Serializing a list of strings cannot fail.
    list.as_ref()
        .map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".to_owned()))
}

/// The columns of a tenant row, whatever the backend stored its time as.
struct TenantColumns {
    id: i64,
    name: String,
    rpm: Option<i64>,
    tpm: Option<i64>,
    budget_micros: Option<i64>,
    budget_period: String,
    models: Option<String>,
    prompts: Option<String>,
    created_at: DateTime<Utc>,
}

impl TenantColumns {
    fn into_tenant(self) -> Result<Tenant, StoreError> {
        Ok(Tenant {
            id: self.id,
            name: self.name,
            rpm: to_u64(self.rpm, "rpm")?,
            tpm: to_u64(self.tpm, "tpm")?,
            budget_micros: self.budget_micros,
            budget_period: BudgetPeriod::from_str(&self.budget_period)
                .map_err(|_| StoreError::Corrupt(format!("budget_period {:?}", self.budget_period)))?,
            models: decode_list(self.models, "models")?,
            prompts: decode_list(self.prompts, "prompts")?,
            created_at: self.created_at,
        })
    }
}

/// The columns of a key row.
struct KeyColumns {
    id: String,
    tenant_id: i64,
    tenant: String,
    name: Option<String>,
    prefix: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    hash: Vec<u8>,
}

impl KeyColumns {
    fn into_key(self) -> Result<(KeyInfo, KeyHash), StoreError> {
        let hash = KeyHash::from_slice(&self.hash)?;
        let key = KeyInfo {
            id: self.id,
            tenant_id: self.tenant_id,
            tenant: self.tenant,
            name: self.name,
            prefix: self.prefix,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        };
        Ok((key, hash))
    }
}

/// Which keys a key query returns.
#[derive(Debug, Clone, Copy)]
enum KeyQuery {
    /// All keys of a tenant, by id.
    Tenant(i64),
    /// Keys neither revoked nor expired at this time.
    Active(DateTime<Utc>),
}

/// The tenant columns every tenant query selects, aliased so they survive joins.
macro_rules! tenant_columns {
    () => {
        "t.id AS t_id, t.name AS t_name, t.rpm AS t_rpm, t.tpm AS t_tpm, t.budget_micros AS t_budget_micros, \
         t.budget_period AS t_budget_period, t.models AS t_models, t.prompts AS t_prompts, \
         t.created_at AS t_created_at"
    };
}

/// The key columns every key query selects; queries add `t.name AS t_name` or all [`tenant_columns`].
macro_rules! key_columns {
    () => {
        "k.id AS k_id, k.tenant_id AS k_tenant_id, k.name AS k_name, k.prefix AS k_prefix, \
         k.created_at AS k_created_at, k.expires_at AS k_expires_at, k.revoked_at AS k_revoked_at, \
         k.key_hash AS k_key_hash"
    };
}

pub(crate) use {key_columns, tenant_columns};
