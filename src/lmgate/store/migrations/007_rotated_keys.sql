-- The digests a key had before it was rotated, so an old secret is answered "rotated" rather
-- than "not valid". Only digests, as for live keys.
CREATE TABLE IF NOT EXISTS api_keys_retired (
    digest BLOB PRIMARY KEY,
    key_id TEXT NOT NULL,
    retired_at REAL NOT NULL
);
