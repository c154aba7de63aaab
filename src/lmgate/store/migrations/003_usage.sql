-- Token usage per minute, key, model and endpoint. One row per combination that saw traffic:
-- compact whatever the request rate, and fine enough for `since`/`until` filters.
-- Key and model are '' when unknown (auth off; a request without a model).
CREATE TABLE IF NOT EXISTS usage_minutes (
    minute INTEGER NOT NULL,         -- unix seconds at the start of the minute (UTC)
    key_name TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    unreported INTEGER NOT NULL DEFAULT 0,  -- answers that carried no usage
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, key_name, model, endpoint)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_minutes_key ON usage_minutes (key_name, minute);
CREATE INDEX IF NOT EXISTS usage_minutes_model ON usage_minutes (model, minute);
