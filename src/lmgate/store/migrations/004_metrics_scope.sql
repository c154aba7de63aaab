-- The metrics scope (a Prometheus scraper's key). SQLite cannot change a CHECK in place, so the
-- table is rebuilt; dropping the old table drops its triggers, which are made again below.
CREATE TABLE api_keys_new (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('inference', 'metrics', 'admin')),
    models TEXT,
    rpm INTEGER CHECK (rpm IS NULL OR rpm > 0),
    tpm INTEGER CHECK (tpm IS NULL OR tpm > 0),
    max_concurrent INTEGER CHECK (max_concurrent IS NULL OR max_concurrent > 0),
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    rotated_at REAL
);
INSERT INTO api_keys_new SELECT
    id, name, digest, hint, scope, models, rpm, tpm, max_concurrent,
    created_at, expires_at, revoked_at, rotated_at
FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name)
    WHERE revoked_at IS NULL;

CREATE TRIGGER IF NOT EXISTS api_keys_ins AFTER INSERT ON api_keys
BEGIN UPDATE api_keys_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_keys_upd AFTER UPDATE ON api_keys
BEGIN UPDATE api_keys_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_keys_del AFTER DELETE ON api_keys
BEGIN UPDATE api_keys_generation SET n = n + 1; END;
UPDATE api_keys_generation SET n = n + 1;
