-- Managed API keys. Only an HMAC of each key is kept; `hint` is its first characters, to tell
-- keys apart in listings. Revoked keys stay (revoked_at set) so a revoked key says so.
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('inference', 'admin')),
    models TEXT,
    rpm INTEGER CHECK (rpm IS NULL OR rpm > 0),
    tpm INTEGER CHECK (tpm IS NULL OR tpm > 0),
    max_concurrent INTEGER CHECK (max_concurrent IS NULL OR max_concurrent > 0),
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    rotated_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name)
    WHERE revoked_at IS NULL;

-- Bumped by every change to api_keys, whoever makes it (gateway, CLI, sqlite3 shell), so a
-- running gateway can tell in one read whether its in-memory copy is stale.
CREATE TABLE IF NOT EXISTS api_keys_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT OR IGNORE INTO api_keys_generation (id, n) VALUES (1, 0);

CREATE TRIGGER IF NOT EXISTS api_keys_ins AFTER INSERT ON api_keys
BEGIN UPDATE api_keys_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_keys_upd AFTER UPDATE ON api_keys
BEGIN UPDATE api_keys_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_keys_del AFTER DELETE ON api_keys
BEGIN UPDATE api_keys_generation SET n = n + 1; END;
