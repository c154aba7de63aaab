"""Runtime changes to the upstream list, kept in SQLite (`upstreams` table, migration 012).

A row overrides the configured upstream of its name or adds one; at start the configured
list with the rows applied is the gateway's list. Tokens are stored as given (they are sent,
so they cannot be digests); the database file is readable by its owner alone.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from lmgate.store.db import Database
from lmgate.upstreams.config import UpstreamConfig

ACTIVE, DRAINING, REMOVED = "active", "draining", "removed"


def _stored(config: UpstreamConfig) -> bytes:
    table: dict[str, Any] = config.model_dump(exclude={"token"})
    if config.token is not None:
        table["token"] = config.token.get_secret_value()
    return orjson.dumps(table)


class UpstreamRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def rows(self) -> list[tuple[UpstreamConfig, str]]:
        found = self.db.query("SELECT config, state FROM upstreams ORDER BY updated_at, name")
        return [(UpstreamConfig.model_validate(orjson.loads(r[0])), str(r[1])) for r in found]

    def save(self, config: UpstreamConfig, state: str) -> None:
        self.db.execute(
            "INSERT INTO upstreams (name, config, state, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET config = excluded.config, state = excluded.state, "
            "updated_at = excluded.updated_at",
            (config.name, _stored(config).decode(), state, time.time()),
        )

    def apply(self, configured: list[UpstreamConfig]) -> list[tuple[UpstreamConfig, bool]]:
        """The configured list with the stored changes: (config, draining), primary first.
        The primary (the first configured) is never removed."""
        out: dict[str, tuple[UpstreamConfig, bool]] = {c.name: (c, False) for c in configured}
        primary = configured[0].name
        for config, state in self.rows():
            if state == REMOVED:
                if config.name != primary:
                    out.pop(config.name, None)
                continue
            out[config.name] = (config, state == DRAINING)
        return list(out.values())
