//! Tenants, virtual keys, the usage ledger and spend queries, on Postgres or SQLite.
//!
//! - [`Store`]: one handle over either database, opened from a URL (`sqlite://data/sluice.db` or
//!   `postgres://...`), migrated by [`Store::migrate`] from the embedded `migrations/{postgres,sqlite}`.
//!   Tenants, virtual keys (generated here, stored as SHA-256, shown once), the append-only usage ledger
//!   with per-day rollups maintained in the same transaction, spend queries over the rollups, and the
//!   ledger's rows for finance ([`Store::export`]). One implementation over both databases.
//! - [`UsageRow`]: one request in the ledger: a gateway-made id (the idempotency key) and the client's
//!   request id beside it, usage by billing category ([`TokenUsage`]) and its [`UsageSource`], the cost
//!   and the [`PriceSource`] it came from, and each upstream attempt a vendor may bill ([`AttemptUsage`]).
//! - Access: grants of a [`Service`] to a tenant, [`Subscription`] requests and their decisions (an
//!   approval grants in the same transaction), a version bumped by each change for replicas to poll
//!   ([`Store::access_version`]), and the [`AuditEntry`] log of admin actions.
//! - [`RequestLog`]: a tenant's opt-in log of prompts and answers ([`LogSettings`]), redacted or hashed.
//! - [`FiredAlert`]: budget alerts already sent, one per (tenant, period, threshold) ([`Store::record_alert`]).
//! - [`UsageWriter`]: the request path's way in: a bounded queue, batched inserts by one task, a local
//!   spool while the database is unreachable, replayed when it is back. Its module docs state the policy.
//! - [`Prices`]: list prices by billing category from `config/prices.toml` and per-deployment overrides;
//!   costs in integer micro-dollars ([`Price::cost`]), the worst case for admission
//!   ([`Price::worst_case_micros`]), and which price applied ([`Charge`]).
//!
//! # Conventions
//! - Money is `i64` micro-dollars everywhere ([`MICROS_PER_USD`]); floats appear only at the edge
//!   ([`usd_to_micros`], [`SpendRow::cost_usd`]) and are never summed; [`format_usd`] writes the exact
//!   decimal.
//! - Times are UTC. A row's day (for rollups, spend queries and budget periods) is its UTC date.
//! - Every value reaches SQL as a bound parameter; dynamic parts of queries (grouping, optional filters)
//!   are literals chosen by a `match`.
//! - The ledger is idempotent by [`UsageRow::id`]: inserting the same row twice counts it once.
//! - Strings a client chose are capped when written ([`cap`]); names are checked when created.

mod alerts;
mod catalog;
mod error;
mod keys;
mod ledger;
mod model;
mod prices;
mod request_log;
mod spool;
mod store;
mod writer;

pub use alerts::{FiredAlert, period_key};
pub use catalog::{
    AuditEntry, AuditQuery, Grant, MAX_REASON_CHARS, MAX_SERVICE_BYTES, Service, ServiceKind, Subscription,
    SubscriptionStatus,
};
pub use error::{Failure, StoreError};
pub use keys::{KEY_PREFIX, KeyHash, looks_like_key};
pub use ledger::{
    AttemptOutcome, AttemptUsage, MAX_ID_BYTES, MAX_MODEL_BYTES, MAX_NAME_BYTES, MAX_TENANT_BYTES, PriceSource,
    UsageRow, cap,
};
pub use model::{
    ActiveKey, BudgetPeriod, CreatedKey, DEFAULT_TENANT, ExportFilter, GroupBy, InsertOutcome, KeyInfo, KeyLookup,
    KeyState, MAX_NAME_CHARS, MICROS_PER_USD, NO_KEY, NewTenant, SpendFilter, SpendRow, Tenant, TenantChange,
    format_usd, micros_to_usd, usd_to_micros,
};
pub use prices::{AppliedPrice, Charge, LongContext, Price, PriceError, Prices, PricesError};
pub use request_log::{DEFAULT_RETENTION_DAYS, LogMode, LogSettings, RequestLog};
pub use sluice_api::{TokenUsage, UsageSource};
pub use store::{BackendKind, Export, Store, StoreOptions};
pub use writer::{Full, UsageWriter, WriterConfig, WriterStats};
