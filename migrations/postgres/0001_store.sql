-- Tenants, virtual keys and the usage ledger (sluice-store).
-- Money is integer micro-dollars (1 USD = 1_000_000); tokens are BIGINT; times are UTC.

CREATE TABLE tenants (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    rpm           BIGINT CHECK (rpm >= 0),
    tpm           BIGINT CHECK (tpm >= 0),
    budget_micros BIGINT CHECK (budget_micros >= 0),
    budget_period TEXT NOT NULL DEFAULT 'month' CHECK (budget_period IN ('day', 'month')),
    -- JSON arrays of names; NULL means "all".
    models        TEXT,
    prompts       TEXT,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE virtual_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   BIGINT NOT NULL REFERENCES tenants (id),
    name        TEXT,
    -- SHA-256 of the whole key; the key itself is never stored.
    key_hash    BYTEA NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX virtual_keys_tenant ON virtual_keys (tenant_id);

-- Append-only: one row per request, written in batches off the request path.
-- No foreign keys: a row records what happened and must never be refused because of later changes.
CREATE TABLE usage_ledger (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id        TEXT NOT NULL UNIQUE,
    tenant            TEXT NOT NULL,
    key_id            TEXT,
    model             TEXT NOT NULL,
    provider          TEXT NOT NULL,
    vendor_model      TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens     BIGINT NOT NULL,
    estimated         BOOLEAN NOT NULL,
    -- NULL when no price was known for the vendor model.
    cost_micros       BIGINT,
    latency_ms        BIGINT NOT NULL,
    status            INTEGER NOT NULL,
    attempts          INTEGER NOT NULL,
    prompt_name       TEXT,
    prompt_version    INTEGER,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX usage_ledger_tenant_created ON usage_ledger (tenant, created_at);

-- Per-day rollups kept in the same transaction as the ledger insert; spend queries read these.
-- key_id is '' for requests made without a virtual key (NULLs would defeat the primary key).
CREATE TABLE usage_daily (
    day               DATE NOT NULL,
    tenant            TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    model             TEXT NOT NULL,
    requests          BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens     BIGINT NOT NULL,
    cost_micros       BIGINT NOT NULL,
    PRIMARY KEY (day, tenant, key_id, model)
);
CREATE INDEX usage_daily_tenant_day ON usage_daily (tenant, day);
