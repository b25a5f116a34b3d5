//! The per-day rollups' sums of a batch of new ledger rows, which both databases upsert in the insert's
//! transaction (`Db::add_rollups`).

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::queries::to_i64;
use crate::ledger::{MAX_MODEL_BYTES, MAX_NAME_BYTES, MAX_TENANT_BYTES, UsageRow, cap};

/// A usage row's per-day rollup key, and the sums added to it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RollupSums {
    pub(super) requests: i64,
    pub(super) input: i64,
    pub(super) cache_read: i64,
    pub(super) cache_write_5m: i64,
    pub(super) cache_write_1h: i64,
    pub(super) output: i64,
    pub(super) reasoning: i64,
    pub(super) cost_micros: i64,
}

/// Sums the rows that were new to the ledger by (day, tenant, key, model), strings capped as the ledger
/// stores them, in that order: the order the upserts take their row locks in.
pub(super) fn rollups<'a>(
    rows: impl Iterator<Item = &'a &'a UsageRow>,
) -> BTreeMap<(NaiveDate, &'a str, &'a str, &'a str), RollupSums> {
    let mut sums = BTreeMap::new();
    for row in rows {
        let key = (
            row.created_at.date_naive(),
            cap(&row.tenant, MAX_TENANT_BYTES),
            row.key_id.as_deref().map_or("", |k| cap(k, MAX_NAME_BYTES)),
            cap(&row.model, MAX_MODEL_BYTES),
        );
        let entry: &mut RollupSums = sums.entry(key).or_default();
        let u = &row.usage;
        entry.requests += 1;
        for (sum, tokens) in [
            (&mut entry.input, u.input),
            (&mut entry.cache_read, u.cache_read),
            (&mut entry.cache_write_5m, u.cache_write_5m),
            (&mut entry.cache_write_1h, u.cache_write_1h),
            (&mut entry.output, u.output),
            (&mut entry.reasoning, u.reasoning),
        ] {
            *sum = sum.saturating_add(to_i64(tokens));
        }
        entry.cost_micros = entry.cost_micros.saturating_add(row.cost_micros.unwrap_or(0));
    }
    sums
}
