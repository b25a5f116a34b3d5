//! Every query of the store, written once over any [`Dialect`]: the SQL text is the same on both
//! databases (`$n` placeholders, `ON CONFLICT ... DO UPDATE`, `RETURNING`, `CAST(... AS BIGINT)`), and
//! what differs is asked of the dialect.
//!
//! The sqlx bounds a generic query needs are stated once, on the `impl` block of [`Db`].

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use sluice_api::{TokenUsage, UsageSource};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::dialect::Dialect;
use super::ledger_insert::{LedgerInsert, LedgerValues};
use super::rollups::rollups;
use super::statement::Statement;
use crate::alerts::FiredAlert;
use crate::error::StoreError;
use crate::keys::KeyHash;
use crate::ledger::{MAX_ID_BYTES, PriceSource, UsageRow, cap};
use crate::model::{
    BudgetPeriod, ExportFilter, GroupBy, KeyInfo, NewTenant, SpendFilter, SpendRow, Tenant, TenantChange, midnight,
};

/// Rows per INSERT statement whose text is the same for any count (PostgreSQL's arrays), and per piece of
/// a `COPY` (`super::ledger_copy`). Few, because the writer shares the gateway's executor and encodes
/// them in one go, without yielding: a batch of 200 rows in one statement held the request core for
/// about a millisecond every flush, which showed in the paced p99 (2.9-3.5 ms against 2.7-2.9 with
/// statements of 32 rows, docs/benchmarks.md).
pub(super) const ROWS_PER_STATEMENT: usize = 32;

/// The most rows of a statement that binds a tuple per row (SQLite's ledger insert, both backends'
/// rollups), whose text depends on how many rows it takes.
const TUPLE_ROWS: usize = 32;

/// How many of `left` rows (at least one) the next tuple-per-row statement takes: the largest power of two
/// up to [`TUPLE_ROWS`]. A handful of texts then come back batch after batch, each prepared once per
/// connection and cached, where a text per batch size was parsed again for every batch: in SQLite about
/// 24k instructions a ledger row, a tenth of a request's on the bare proxy.
fn tuple_statement_rows(left: usize) -> usize {
    if left >= TUPLE_ROWS {
        TUPLE_ROWS
    } else {
        1 << left.max(1).ilog2()
    }
}

/// `rows` cut into what one statement each takes: up to [`ROWS_PER_STATEMENT`] rows when the statement's
/// text is the same for any count (`fixed_text`), else [`tuple_statement_rows`] of the rows left.
fn statement_chunks<T>(rows: &[T], fixed_text: bool) -> impl Iterator<Item = &[T]> {
    let mut left = rows;
    std::iter::from_fn(move || {
        if left.is_empty() {
            return None;
        }
        let size = if fixed_text {
            left.len().min(ROWS_PER_STATEMENT)
        } else {
            tuple_statement_rows(left.len())
        };
        let (chunk, rest) = left.split_at(size);
        left = rest;
        Some(chunk)
    })
}

/// A ledger row's columns, in the order inserts bind them and exports read them.
pub(super) const LEDGER_COLUMNS: &str = "id, client_request_id, tenant, key_id, model, provider, vendor_model, upstream_key, \
     input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens, \
     usage_source, cost_micros, price_source, price_date, latency_ms, status, attempts, attempt_log, prompt_name, \
     prompt_version, created_at";

/// The spend sums after the request count, alike over the rollups and the ledger.
const CATEGORY_SUMS: &str = "CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(cache_read_tokens) AS BIGINT), \
     CAST(SUM(cache_write_5m_tokens) AS BIGINT), CAST(SUM(cache_write_1h_tokens) AS BIGINT), \
     CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(reasoning_tokens) AS BIGINT), \
     CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT)";

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
    DB: Dialect + LedgerInsert,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> Option<DB::Time>: Encode<'q, DB>,
    for<'q> Option<DB::Day>: Encode<'q, DB>,
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

    /// Writes the columns `change` sets; false when no tenant has that name.
    pub(super) async fn update_tenant(&self, name: &str, change: &TenantChange) -> Result<bool, StoreError> {
        // Encoded before the statement, which borrows them.
        let models = change.models.as_ref().map(encode_list);
        let prompts = change.prompts.as_ref().map(encode_list);
        let mut query = Statement::<DB>::new("UPDATE tenants SET ");
        let mut first = true;
        let mut column = |query: &mut Statement<'_, DB>, sql: &str| {
            query.push(if first { "" } else { ", " }).push(sql);
            first = false;
        };
        if let Some(rpm) = change.rpm {
            column(&mut query, "rpm = ");
            query.bind(rpm.map(to_i64));
        }
        if let Some(tpm) = change.tpm {
            column(&mut query, "tpm = ");
            query.bind(tpm.map(to_i64));
        }
        if let Some(budget) = change.budget_micros {
            column(&mut query, "budget_micros = ");
            query.bind(budget);
        }
        if let Some(period) = change.budget_period {
            column(&mut query, "budget_period = ");
            query.bind(period.as_str());
        }
        if let Some(models) = &models {
            column(&mut query, "models = ");
            query.bind(models.as_deref());
        }
        if let Some(prompts) = &prompts {
            column(&mut query, "prompts = ");
            query.bind(prompts.as_deref());
        }
        query.push(" WHERE name = ").bind(name).push(" RETURNING id");
        let (sql, args) = query.into_parts()?;
        let found = sqlx::query_with(&sql, args).fetch_optional(&self.pool).await?;
        Ok(found.is_some())
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

    // === Alerts ===

    /// Inserts the fired alert unless its (tenant, period, threshold) is there: true when this call made
    /// the row, so exactly one caller among replicas racing on it is told to send.
    pub(super) async fn record_alert(&self, alert: &FiredAlert) -> Result<bool, StoreError> {
        let made = sqlx::query::<DB>(
            "INSERT INTO alerts_fired (tenant, period, threshold_bp, spend_micros, fired_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, period, threshold_bp) DO NOTHING RETURNING tenant",
        )
        .bind(alert.tenant.as_str())
        .bind(alert.period.as_str())
        .bind(i32::try_from(alert.threshold_bp).map_err(|_| StoreError::invalid("threshold", "too large"))?)
        .bind(alert.spend_micros)
        .bind(DB::time(alert.fired_at))
        .fetch_optional(&self.pool)
        .await?;
        Ok(made.is_some())
    }

    pub(super) async fn fired_alerts(&self, tenant: &str) -> Result<Vec<FiredAlert>, StoreError> {
        let rows = sqlx::query::<DB>(
            "SELECT tenant, period, threshold_bp, spend_micros, fired_at FROM alerts_fired WHERE tenant = $1 \
             ORDER BY period, threshold_bp",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let threshold: i32 = row.try_get("threshold_bp")?;
                Ok(FiredAlert {
                    tenant: row.try_get("tenant")?,
                    period: row.try_get("period")?,
                    threshold_bp: u32::try_from(threshold)
                        .map_err(|_| StoreError::Corrupt(format!("alert threshold {threshold}")))?,
                    spend_micros: row.try_get("spend_micros")?,
                    fired_at: DB::read_time(row.try_get("fired_at")?)?,
                })
            })
            .collect()
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

    /// Inserts `rows` (ids unique among them once capped), skipping ids already in the ledger, and adds
    /// the new ones to the rollups, in one transaction. Returns how many were new.
    pub(super) async fn insert_usage(&self, rows: &[&UsageRow]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut new: Vec<&UsageRow> = Vec::with_capacity(rows.len());
        for chunk in statement_chunks(rows, DB::FIXED_TEXT) {
            let mut query = Statement::<DB>::new(DB::INSERT_HEAD);
            query.push(LEDGER_COLUMNS).push(") ");
            DB::push_rows(&mut query, chunk.iter().map(|r| LedgerValues::of(r)).collect());
            query.push(DB::INSERT_TAIL);
            let (sql, args) = query.into_parts()?;
            let answer = sqlx::query_with(&sql, args).fetch_all(&mut *tx).await?;
            match DB::inserted(&answer, chunk.len())? {
                // Every row was new: the common case, with no id to decode and look up.
                None => new.extend_from_slice(chunk),
                Some(ids) => new.extend(chunk.iter().filter(|r| ids.contains(cap(&r.id, MAX_ID_BYTES)))),
            }
        }
        Self::add_rollups(&mut tx, &new).await?;
        tx.commit().await?;
        Ok(new.len() as u64)
    }

    /// Adds `new` ledger rows (each new to the ledger) to the per-day rollups, on `conn`: the insert's
    /// transaction.
    pub(super) async fn add_rollups(conn: &mut DB::Connection, new: &[&UsageRow]) -> Result<(), StoreError> {
        let sums: Vec<_> = rollups(new.iter()).into_iter().collect();
        // Rollups bind a tuple per row in both databases.
        for chunk in statement_chunks(&sums, false) {
            let mut query = Statement::<DB>::new(
                "INSERT INTO usage_daily (day, tenant, key_id, model, requests, input_tokens, cache_read_tokens, \
                 cache_write_5m_tokens, cache_write_1h_tokens, output_tokens, reasoning_tokens, cost_micros) ",
            );
            query.values(chunk, |b, ((day, tenant, key, model), s)| {
                b.bind(DB::day(*day))
                    .bind(*tenant)
                    .bind(*key)
                    .bind(*model)
                    .bind(s.requests)
                    .bind(s.input)
                    .bind(s.cache_read)
                    .bind(s.cache_write_5m)
                    .bind(s.cache_write_1h)
                    .bind(s.output)
                    .bind(s.reasoning)
                    .bind(s.cost_micros);
            });
            query.push(
                " ON CONFLICT (day, tenant, key_id, model) DO UPDATE SET \
                 requests = usage_daily.requests + EXCLUDED.requests, \
                 input_tokens = usage_daily.input_tokens + EXCLUDED.input_tokens, \
                 cache_read_tokens = usage_daily.cache_read_tokens + EXCLUDED.cache_read_tokens, \
                 cache_write_5m_tokens = usage_daily.cache_write_5m_tokens + EXCLUDED.cache_write_5m_tokens, \
                 cache_write_1h_tokens = usage_daily.cache_write_1h_tokens + EXCLUDED.cache_write_1h_tokens, \
                 output_tokens = usage_daily.output_tokens + EXCLUDED.output_tokens, \
                 reasoning_tokens = usage_daily.reasoning_tokens + EXCLUDED.reasoning_tokens, \
                 cost_micros = usage_daily.cost_micros + EXCLUDED.cost_micros",
            );
            let (sql, args) = query.into_parts()?;
            sqlx::query_with(&sql, args).execute(&mut *conn).await?;
        }
        Ok(())
    }

    pub(super) async fn spend(&self, filter: &SpendFilter, source: Source) -> Result<Vec<SpendRow>, StoreError> {
        // Every fragment pushed as SQL below is a literal chosen by a match; values are bound. The
        // rollups and the ledger name their categories alike.
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
                query
                    .push("CAST(SUM(requests) AS BIGINT), ")
                    .push(CATEGORY_SUMS)
                    .push(" FROM usage_daily WHERE 1 = 1");
                if let Some(from) = filter.from {
                    query.push(" AND day >= ").bind(DB::day(from));
                }
                if let Some(to) = filter.to {
                    query.push(" AND day <= ").bind(DB::day(to));
                }
            }
            Source::Ledger => {
                query
                    .push("CAST(COUNT(*) AS BIGINT), ")
                    .push(CATEGORY_SUMS)
                    .push(" FROM usage_ledger WHERE 1 = 1");
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
                    input_tokens: row.try_get(2)?,
                    cache_read_tokens: row.try_get(3)?,
                    cache_write_5m_tokens: row.try_get(4)?,
                    cache_write_1h_tokens: row.try_get(5)?,
                    output_tokens: row.try_get(6)?,
                    reasoning_tokens: row.try_get(7)?,
                    cost_micros: row.try_get(8)?,
                })
            })
            .collect()
    }

    /// Up to `limit` ledger rows matching `filter`, in (created_at, id) order, after `after` (the last
    /// row of the previous page).
    pub(super) async fn export_page(
        &self,
        filter: &ExportFilter,
        after: Option<&(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let mut query = Statement::<DB>::new("SELECT ");
        query.push(LEDGER_COLUMNS).push(" FROM usage_ledger WHERE 1 = 1");
        if let Some(tenant) = &filter.tenant {
            query.push(" AND tenant = ").bind(tenant.as_str());
        }
        if let Some(from) = filter.from {
            query.push(" AND created_at >= ").bind(DB::time(midnight(from)));
        }
        if let Some(end) = filter.end_instant() {
            query.push(" AND created_at < ").bind(DB::time(end));
        }
        if let Some((created_at, id)) = after {
            query
                .push(" AND (created_at, id) > (")
                .bind(DB::time(*created_at))
                .push(", ")
                .bind(id.as_str())
                .push(")");
        }
        query
            .push(" ORDER BY created_at, id LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let (sql, args) = query.into_parts()?;
        let rows = sqlx::query_with(&sql, args).fetch_all(&self.pool).await?;
        rows.iter().map(Self::usage_from_row).collect()
    }

    /// A ledger row read back, its columns in [`LEDGER_COLUMNS`] order.
    fn usage_from_row(row: &DB::Row) -> Result<UsageRow, StoreError> {
        let count = |index: usize, column: &str| -> Result<u64, StoreError> {
            let value: i64 = row.try_get(index)?;
            u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {column}: {value}")))
        };
        let usage_source: String = row.try_get(14)?;
        let price_source: String = row.try_get(16)?;
        let status: i32 = row.try_get(19)?;
        let attempts: i32 = row.try_get(20)?;
        let attempt_log: String = row.try_get(21)?;
        let prompt_version: Option<i32> = row.try_get(23)?;
        Ok(UsageRow {
            id: row.try_get(0)?,
            client_request_id: row.try_get(1)?,
            tenant: row.try_get::<String, _>(2)?.into(),
            key_id: row.try_get::<Option<String>, _>(3)?.map(Arc::from),
            model: row.try_get(4)?,
            provider: row.try_get::<String, _>(5)?.into(),
            vendor_model: row.try_get::<String, _>(6)?.into(),
            upstream_key: row.try_get::<Option<String>, _>(7)?.map(Arc::from),
            usage: TokenUsage {
                input: count(8, "input_tokens")?,
                cache_read: count(9, "cache_read_tokens")?,
                cache_write_5m: count(10, "cache_write_5m_tokens")?,
                cache_write_1h: count(11, "cache_write_1h_tokens")?,
                output: count(12, "output_tokens")?,
                reasoning: count(13, "reasoning_tokens")?,
            },
            usage_source: UsageSource::parse(&usage_source)
                .ok_or_else(|| StoreError::Corrupt(format!("usage_source {usage_source:?}")))?,
            cost_micros: row.try_get(15)?,
            price_source: PriceSource::parse(&price_source)
                .ok_or_else(|| StoreError::Corrupt(format!("price_source {price_source:?}")))?,
            price_date: row.try_get::<Option<DB::Day>, _>(17)?.map(DB::read_day).transpose()?,
            latency_ms: count(18, "latency_ms")?,
            status: u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("status {status}")))?,
            attempts: u32::try_from(attempts).map_err(|_| StoreError::Corrupt(format!("attempts {attempts}")))?,
            attempt_log: serde_json::from_str(&attempt_log)
                .map_err(|e| StoreError::Corrupt(format!("attempt_log is not a list of attempts: {e}")))?,
            prompt_name: row.try_get(22)?,
            prompt_version: prompt_version
                .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("prompt_version {v}"))))
                .transpose()?,
            created_at: DB::read_time(row.try_get(24)?)?,
        })
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

/// An optional string capped as the ledger stores it.
pub(super) fn capped<S: AsRef<str>>(value: &Option<S>, max: usize) -> Option<&str> {
    value.as_ref().map(|v| cap(v.as_ref(), max))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_statements_come_in_powers_of_two_that_add_up() {
        for n in 1..=200 {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&rows, false).collect();
            for chunk in &chunks {
                assert!(
                    chunk.len().is_power_of_two() && chunk.len() <= TUPLE_ROWS,
                    "{n}: {}",
                    chunk.len()
                );
            }
            assert_eq!(chunks.concat(), rows, "{n}: every row once, in order");
            assert!(chunks.len() <= n / TUPLE_ROWS + 5, "{n}: {} statements", chunks.len());
        }
        let rows: Vec<usize> = (0..200).collect();
        let sizes: Vec<usize> = statement_chunks(&rows, true).map(<[usize]>::len).collect();
        assert_eq!(sizes, [32, 32, 32, 32, 32, 32, 8]);
    }
}
