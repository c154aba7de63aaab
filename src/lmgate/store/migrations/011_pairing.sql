-- One-time pairing codes: an admin makes one, a device redeems it once for a new key. Only
-- the code's HMAC is kept, as for keys. A row stays after use or expiry as the audit record:
-- who made it, for which device, which address redeemed it, when, and the key it became.
CREATE TABLE IF NOT EXISTS pairing_codes (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    device TEXT NOT NULL,
    key_name TEXT NOT NULL,
    scope TEXT NOT NULL,
    models TEXT,
    rpm INTEGER,
    tpm INTEGER,
    key_expires_at REAL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    redeemed_at REAL,
    redeemed_by TEXT,
    key_id TEXT,
    cancelled_at REAL
);
CREATE INDEX IF NOT EXISTS pairing_codes_key ON pairing_codes (key_id);
