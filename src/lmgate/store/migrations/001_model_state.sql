-- The active model and its default inference parameters (one row), and stored load configs.
CREATE TABLE IF NOT EXISTS active_model (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    model_key TEXT,
    default_inference TEXT NOT NULL DEFAULT '{}',
    activated_at REAL
);
INSERT OR IGNORE INTO active_model (id, model_key, default_inference, activated_at)
VALUES (1, NULL, '{}', NULL);

CREATE TABLE IF NOT EXISTS model_profiles (
    model_key TEXT PRIMARY KEY,
    load_config TEXT,
    default_inference TEXT,
    updated_at REAL NOT NULL
);
