//! How a batch of ledger rows becomes inserts that skip ids already in the ledger. SQLite takes a
//! `VALUES` tuple per row. Postgres takes new rows by `COPY` (`super::ledger_copy`), and here a batch
//! that holds an id it has already, as one array per column (`UNNEST`): 25 parameters whatever the
//! batch's size, so the statement's text is the same for every batch and is prepared once per
//! connection, where a tuple per row had Postgres parse and describe a statement of up to 25,000
//! parameters for each batch and the gateway format a placeholder for each value.

use std::collections::HashSet;

use chrono::SubsecRound;
use sqlx::{Postgres, Row, Sqlite};

use super::dialect::Dialect;
use super::queries::{capped, to_i64};
use super::statement::Statement;
use crate::ledger::{MAX_ID_BYTES, MAX_MODEL_BYTES, MAX_NAME_BYTES, MAX_TENANT_BYTES, UsageRow, attempt_log_json, cap};

/// A database's way of inserting a batch of ledger rows.
pub(crate) trait LedgerInsert: Dialect {
    /// Whether the statement's text is the same however many rows it takes. If not, a batch goes in
    /// statements of a few fixed sizes, so that each text is prepared once and cached.
    const FIXED_TEXT: bool;

    /// The statement's text before the ledger's column list.
    const INSERT_HEAD: &'static str;

    /// The statement's text after the rows: the conflict clause and what the statement answers.
    const INSERT_TAIL: &'static str;

    /// Appends `rows` to [`Self::INSERT_HEAD`] and the ledger's columns.
    fn push_rows<'a>(query: &mut Statement<'a, Self>, rows: Vec<LedgerValues<'a, Self>>);

    /// Which of the statement's `rows` rows were new, from its answer: `None` when all were (the common
    /// case, told without reading an id), else the ids of those that were.
    fn inserted(answer: &[Self::Row], rows: usize) -> Result<Option<HashSet<String>>, sqlx::Error>;
}

/// One ledger row's values as stored, in the order of the ledger's columns: strings capped, counts as
/// `BIGINT`, the instant truncated to microseconds.
pub(crate) struct LedgerValues<'a, DB: Dialect> {
    pub(super) id: &'a str,
    pub(super) client_request_id: Option<&'a str>,
    pub(super) tenant: &'a str,
    pub(super) key_id: Option<&'a str>,
    pub(super) model: &'a str,
    pub(super) provider: &'a str,
    pub(super) vendor_model: &'a str,
    pub(super) upstream_key: Option<&'a str>,
    /// Input, cache reads, 5-minute and 1-hour cache writes, output, reasoning.
    pub(super) tokens: [i64; 6],
    pub(super) usage_source: &'static str,
    pub(super) cost_micros: Option<i64>,
    pub(super) price_source: &'static str,
    pub(super) price_date: Option<DB::Day>,
    pub(super) latency_ms: i64,
    pub(super) status: i32,
    pub(super) attempts: i32,
    pub(super) attempt_log: String,
    pub(super) prompt_name: Option<&'a str>,
    pub(super) prompt_version: Option<i32>,
    pub(super) created_at: DB::Time,
}

impl<'a, DB: Dialect> LedgerValues<'a, DB> {
    pub(crate) fn of(r: &'a UsageRow) -> Self {
        let u = &r.usage;
        Self {
            id: cap(&r.id, MAX_ID_BYTES),
            client_request_id: capped(&r.client_request_id, MAX_ID_BYTES),
            tenant: cap(&r.tenant, MAX_TENANT_BYTES),
            key_id: capped(&r.key_id, MAX_NAME_BYTES),
            model: cap(&r.model, MAX_MODEL_BYTES),
            provider: cap(&r.provider, MAX_NAME_BYTES),
            vendor_model: cap(&r.vendor_model, MAX_MODEL_BYTES),
            upstream_key: capped(&r.upstream_key, MAX_NAME_BYTES),
            tokens: [
                u.input,
                u.cache_read,
                u.cache_write_5m,
                u.cache_write_1h,
                u.output,
                u.reasoning,
            ]
            .map(to_i64),
            usage_source: r.usage_source.as_str(),
            cost_micros: r.cost_micros,
            price_source: r.price_source.as_str(),
            price_date: r.price_date.map(DB::day),
            latency_ms: to_i64(r.latency_ms),
            status: i32::from(r.status),
            attempts: i32::try_from(r.attempts).unwrap_or(i32::MAX),
            attempt_log: attempt_log_json(&r.attempt_log),
            prompt_name: capped(&r.prompt_name, MAX_NAME_BYTES),
            prompt_version: r.prompt_version.map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
            created_at: DB::time(r.created_at.trunc_subsecs(6)),
        }
    }
}

impl LedgerInsert for Sqlite {
    const FIXED_TEXT: bool = false;
    const INSERT_HEAD: &'static str = "INSERT INTO usage_ledger (";
    const INSERT_TAIL: &'static str = " ON CONFLICT (id) DO NOTHING RETURNING id";

    fn inserted(answer: &[Self::Row], rows: usize) -> Result<Option<HashSet<String>>, sqlx::Error> {
        // A row per id inserted; the ids are unique in a statement.
        if answer.len() == rows {
            return Ok(None);
        }
        answer
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    fn push_rows<'a>(query: &mut Statement<'a, Self>, rows: Vec<LedgerValues<'a, Self>>) {
        query.values(rows, |b, v| {
            let [input, cache_read, cache_write_5m, cache_write_1h, output, reasoning] = v.tokens;
            b.bind(v.id)
                .bind(v.client_request_id)
                .bind(v.tenant)
                .bind(v.key_id)
                .bind(v.model)
                .bind(v.provider)
                .bind(v.vendor_model)
                .bind(v.upstream_key)
                .bind(input)
                .bind(cache_read)
                .bind(cache_write_5m)
                .bind(cache_write_1h)
                .bind(output)
                .bind(reasoning)
                .bind(v.usage_source)
                .bind(v.cost_micros)
                .bind(v.price_source)
                .bind(v.price_date)
                .bind(v.latency_ms)
                .bind(v.status)
                .bind(v.attempts)
                .bind(v.attempt_log)
                .bind(v.prompt_name)
                .bind(v.prompt_version)
                .bind(v.created_at);
        });
    }
}

impl LedgerInsert for Postgres {
    const FIXED_TEXT: bool = true;
    // One answer row, the count of rows inserted and their ids only when some were not: a row per id
    // cost sqlx 2.2k instructions each to receive and decode (callgrind), for a number the count gives.
    // `$1` is the ids' array.
    const INSERT_HEAD: &'static str = "WITH inserted AS (INSERT INTO usage_ledger (";
    const INSERT_TAIL: &'static str = " ON CONFLICT (id) DO NOTHING RETURNING id) \
        SELECT count(*), CASE WHEN count(*) < cardinality($1::text[]) THEN array_agg(id) END FROM inserted";

    fn inserted(answer: &[Self::Row], rows: usize) -> Result<Option<HashSet<String>>, sqlx::Error> {
        let Some(row) = answer.first() else {
            return Err(sqlx::Error::RowNotFound);
        };
        let count: i64 = row.try_get(0)?;
        if usize::try_from(count).is_ok_and(|count| count == rows) {
            return Ok(None);
        }
        let ids: Option<Vec<String>> = row.try_get(1)?;
        Ok(Some(ids.unwrap_or_default().into_iter().collect()))
    }

    fn push_rows<'a>(query: &mut Statement<'a, Self>, rows: Vec<LedgerValues<'a, Self>>) {
        let n = rows.len();
        let mut c = Columns::<'a>::with_capacity(n);
        for v in rows {
            c.id.push(v.id);
            c.client_request_id.push(v.client_request_id);
            c.tenant.push(v.tenant);
            c.key_id.push(v.key_id);
            c.model.push(v.model);
            c.provider.push(v.provider);
            c.vendor_model.push(v.vendor_model);
            c.upstream_key.push(v.upstream_key);
            for (column, count) in c.tokens.iter_mut().zip(v.tokens) {
                column.push(count);
            }
            c.usage_source.push(v.usage_source);
            c.cost_micros.push(v.cost_micros);
            c.price_source.push(v.price_source);
            c.price_date.push(v.price_date);
            c.latency_ms.push(v.latency_ms);
            c.status.push(v.status);
            c.attempts.push(v.attempts);
            c.attempt_log.push(v.attempt_log);
            c.prompt_name.push(v.prompt_name);
            c.prompt_version.push(v.prompt_version);
            c.created_at.push(v.created_at);
        }
        let [input, cache_read, cache_write_5m, cache_write_1h, output, reasoning] = c.tokens;
        query.push("SELECT * FROM UNNEST(");
        query
            .bind(c.id)
            .push("::text[], ")
            .bind(c.client_request_id)
            .push("::text[], ")
            .bind(c.tenant)
            .push("::text[], ")
            .bind(c.key_id)
            .push("::text[], ")
            .bind(c.model)
            .push("::text[], ")
            .bind(c.provider)
            .push("::text[], ")
            .bind(c.vendor_model)
            .push("::text[], ")
            .bind(c.upstream_key)
            .push("::text[], ");
        for counts in [input, cache_read, cache_write_5m, cache_write_1h, output, reasoning] {
            query.bind(counts).push("::int8[], ");
        }
        query
            .bind(c.usage_source)
            .push("::text[], ")
            .bind(c.cost_micros)
            .push("::int8[], ")
            .bind(c.price_source)
            .push("::text[], ")
            .bind(c.price_date)
            .push("::date[], ")
            .bind(c.latency_ms)
            .push("::int8[], ")
            .bind(c.status)
            .push("::int4[], ")
            .bind(c.attempts)
            .push("::int4[], ")
            .bind(c.attempt_log)
            .push("::text[], ")
            .bind(c.prompt_name)
            .push("::text[], ")
            .bind(c.prompt_version)
            .push("::int4[], ")
            .bind(c.created_at)
            .push("::timestamptz[])");
    }
}

/// A batch's ledger values column by column, for Postgres' arrays.
struct Columns<'a> {
    id: Vec<&'a str>,
    client_request_id: Vec<Option<&'a str>>,
    tenant: Vec<&'a str>,
    key_id: Vec<Option<&'a str>>,
    model: Vec<&'a str>,
    provider: Vec<&'a str>,
    vendor_model: Vec<&'a str>,
    upstream_key: Vec<Option<&'a str>>,
    tokens: [Vec<i64>; 6],
    usage_source: Vec<&'static str>,
    cost_micros: Vec<Option<i64>>,
    price_source: Vec<&'static str>,
    price_date: Vec<Option<chrono::NaiveDate>>,
    latency_ms: Vec<i64>,
    status: Vec<i32>,
    attempts: Vec<i32>,
    attempt_log: Vec<String>,
    prompt_name: Vec<Option<&'a str>>,
    prompt_version: Vec<Option<i32>>,
    created_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Columns<'_> {
    fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            client_request_id: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            key_id: Vec::with_capacity(n),
            model: Vec::with_capacity(n),
            provider: Vec::with_capacity(n),
            vendor_model: Vec::with_capacity(n),
            upstream_key: Vec::with_capacity(n),
            tokens: std::array::from_fn(|_| Vec::with_capacity(n)),
            usage_source: Vec::with_capacity(n),
            cost_micros: Vec::with_capacity(n),
            price_source: Vec::with_capacity(n),
            price_date: Vec::with_capacity(n),
            latency_ms: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            attempt_log: Vec::with_capacity(n),
            prompt_name: Vec::with_capacity(n),
            prompt_version: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
        }
    }
}
