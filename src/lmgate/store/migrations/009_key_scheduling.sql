-- How the scheduler treats a key's requests: its share among waiting requests (`weight`), its
-- class (`priority`, higher first), whether its requests may make lmgate load a model (`loads`:
-- 1 allow, 0 deny, NULL = the default for its scope, so changing that setting changes every key
-- that never chose) and how many loads it may cause per hour (NULL = no cap).
ALTER TABLE api_keys ADD COLUMN weight REAL NOT NULL DEFAULT 1
    CHECK (weight > 0 AND weight <= 1000);
ALTER TABLE api_keys ADD COLUMN priority INTEGER NOT NULL DEFAULT 0
    CHECK (priority BETWEEN -100 AND 100);
ALTER TABLE api_keys ADD COLUMN loads INTEGER CHECK (loads IS NULL OR loads IN (0, 1));
ALTER TABLE api_keys ADD COLUMN max_loads_per_hour INTEGER
    CHECK (max_loads_per_hour IS NULL OR max_loads_per_hour > 0);
