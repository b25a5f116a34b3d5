-- Budget alerts already sent (sluice alerts), the SQLite twin of migrations/postgres: one row per tenant,
-- budget period and threshold, so that each threshold fires once per period whichever replica sees it
-- first, across restarts. A replica sends an alert only when its insert made the row.
CREATE TABLE alerts_fired (
    tenant       TEXT NOT NULL,
    -- The budget period: 'YYYY-MM' for a monthly budget, 'YYYY-MM-DD' for a daily one.
    period       TEXT NOT NULL,
    -- The threshold in basis points of the budget (8000 = 80%).
    threshold_bp INTEGER NOT NULL,
    -- The tenant's spend, in micro-dollars, when it was seen past the threshold.
    spend_micros INTEGER NOT NULL,
    fired_at     TEXT NOT NULL,
    PRIMARY KEY (tenant, period, threshold_bp)
) WITHOUT ROWID;
