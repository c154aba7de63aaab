-- Upstreams added, drained or removed at runtime (`/admin/upstreams`). A row overrides the
-- configured upstream of the same name, or adds one: `config` is its table as JSON (its
-- token included: it must be sent, so it cannot be a digest), `state` active, draining or
-- removed.
CREATE TABLE IF NOT EXISTS upstreams (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
