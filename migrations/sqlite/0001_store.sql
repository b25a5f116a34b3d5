-- Tenants, virtual keys and the usage ledger (sluice-store), the SQLite twin of migrations/postgres.
-- Money is integer micro-dollars (1 USD = 1_000_000). Times are UTC text in one fixed-width format,
-- 'YYYY-MM-DDTHH:MM:SS.ffffffZ', so text order is time order; days are 'YYYY-MM-DD'.

CREATE TABLE tenants (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    rpm           INTEGER CHECK (rpm >= 0),
    tpm           INTEGER CHECK (tpm >= 0),
    budget_micros INTEGER CHECK (budget_micros >= 0),
    budget_period TEXT NOT NULL DEFAULT 'month' CHECK (budget_period IN ('day', 'month')),
    -- JSON arrays of names; NULL means "all".
    models        TEXT,
    prompts       TEXT,
    created_at    TEXT NOT NULL
);

CREATE TABLE virtual_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   INTEGER NOT NULL REFERENCES tenants (id),
    name        TEXT,
    -- SHA-256 of the whole key; the key itself is never stored.
    key_hash    BLOB NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
CREATE INDEX virtual_keys_tenant ON virtual_keys (tenant_id);

-- Append-only: one row per request, written in batches off the request path.
-- No foreign keys: a row records what happened and must never be refused because of later changes.
CREATE TABLE usage_ledger (
    id                INTEGER PRIMARY KEY,
    request_id        TEXT NOT NULL UNIQUE,
    tenant            TEXT NOT NULL,
    key_id            TEXT,
    model             TEXT NOT NULL,
    provider          TEXT NOT NULL,
    vendor_model      TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    estimated         INTEGER NOT NULL,
    -- NULL when no price was known for the vendor model.
    cost_micros       INTEGER,
    latency_ms        INTEGER NOT NULL,
    status            INTEGER NOT NULL,
    attempts          INTEGER NOT NULL,
    prompt_name       TEXT,
    prompt_version    INTEGER,
    created_at        TEXT NOT NULL
);
CREATE INDEX usage_ledger_tenant_created ON usage_ledger (tenant, created_at);

-- Per-day rollups kept in the same transaction as the ledger insert; spend queries read these.
-- key_id is '' for requests made without a virtual key.
CREATE TABLE usage_daily (
    day               TEXT NOT NULL,
    tenant            TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    model             TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_micros       INTEGER NOT NULL,
    PRIMARY KEY (day, tenant, key_id, model)
) WITHOUT ROWID;
CREATE INDEX usage_daily_tenant_day ON usage_daily (tenant, day);
