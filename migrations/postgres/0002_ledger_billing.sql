-- The ledger you can invoice from (sluice-store): a gateway-made id per row, usage by billing category,
-- where the price came from, and the upstream attempts a vendor may bill.
--
-- Rows already in the ledger are copied, nothing dropped: the old request id (the client's x-request-id,
-- or the one the gateway made) becomes both the row's id and its client_request_id (capped at 128
-- characters); prompt tokens become uncached input plus cache reads (cached_tokens); completion tokens
-- become output; usage_source is 'estimated' where the row said so, 'none' where it had no tokens,
-- 'vendor' otherwise; price_source is 'list' where a cost was recorded (the old rows did not say whether a
-- deployment's price applied, and carry no price_date) and 'none' where it was NULL. The per-day rollups
-- are recomputed from the migrated ledger, so that they agree with it row for row.

CREATE TABLE usage_ledger_v2 (
    -- The gateway's id (a UUIDv7): the idempotency key of batches and spool replays.
    id                    TEXT NOT NULL,
    -- The client's x-request-id, capped at 128 bytes; not unique.
    client_request_id     TEXT,
    tenant                TEXT NOT NULL,
    key_id                TEXT,
    model                 TEXT NOT NULL,
    provider              TEXT NOT NULL,
    vendor_model          TEXT NOT NULL,
    upstream_key          TEXT,
    -- Usage by billing category, summed over the attempts in attempt_log; reasoning is inside output.
    input_tokens          BIGINT NOT NULL,
    cache_read_tokens     BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    reasoning_tokens      BIGINT NOT NULL,
    usage_source          TEXT NOT NULL CHECK (usage_source IN ('vendor', 'estimated', 'none')),
    -- NULL when no price was known (price_source 'none').
    cost_micros           BIGINT,
    price_source          TEXT NOT NULL CHECK (price_source IN ('override', 'list', 'free', 'none')),
    -- The prices.toml date, for 'list'.
    price_date            DATE,
    latency_ms            BIGINT NOT NULL,
    status                INTEGER NOT NULL,
    attempts              INTEGER NOT NULL,
    -- JSON array: one {provider, vendor_model, upstream_key, outcome, usage, source} per billable attempt.
    attempt_log           TEXT NOT NULL,
    prompt_name           TEXT,
    prompt_version        INTEGER,
    created_at            TIMESTAMPTZ NOT NULL
);

INSERT INTO usage_ledger_v2 (
    id, client_request_id, tenant, key_id, model, provider, vendor_model, upstream_key,
    input_tokens, cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens,
    reasoning_tokens, usage_source, cost_micros, price_source, price_date, latency_ms, status, attempts,
    attempt_log, prompt_name, prompt_version, created_at
)
SELECT
    request_id, substr(request_id, 1, 128), tenant, key_id, model, provider, vendor_model, NULL,
    prompt_tokens - LEAST(cached_tokens, prompt_tokens), LEAST(cached_tokens, prompt_tokens), 0, 0,
    completion_tokens, 0,
    CASE WHEN estimated THEN 'estimated'
         WHEN prompt_tokens = 0 AND completion_tokens = 0 THEN 'none'
         ELSE 'vendor' END,
    cost_micros,
    CASE WHEN cost_micros IS NULL THEN 'none' ELSE 'list' END,
    NULL, latency_ms, status, attempts, '[]', prompt_name, prompt_version, created_at
FROM usage_ledger
ORDER BY id;

DROP TABLE usage_ledger;
ALTER TABLE usage_ledger_v2 RENAME TO usage_ledger;
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_pkey PRIMARY KEY (id);
CREATE INDEX usage_ledger_tenant_created ON usage_ledger (tenant, created_at);
-- Exports page through a time range in (created_at, id) order.
CREATE INDEX usage_ledger_created ON usage_ledger (created_at, id);

CREATE TABLE usage_daily_v2 (
    day                   DATE NOT NULL,
    tenant                TEXT NOT NULL,
    key_id                TEXT NOT NULL,
    model                 TEXT NOT NULL,
    requests              BIGINT NOT NULL,
    input_tokens          BIGINT NOT NULL,
    cache_read_tokens     BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    reasoning_tokens      BIGINT NOT NULL,
    cost_micros           BIGINT NOT NULL
);

INSERT INTO usage_daily_v2
SELECT (created_at AT TIME ZONE 'UTC')::DATE, tenant, COALESCE(key_id, ''), model, COUNT(*),
    SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_5m_tokens), SUM(cache_write_1h_tokens),
    SUM(output_tokens), SUM(reasoning_tokens), COALESCE(SUM(cost_micros), 0)
FROM usage_ledger
GROUP BY 1, 2, 3, 4;

DROP TABLE usage_daily;
ALTER TABLE usage_daily_v2 RENAME TO usage_daily;
ALTER TABLE usage_daily ADD CONSTRAINT usage_daily_pkey PRIMARY KEY (day, tenant, key_id, model);
CREATE INDEX usage_daily_tenant_day ON usage_daily (tenant, day);
