//! Every query of the store, written once over any [`Dialect`]: the SQL text is the same on both
//! databases (`$n` placeholders, `ON CONFLICT ... DO UPDATE`, `RETURNING`, `CAST(... AS BIGINT)`), and
//! what differs is asked of the dialect.
//!
//! The sqlx bounds a generic query needs are stated once, on the `impl` block of [`Db`].

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::dialect::Dialect;
use super::statement::Statement;
use crate::error::StoreError;
use crate::keys::KeyHash;
use crate::model::{BudgetPeriod, GroupBy, KeyInfo, NewTenant, SpendFilter, SpendRow, Tenant, UsageRow, midnight};

/// Rows per INSERT statement: 17 bound values a row stays far below both backends' parameter limits.
const ROWS_PER_STATEMENT: usize = 1000;

/// Where spend is summed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Rollups,
    Ledger,
}

/// Which keys a key query returns.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyQuery {
    /// All keys of a tenant, by id.
    Tenant(i64),
    /// Keys neither revoked nor expired at this time.
    Active(DateTime<Utc>),
}

/// The tenant columns every tenant query selects, aliased so they survive joins.
const TENANT_COLUMNS: &str = "t.id AS t_id, t.name AS t_name, t.rpm AS t_rpm, t.tpm AS t_tpm, \
     t.budget_micros AS t_budget_micros, t.budget_period AS t_budget_period, t.models AS t_models, \
     t.prompts AS t_prompts, t.created_at AS t_created_at";

/// The key columns every key query selects, with the owning tenant's name.
const KEY_COLUMNS: &str = "k.id AS k_id, k.tenant_id AS k_tenant_id, k.name AS k_name, k.prefix AS k_prefix, \
     k.created_at AS k_created_at, k.expires_at AS k_expires_at, k.revoked_at AS k_revoked_at, \
     k.key_hash AS k_key_hash, t.name AS t_name";

/// One database's pool; the queries below run on either.
pub(super) struct Db<DB: sqlx::Database> {
    pub(super) pool: Pool<DB>,
}

impl<DB: sqlx::Database> Clone for Db<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

// === impl Db ===

impl<DB> Db<DB>
where
    DB: Dialect,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<DB::Time>: Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        DB::migrator().run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query::<DB>("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // === Tenants ===

    pub(super) async fn create_tenant(&self, t: &NewTenant, now: DateTime<Utc>) -> Result<i64, StoreError> {
        let models = encode_list(&t.models);
        let prompts = encode_list(&t.prompts);
        let id = sqlx::query_scalar::<DB, i64>(
            "INSERT INTO tenants (name, rpm, tpm, budget_micros, budget_period, models, prompts, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(t.name.as_str())
        .bind(t.rpm.map(to_i64))
        .bind(t.tpm.map(to_i64))
        .bind(t.budget_micros)
        .bind(t.budget_period.as_str())
        .bind(models.as_deref())
        .bind(prompts.as_deref())
        .bind(DB::time(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub(super) async fn tenants(&self, name: Option<&str>) -> Result<Vec<Tenant>, StoreError> {
        let mut query = Statement::<DB>::new("SELECT ");
        query.push(TENANT_COLUMNS).push(" FROM tenants t");
        if let Some(name) = name {
            query.push(" WHERE t.name = ").bind(name);
        }
        query.push(" ORDER BY t.name");
        let (sql, args) = query.into_parts()?;
        let rows = sqlx::query_with(&sql, args).fetch_all(&self.pool).await?;
        rows.iter().map(Self::tenant_from_row).collect()
    }

    fn tenant_from_row(row: &DB::Row) -> Result<Tenant, StoreError> {
        let period: String = row.try_get("t_budget_period")?;
        Ok(Tenant {
            id: row.try_get("t_id")?,
            name: row.try_get("t_name")?,
            rpm: to_u64(row.try_get("t_rpm")?, "rpm")?,
            tpm: to_u64(row.try_get("t_tpm")?, "tpm")?,
            budget_micros: row.try_get("t_budget_micros")?,
            budget_period: BudgetPeriod::from_str(&period)
                .map_err(|_| StoreError::Corrupt(format!("budget_period {period:?}")))?,
            models: decode_list(row.try_get("t_models")?, "models")?,
            prompts: decode_list(row.try_get("t_prompts")?, "prompts")?,
            created_at: DB::read_time(row.try_get("t_created_at")?)?,
        })
    }

    // === Virtual keys ===

    pub(super) async fn insert_key(&self, key: &KeyInfo, hash: &KeyHash) -> Result<(), StoreError> {
        sqlx::query::<DB>(
            "INSERT INTO virtual_keys (id, tenant_id, name, key_hash, prefix, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.id.as_str())
        .bind(key.tenant_id)
        .bind(key.name.as_deref())
        .bind(&hash.as_bytes()[..])
        .bind(key.prefix.as_str())
        .bind(DB::time(key.created_at))
        .bind(key.expires_at.map(DB::time))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn keys(&self, which: KeyQuery) -> Result<Vec<(KeyInfo, KeyHash)>, StoreError> {
        let mut query = Statement::<DB>::new("SELECT ");
        query
            .push(KEY_COLUMNS)
            .push(" FROM virtual_keys k JOIN tenants t ON t.id = k.tenant_id WHERE ");
        match which {
            KeyQuery::Tenant(id) => {
                query.push("k.tenant_id = ").bind(id);
            }
            KeyQuery::Active(now) => {
                query
                    .push("k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ")
                    .bind(DB::time(now))
                    .push(")");
            }
        }
        query.push(" ORDER BY k.created_at, k.id");
        let (sql, args) = query.into_parts()?;
        let rows = sqlx::query_with(&sql, args).fetch_all(&self.pool).await?;
        rows.iter().map(Self::key_from_row).collect()
    }

    fn key_from_row(row: &DB::Row) -> Result<(KeyInfo, KeyHash), StoreError> {
        let hash: Vec<u8> = row.try_get("k_key_hash")?;
        let read_opt = |column: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
            row.try_get::<Option<DB::Time>, _>(column)?
                .map(DB::read_time)
                .transpose()
        };
        let key = KeyInfo {
            id: row.try_get("k_id")?,
            tenant_id: row.try_get("k_tenant_id")?,
            tenant: row.try_get("t_name")?,
            name: row.try_get("k_name")?,
            prefix: row.try_get("k_prefix")?,
            created_at: DB::read_time(row.try_get("k_created_at")?)?,
            expires_at: read_opt("k_expires_at")?,
            revoked_at: read_opt("k_revoked_at")?,
        };
        Ok((key, KeyHash::from_slice(&hash)?))
    }

    pub(super) async fn revoke_key(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let found = sqlx::query::<DB>(
            "UPDATE virtual_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING id",
        )
        .bind(id)
        .bind(DB::time(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    pub(super) async fn lookup_key(&self, hash: &KeyHash) -> Result<Option<(KeyInfo, Tenant)>, StoreError> {
        let mut query = Statement::<DB>::new("SELECT ");
        query
            .push(KEY_COLUMNS)
            .push(", ")
            .push(TENANT_COLUMNS)
            .push(" FROM virtual_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = ")
            .bind(&hash.as_bytes()[..]);
        let (sql, args) = query.into_parts()?;
        let row = sqlx::query_with(&sql, args).fetch_optional(&self.pool).await?;
        row.map(|row| Ok((Self::key_from_row(&row)?.0, Self::tenant_from_row(&row)?)))
            .transpose()
    }

    // === Usage ===

    /// Inserts `rows` (request ids unique among them), skipping ids already in the ledger, and adds the
    /// new ones to the rollups, in one transaction. Returns how many were new.
    pub(super) async fn insert_usage(&self, rows: &[UsageRow]) -> Result<u64, StoreError> {
        // The statements below are not cached: their text depends on the batch's size, and each cached
        // multi-row insert would stay prepared for every batch size seen (about 130 KB each in SQLite).
        let mut tx = self.pool.begin().await?;
        let mut new: HashSet<String> = HashSet::with_capacity(rows.len());
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut query = Statement::<DB>::new(
                "INSERT INTO usage_ledger (request_id, tenant, key_id, model, provider, vendor_model, \
                 prompt_tokens, completion_tokens, cached_tokens, estimated, cost_micros, latency_ms, status, \
                 attempts, prompt_name, prompt_version, created_at) ",
            );
            query.values(chunk, |b, r| {
                b.bind(r.request_id.as_str())
                    .bind(r.tenant.as_str())
                    .bind(r.key_id.as_deref())
                    .bind(r.model.as_str())
                    .bind(r.provider.as_str())
                    .bind(r.vendor_model.as_str())
                    .bind(to_i64(r.prompt_tokens))
                    .bind(to_i64(r.completion_tokens))
                    .bind(to_i64(r.cached_tokens))
                    .bind(r.estimated)
                    .bind(r.cost_micros)
                    .bind(to_i64(r.latency_ms))
                    .bind(i32::from(r.status))
                    .bind(i32::try_from(r.attempts).unwrap_or(i32::MAX))
                    .bind(r.prompt_name.as_deref())
                    .bind(r.prompt_version.map(|v| i32::try_from(v).unwrap_or(i32::MAX)))
                    .bind(DB::time(r.created_at));
            });
            query.push(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
            let (sql, args) = query.into_parts()?;
            let inserted = sqlx::query_with(&sql, args)
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            for row in &inserted {
                new.insert(row.try_get::<String, _>(0)?);
            }
        }
        let sums: Vec<_> = rollups(rows.iter().filter(|r| new.contains(&r.request_id)))
            .into_iter()
            .collect();
        for chunk in sums.chunks(ROWS_PER_STATEMENT) {
            let mut query = Statement::<DB>::new(
                "INSERT INTO usage_daily (day, tenant, key_id, model, requests, prompt_tokens, completion_tokens, \
                 cached_tokens, cost_micros) ",
            );
            query.values(chunk, |b, ((day, tenant, key, model), s)| {
                b.bind(DB::day(*day))
                    .bind(*tenant)
                    .bind(*key)
                    .bind(*model)
                    .bind(s.requests)
                    .bind(s.prompt_tokens)
                    .bind(s.completion_tokens)
                    .bind(s.cached_tokens)
                    .bind(s.cost_micros);
            });
            query.push(
                " ON CONFLICT (day, tenant, key_id, model) DO UPDATE SET \
                 requests = usage_daily.requests + EXCLUDED.requests, \
                 prompt_tokens = usage_daily.prompt_tokens + EXCLUDED.prompt_tokens, \
                 completion_tokens = usage_daily.completion_tokens + EXCLUDED.completion_tokens, \
                 cached_tokens = usage_daily.cached_tokens + EXCLUDED.cached_tokens, \
                 cost_micros = usage_daily.cost_micros + EXCLUDED.cost_micros",
            );
            let (sql, args) = query.into_parts()?;
            sqlx::query_with(&sql, args).persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(new.len() as u64)
    }

    pub(super) async fn spend(&self, filter: &SpendFilter, source: Source) -> Result<Vec<SpendRow>, StoreError> {
        // Every fragment pushed as SQL below is a literal chosen by a match; values are bound.
        let group = match (source, filter.group_by) {
            (_, GroupBy::Tenant) => "tenant",
            (_, GroupBy::Model) => "model",
            (Source::Rollups, GroupBy::Day) => DB::ROLLUP_DAY,
            (Source::Ledger, GroupBy::Day) => DB::LEDGER_DAY,
            (Source::Rollups, GroupBy::Key) => "key_id",
            (Source::Ledger, GroupBy::Key) => "COALESCE(key_id, '')",
        };
        let mut query = Statement::<DB>::new("SELECT ");
        query.push(group).push(" AS grp, ");
        match source {
            Source::Rollups => {
                query.push(
                    "CAST(SUM(requests) AS BIGINT), CAST(SUM(prompt_tokens) AS BIGINT), \
                     CAST(SUM(completion_tokens) AS BIGINT), CAST(SUM(cached_tokens) AS BIGINT), \
                     CAST(SUM(cost_micros) AS BIGINT) FROM usage_daily WHERE 1 = 1",
                );
                if let Some(from) = filter.from {
                    query.push(" AND day >= ").bind(DB::day(from));
                }
                if let Some(to) = filter.to {
                    query.push(" AND day <= ").bind(DB::day(to));
                }
            }
            Source::Ledger => {
                query.push(
                    "CAST(COUNT(*) AS BIGINT), CAST(SUM(prompt_tokens) AS BIGINT), \
                     CAST(SUM(completion_tokens) AS BIGINT), CAST(SUM(cached_tokens) AS BIGINT), \
                     CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM usage_ledger WHERE 1 = 1",
                );
                if let Some(from) = filter.from {
                    query.push(" AND created_at >= ").bind(DB::time(midnight(from)));
                }
                if let Some(end) = filter.end_instant() {
                    query.push(" AND created_at < ").bind(DB::time(end));
                }
            }
        }
        if let Some(tenant) = &filter.tenant {
            query.push(" AND tenant = ").bind(tenant.as_str());
        }
        query.push(" GROUP BY grp ORDER BY grp");
        let (sql, args) = query.into_parts()?;
        let rows = sqlx::query_with(&sql, args).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(SpendRow {
                    group: row.try_get(0)?,
                    requests: row.try_get(1)?,
                    prompt_tokens: row.try_get(2)?,
                    completion_tokens: row.try_get(3)?,
                    cached_tokens: row.try_get(4)?,
                    cost_micros: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// Micro-dollars `tenant` spent: rollups from `day` on when `window` is `None`; else rollups after
    /// `day` and the ledger within `window` (the rest of `day`).
    pub(super) async fn tenant_spend_since(
        &self,
        tenant: &str,
        day: NaiveDate,
        window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Result<i64, StoreError> {
        let total = match window {
            None => {
                sqlx::query_scalar::<DB, i64>(
                    "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM usage_daily \
                     WHERE tenant = $1 AND day >= $2",
                )
                .bind(tenant)
                .bind(DB::day(day))
                .fetch_one(&self.pool)
                .await?
            }
            Some((since, end)) => {
                sqlx::query_scalar::<DB, i64>(
                    "SELECT CAST((SELECT COALESCE(SUM(cost_micros), 0) FROM usage_daily \
                        WHERE tenant = $1 AND day > $2) AS BIGINT) \
                     + CAST((SELECT COALESCE(SUM(cost_micros), 0) FROM usage_ledger \
                        WHERE tenant = $1 AND created_at >= $3 AND created_at < $4) AS BIGINT)",
                )
                .bind(tenant)
                .bind(DB::day(day))
                .bind(DB::time(since))
                .bind(DB::time(end))
                .fetch_one(&self.pool)
                .await?
            }
        };
        Ok(total)
    }
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
) -> BTreeMap<(NaiveDate, &'a str, &'a str, &'a str), RollupSums> {
    let mut sums = BTreeMap::new();
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
pub(super) fn to_i64(value: u64) -> i64 {
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
