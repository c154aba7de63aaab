"""Runtime changes to the upstream list, kept in SQLite (`upstreams` table, migration 012).

A row overrides the configured upstream of its name or adds one; the configured list with the
rows applied is the gateway's list, at start and, with several workers, whenever a worker
sees the table change (`members.Upstreams.follow`). Tokens are stored as given (they are sent,
so they cannot be digests) in the database file, which is readable by its owner alone (0600,
as are SQLite's `-wal`/`-shm` files beside it); they leave it only in the `Authorization`
header sent to their own upstream, never in a listing, an event or a log. A row that no longer
validates is skipped with a warning naming the upstream and the fields at fault, never their
values (the token among them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import structlog
from pydantic import ValidationError

from lmgate.store.db import Database
from lmgate.upstreams.config import UpstreamConfig

ACTIVE, DRAINING, REMOVED = "active", "draining", "removed"
SELECT = "SELECT name, config, state FROM upstreams ORDER BY updated_at, name"

Query = Callable[[str], Sequence[Sequence[Any]]]  # runs a SELECT on some connection
Raw = tuple[tuple[str, str, str], ...]  # (name, config JSON, state) as stored
Listed = list[tuple[UpstreamConfig, bool]]  # the gateway's list: (config, draining)

log = structlog.get_logger("lmgate.upstreams")


def _stored(config: UpstreamConfig) -> bytes:
    table: dict[str, Any] = config.model_dump(exclude={"token"})
    if config.token is not None:
        table["token"] = config.token.get_secret_value()
    return orjson.dumps(table)


def problems(exc: ValidationError) -> str:
    """What is wrong, by field, without the values given (a token may be among them)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


class UpstreamRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def raw(self, query: Query | None = None) -> Raw:
        """The table as stored, through `query` (another connection) or the database's own."""
        found = query(SELECT) if query is not None else self.db.query(SELECT)
        return tuple((str(r[0]), str(r[1]), str(r[2])) for r in found)

    def rows(self, raw: Raw | None = None) -> list[tuple[UpstreamConfig, str]]:
        out = []
        for name, config, state in self.raw() if raw is None else raw:
            try:
                out.append((UpstreamConfig.model_validate(orjson.loads(config)), state))
            except (ValidationError, orjson.JSONDecodeError) as exc:
                why = problems(exc) if isinstance(exc, ValidationError) else "not JSON"
                log.warning("upstream_row_invalid", upstream=name, error=why)
        return out

    def save(self, config: UpstreamConfig, state: str) -> None:
        self.db.execute(
            "INSERT INTO upstreams (name, config, state, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET config = excluded.config, state = excluded.state, "
            "updated_at = excluded.updated_at",
            (config.name, _stored(config).decode(), state, time.time()),
        )

    def forget(self, name: str) -> None:
        """An upstream added at runtime and removed: its row (and token) go."""
        self.db.execute("DELETE FROM upstreams WHERE name = ?", (name,))

    def apply(self, configured: list[UpstreamConfig], raw: Raw | None = None) -> Listed:
        """The configured list with the stored changes: (config, draining), primary first.
        The primary (the first configured) is never removed."""
        out: dict[str, tuple[UpstreamConfig, bool]] = {c.name: (c, False) for c in configured}
        primary = configured[0].name
        for config, state in self.rows(raw):
            if state == REMOVED:
                if config.name != primary:
                    out.pop(config.name, None)
                continue
            out[config.name] = (config, state == DRAINING)
        return list(out.values())
