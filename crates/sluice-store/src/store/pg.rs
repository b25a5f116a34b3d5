//! The Postgres side of `Store`: `TIMESTAMPTZ` and `DATE` bound as chrono values.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::{
    KeyColumns, KeyQuery, ROWS_PER_STATEMENT, Source, TenantColumns, encode_list, key_columns, rollups, tenant_columns,
    to_i64,
};
use crate::error::StoreError;
use crate::keys::KeyHash;
use crate::model::{GroupBy, KeyInfo, NewTenant, SpendFilter, SpendRow, Tenant, UsageRow, midnight};

pub(super) async fn create_tenant(pool: &PgPool, t: &NewTenant, now: DateTime<Utc>) -> Result<i64, StoreError> {
    let id = sqlx::query_scalar(
        "INSERT INTO tenants (name, rpm, tpm, budget_micros, budget_period, models, prompts, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(&t.name)
    .bind(t.rpm.map(to_i64))
    .bind(t.tpm.map(to_i64))
    .bind(t.budget_micros)
    .bind(t.budget_period.as_str())
    .bind(encode_list(&t.models))
    .bind(encode_list(&t.prompts))
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

pub(super) async fn tenants(pool: &PgPool, name: Option<&str>) -> Result<Vec<Tenant>, StoreError> {
    let mut query = QueryBuilder::<Postgres>::new(concat!("SELECT ", tenant_columns!(), " FROM tenants t"));
    if let Some(name) = name {
        query.push(" WHERE t.name = ").push_bind(name);
    }
    query.push(" ORDER BY t.name");
    let rows = query.build().fetch_all(pool).await?;
    rows.iter().map(tenant_from_row).collect()
}

fn tenant_from_row(row: &PgRow) -> Result<Tenant, StoreError> {
    TenantColumns {
        id: row.try_get("t_id")?,
        name: row.try_get("t_name")?,
        rpm: row.try_get("t_rpm")?,
        tpm: row.try_get("t_tpm")?,
        budget_micros: row.try_get("t_budget_micros")?,
        budget_period: row.try_get("t_budget_period")?,
        models: row.try_get("t_models")?,
        prompts: row.try_get("t_prompts")?,
        created_at: row.try_get("t_created_at")?,
    }
    .into_tenant()
}

pub(super) async fn insert_key(pool: &PgPool, key: &KeyInfo, hash: &KeyHash) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO virtual_keys (id, tenant_id, name, key_hash, prefix, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key.id)
    .bind(key.tenant_id)
    .bind(&key.name)
    .bind(&hash.as_bytes()[..])
    .bind(&key.prefix)
    .bind(key.created_at)
    .bind(key.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn keys(pool: &PgPool, which: KeyQuery) -> Result<Vec<(KeyInfo, KeyHash)>, StoreError> {
    let mut query = QueryBuilder::<Postgres>::new(concat!(
        "SELECT ",
        key_columns!(),
        ", t.name AS t_name FROM virtual_keys k JOIN tenants t ON t.id = k.tenant_id WHERE "
    ));
    match which {
        KeyQuery::Tenant(id) => {
            query.push("k.tenant_id = ").push_bind(id);
        }
        KeyQuery::Active(now) => {
            query
                .push("k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ")
                .push_bind(now)
                .push(")");
        }
    }
    query.push(" ORDER BY k.created_at, k.id");
    let rows = query.build().fetch_all(pool).await?;
    rows.iter().map(key_from_row).collect()
}

fn key_from_row(row: &PgRow) -> Result<(KeyInfo, KeyHash), StoreError> {
    KeyColumns {
        id: row.try_get("k_id")?,
        tenant_id: row.try_get("k_tenant_id")?,
        tenant: row.try_get("t_name")?,
        name: row.try_get("k_name")?,
        prefix: row.try_get("k_prefix")?,
        created_at: row.try_get("k_created_at")?,
        expires_at: row.try_get("k_expires_at")?,
        revoked_at: row.try_get("k_revoked_at")?,
        hash: row.try_get("k_key_hash")?,
    }
    .into_key()
}

pub(super) async fn revoke_key(pool: &PgPool, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE virtual_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn lookup_key(pool: &PgPool, hash: &KeyHash) -> Result<Option<(KeyInfo, Tenant)>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        key_columns!(),
        ", ",
        tenant_columns!(),
        " FROM virtual_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = $1"
    ))
    .bind(&hash.as_bytes()[..])
    .fetch_optional(pool)
    .await?;
    row.map(|row| Ok((key_from_row(&row)?.0, tenant_from_row(&row)?)))
        .transpose()
}

pub(super) async fn insert_usage(pool: &PgPool, rows: &[UsageRow]) -> Result<u64, StoreError> {
    // The statements below are not cached: their text depends on the batch's size, and each cached
    // multi-row insert would stay prepared, on the client and in the server, for every batch size seen.
    let mut tx = pool.begin().await?;
    let mut new: HashSet<String> = HashSet::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Postgres>::new(
            "INSERT INTO usage_ledger (request_id, tenant, key_id, model, provider, vendor_model, prompt_tokens, \
             completion_tokens, cached_tokens, estimated, cost_micros, latency_ms, status, attempts, prompt_name, \
             prompt_version, created_at) ",
        );
        query.push_values(chunk, |mut b, r| {
            b.push_bind(&r.request_id)
                .push_bind(&r.tenant)
                .push_bind(&r.key_id)
                .push_bind(&r.model)
                .push_bind(&r.provider)
                .push_bind(&r.vendor_model)
                .push_bind(to_i64(r.prompt_tokens))
                .push_bind(to_i64(r.completion_tokens))
                .push_bind(to_i64(r.cached_tokens))
                .push_bind(r.estimated)
                .push_bind(r.cost_micros)
                .push_bind(to_i64(r.latency_ms))
                .push_bind(i32::from(r.status))
                .push_bind(i32::try_from(r.attempts).unwrap_or(i32::MAX))
                .push_bind(&r.prompt_name)
                .push_bind(r.prompt_version.map(|v| i32::try_from(v).unwrap_or(i32::MAX)))
                .push_bind(r.created_at);
        });
        query.push(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
        let ids: Vec<String> = query.build_query_scalar().persistent(false).fetch_all(&mut *tx).await?;
        new.extend(ids);
    }
    let sums: Vec<_> = rollups(rows.iter().filter(|r| new.contains(&r.request_id)))
        .into_iter()
        .collect();
    for chunk in sums.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Postgres>::new(
            "INSERT INTO usage_daily (day, tenant, key_id, model, requests, prompt_tokens, completion_tokens, \
             cached_tokens, cost_micros) ",
        );
        query.push_values(chunk, |mut b, ((day, tenant, key, model), s)| {
            b.push_bind(*day)
                .push_bind(*tenant)
                .push_bind(*key)
                .push_bind(*model)
                .push_bind(s.requests)
                .push_bind(s.prompt_tokens)
                .push_bind(s.completion_tokens)
                .push_bind(s.cached_tokens)
                .push_bind(s.cost_micros);
        });
        query.push(
            " ON CONFLICT (day, tenant, key_id, model) DO UPDATE SET \
             requests = usage_daily.requests + EXCLUDED.requests, \
             prompt_tokens = usage_daily.prompt_tokens + EXCLUDED.prompt_tokens, \
             completion_tokens = usage_daily.completion_tokens + EXCLUDED.completion_tokens, \
             cached_tokens = usage_daily.cached_tokens + EXCLUDED.cached_tokens, \
             cost_micros = usage_daily.cost_micros + EXCLUDED.cost_micros",
        );
        query.build().persistent(false).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(new.len() as u64)
}

pub(super) async fn spend(pool: &PgPool, filter: &SpendFilter, source: Source) -> Result<Vec<SpendRow>, StoreError> {
    // Every fragment pushed as SQL below is a literal chosen by a match; values are bound.
    let group = match (source, filter.group_by) {
        (_, GroupBy::Tenant) => "tenant",
        (_, GroupBy::Model) => "model",
        (Source::Rollups, GroupBy::Day) => "to_char(day, 'YYYY-MM-DD')",
        (Source::Ledger, GroupBy::Day) => "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        (Source::Rollups, GroupBy::Key) => "key_id",
        (Source::Ledger, GroupBy::Key) => "COALESCE(key_id, '')",
    };
    let mut query = QueryBuilder::<Postgres>::new("SELECT ");
    query.push(group).push(" AS grp, ");
    match source {
        Source::Rollups => {
            query.push(
                "SUM(requests)::BIGINT, SUM(prompt_tokens)::BIGINT, SUM(completion_tokens)::BIGINT, \
                 SUM(cached_tokens)::BIGINT, SUM(cost_micros)::BIGINT FROM usage_daily WHERE TRUE",
            );
            if let Some(from) = filter.from {
                query.push(" AND day >= ").push_bind(from);
            }
            if let Some(to) = filter.to {
                query.push(" AND day <= ").push_bind(to);
            }
        }
        Source::Ledger => {
            query.push(
                "COUNT(*)::BIGINT, SUM(prompt_tokens)::BIGINT, SUM(completion_tokens)::BIGINT, \
                 SUM(cached_tokens)::BIGINT, COALESCE(SUM(cost_micros), 0)::BIGINT FROM usage_ledger WHERE TRUE",
            );
            if let Some(from) = filter.from {
                query.push(" AND created_at >= ").push_bind(midnight(from));
            }
            if let Some(end) = filter.end_instant() {
                query.push(" AND created_at < ").push_bind(end);
            }
        }
    }
    if let Some(tenant) = &filter.tenant {
        query.push(" AND tenant = ").push_bind(tenant);
    }
    query.push(" GROUP BY grp ORDER BY grp");
    let rows = query.build().fetch_all(pool).await?;
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

pub(super) async fn tenant_spend_since(
    pool: &PgPool,
    tenant: &str,
    day: NaiveDate,
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<i64, StoreError> {
    let total =
        match window {
            None => {
                sqlx::query_scalar(
                    "SELECT COALESCE(SUM(cost_micros), 0)::BIGINT FROM usage_daily WHERE tenant = $1 AND day >= $2",
                )
                .bind(tenant)
                .bind(day)
                .fetch_one(pool)
                .await?
            }
            Some((since, end)) => sqlx::query_scalar(
                "SELECT (SELECT COALESCE(SUM(cost_micros), 0) FROM usage_daily WHERE tenant = $1 AND day > $2)::BIGINT \
                 + (SELECT COALESCE(SUM(cost_micros), 0) FROM usage_ledger \
                    WHERE tenant = $1 AND created_at >= $3 AND created_at < $4)::BIGINT",
            )
            .bind(tenant)
            .bind(day)
            .bind(since)
            .bind(end)
            .fetch_one(pool)
            .await?,
        };
    Ok(total)
}
