-- Request logs, opt-in per tenant: prompts and answers kept with redaction (or only their hash and
-- length), for a retention in days. A tenant without a settings row logs nothing.
CREATE TABLE request_log_settings (
    tenant         TEXT NOT NULL PRIMARY KEY,
    -- 'off': nothing kept; 'redacted': texts with the configured patterns replaced; 'hashed': SHA-256 and
    -- length only.
    mode           TEXT NOT NULL CHECK (mode IN ('off', 'redacted', 'hashed')),
    retention_days INTEGER NOT NULL CHECK (retention_days > 0),
    updated_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE request_logs (
    -- The ledger row's id: a log and its ledger row share it.
    id              TEXT NOT NULL PRIMARY KEY,
    tenant          TEXT NOT NULL,
    model           TEXT NOT NULL,
    status          INTEGER NOT NULL,
    mode            TEXT NOT NULL CHECK (mode IN ('redacted', 'hashed')),
    -- NULL in 'hashed' mode.
    request         TEXT,
    response        TEXT,
    -- Of the texts before redaction, hex.
    request_sha256  TEXT NOT NULL,
    request_bytes   BIGINT NOT NULL,
    response_sha256 TEXT NOT NULL,
    response_bytes  BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX request_logs_tenant_created ON request_logs (tenant, created_at);
