//! Tenants, virtual keys, the usage ledger and spend queries, on Postgres or SQLite.
//!
//! - [`Store`]: one handle over either database, opened from a URL (`sqlite://data/sluice.db` or
//!   `postgres://...`), migrated by [`Store::migrate`] from the embedded `migrations/{postgres,sqlite}`.
//!   Tenants, virtual keys (generated here, stored as SHA-256, shown once), the append-only usage ledger
//!   with per-day rollups maintained in the same transaction, and spend queries over the rollups.
//! - [`UsageWriter`]: the request path's way in: a bounded queue, batched inserts by one task, a local
//!   spool while the database is unreachable, replayed when it is back. Its module docs state the policy.
//! - [`Prices`]: list prices from `config/prices.toml` and per-deployment overrides; costs in integer
//!   micro-dollars.
//!
//! # Conventions
//! - Money is `i64` micro-dollars everywhere ([`MICROS_PER_USD`]); floats appear only at the edge
//!   ([`usd_to_micros`], [`SpendRow::cost_usd`]) and are never summed.
//! - Times are UTC. A row's day (for rollups, spend queries and budget periods) is its UTC date.
//! - Every value reaches SQL as a bound parameter; dynamic parts of queries (grouping, optional filters)
//!   are literals chosen by a `match` and assembled with `QueryBuilder`.
//! - The ledger is idempotent by request id: inserting the same row twice counts it once.

mod error;
mod keys;
mod model;
mod prices;
mod spool;
mod store;
mod writer;

pub use error::{Failure, StoreError};
pub use keys::{KEY_PREFIX, KeyHash, looks_like_key};
pub use model::{
    ActiveKey, BudgetPeriod, CreatedKey, GroupBy, InsertOutcome, KeyInfo, KeyLookup, KeyState, MICROS_PER_USD, NO_KEY,
    NewTenant, SpendFilter, SpendRow, Tenant, UsageRow, format_usd, micros_to_usd, usd_to_micros,
};
pub use prices::{LongContext, Price, PriceError, Prices, PricesError};
pub use store::{BackendKind, Store, StoreOptions};
pub use writer::{Full, UsageWriter, WriterConfig, WriterStats};
