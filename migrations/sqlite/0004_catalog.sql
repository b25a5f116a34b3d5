-- The catalog's access (sluice-store), the SQLite twin of migrations/postgres: grants of a service to a
-- tenant, tenants' subscription requests and the admins' decisions, a version bumped by every change to
-- either (replicas poll it), and the audit log of every admin action.
--
-- A service is 'model:NAME' or 'prompt:NAME'. The tenants' allow-lists (tenants.models, tenants.prompts)
-- keep restricting what a tenant may call among open services; every name on them becomes a grant here,
-- so a service later made 'approval' or 'private' stays open to the tenants that listed it.

CREATE TABLE grants (
    tenant_id   INTEGER NOT NULL REFERENCES tenants (id),
    service     TEXT NOT NULL,
    granted_at  TEXT NOT NULL,
    -- The admin key's id, 'subscription:<id>' for an approval, 'migration' for an allow-list entry.
    granted_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, service)
) WITHOUT ROWID;

INSERT INTO grants (tenant_id, service, granted_at, granted_by)
SELECT t.id, 'model:' || m.value, strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000Z', 'migration'
FROM tenants t, json_each(t.models) AS m
WHERE t.models IS NOT NULL
UNION
SELECT t.id, 'prompt:' || p.value, strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000Z', 'migration'
FROM tenants t, json_each(t.prompts) AS p
WHERE t.prompts IS NOT NULL;

CREATE TABLE subscriptions (
    -- A UUIDv7.
    id          TEXT PRIMARY KEY,
    tenant_id   INTEGER NOT NULL REFERENCES tenants (id),
    service     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    created_at  TEXT NOT NULL,
    decided_at  TEXT,
    decided_by  TEXT
);
-- At most one pending request per tenant and service.
CREATE UNIQUE INDEX subscriptions_pending ON subscriptions (tenant_id, service) WHERE status = 'pending';
CREATE INDEX subscriptions_created ON subscriptions (created_at);

-- One row, bumped with every change to grants or subscriptions: a replica reads it often and reloads
-- access only when it moved.
CREATE TABLE access_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO access_version (id, version) VALUES (1, 1);

-- Append-only: who did what, when.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      TEXT NOT NULL,
    -- The admin key's id.
    actor   TEXT NOT NULL,
    -- tenant.create, tenant.update, key.create, key.revoke, grant.create, grant.revoke,
    -- subscription.approve, subscription.reject.
    action  TEXT NOT NULL,
    -- What it acted on: a tenant name, a key id, 'tenant/service', a subscription id.
    target  TEXT NOT NULL,
    -- JSON object with the details (never a secret).
    detail  TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
