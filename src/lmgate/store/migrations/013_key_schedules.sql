-- When a key may be used and how many tokens a day: allowed hours (`HH:MM-HH:MM`), days
-- (`mon-fri`), an IANA time zone (NULL: the gateway's local zone), and a daily token budget.
-- The day's count lives beside, per key and local day, shared by every worker.
ALTER TABLE api_keys ADD COLUMN hours TEXT;
ALTER TABLE api_keys ADD COLUMN days TEXT;
ALTER TABLE api_keys ADD COLUMN tz TEXT;
ALTER TABLE api_keys ADD COLUMN daily_tokens INTEGER CHECK (daily_tokens IS NULL OR daily_tokens > 0);
CREATE TABLE IF NOT EXISTS key_daily_tokens (
    key_id TEXT NOT NULL,
    day TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
) WITHOUT ROWID;
