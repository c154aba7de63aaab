-- A model's scheduling policy in its profile: answers at once (`slots`, NULL = what the
-- upstream reports), idle seconds before lmgate unloads it (`ttl`, 0 = never, NULL = the
-- LMGATE_MODEL_TTL default) and whether it is never evicted nor unloaded for idleness.
ALTER TABLE model_profiles ADD COLUMN slots INTEGER CHECK (slots IS NULL OR slots > 0);
ALTER TABLE model_profiles ADD COLUMN ttl REAL CHECK (ttl IS NULL OR ttl >= 0);
ALTER TABLE model_profiles ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1));
