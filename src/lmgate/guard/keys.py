"""The key table the guard consults on every request, held in memory and kept fresh cheaply.

Bootstrap keys (from settings) and managed keys (SQLite) are both looked up by their HMAC, so
one dict lookup identifies a key whatever their number. Comparing digests leaks nothing useful
through timing: nobody can steer a digest's bytes without the server secret.

Freshness without a query per request: `PRAGMA data_version` (a counter in memory that moves
when another connection commits) is read at most every `interval` seconds, and at once when a
presented key is unknown, so a key created by the CLI in another process works on its first
use. Only when it moved is the generation counter read, and only when that moved is the table
reloaded.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import tzinfo
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path

import orjson
import structlog

from lmgate.guard.paths import Scope as KeyScope
from lmgate.key_hours import KeyHours, stored_hours, stored_zone
from lmgate.store.keys import key_digest, scope_may_load

log = structlog.get_logger("lmgate.guard")

# Which key scopes a path's need admits. Anything not listed admits no key: deny by default.
_GRANTS: dict[KeyScope, frozenset[KeyScope]] = {
    KeyScope.SERVICE: frozenset({KeyScope.INFERENCE, KeyScope.METRICS, KeyScope.ADMIN}),
    KeyScope.INFERENCE: frozenset({KeyScope.INFERENCE, KeyScope.ADMIN}),
    KeyScope.METRICS: frozenset({KeyScope.METRICS, KeyScope.ADMIN}),
    KeyScope.ADMIN: frozenset({KeyScope.ADMIN}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's id and name (never the key), its scope and its limits, whether
    it may have the upstream use tools on its behalf (MCP servers, plugins), and how the
    scheduler treats its requests (share, class, whether they may cause model loads)."""

    id: str
    name: str
    scope: KeyScope
    models: tuple[str, ...] = ()  # glob patterns; empty = every model
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    expires_at: float | None = None
    tools: bool = False
    weight: float = 1.0
    priority: int = 0
    may_load: bool = True
    max_loads_per_hour: int | None = None
    hours: KeyHours | None = None  # when it may be used; None: any time
    daily_tokens: int | None = None  # tokens per local day; None: no budget
    zone: tzinfo | None = None  # where its day starts and ends; None: the gateway's zone

    def may(self, needed: KeyScope) -> bool:
        return needed is KeyScope.PUBLIC or self.scope in _GRANTS.get(needed, frozenset())

    def allows_model(self, model: str) -> bool:
        return not self.models or any(fnmatchcase(model, pattern) for pattern in self.models)

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.max_concurrent))


class Problem(StrEnum):
    UNKNOWN = "invalid_api_key"
    REVOKED = "revoked_api_key"
    EXPIRED = "expired_api_key"
    ROTATED = "rotated_api_key"


_SELECT = (
    "SELECT digest, id, name, scope, models, rpm, tpm, max_concurrent, expires_at, revoked_at,"
    " tools, weight, priority, loads, max_loads_per_hour, hours, days, tz, daily_tokens"
    " FROM api_keys"
)


class KeyRegistry:
    def __init__(
        self,
        secret: bytes,
        bootstrap: Iterable[tuple[str, KeyScope, str]],
        db_path: Path | None,
        *,
        interval: float = 0.1,
        loads_default: bool = True,
    ) -> None:
        """`loads_default`: whether inference keys that never chose may cause model loads
        (`LMGATE_KEY_LOADS_DEFAULT`); keys from settings have every other attribute's default."""
        self._secret = secret
        self._loads_default = loads_default
        self._bootstrap = {
            key_digest(secret, token.encode()): Principal(
                f"env:{name}",
                name,
                scope,
                tools=scope is KeyScope.ADMIN,
                may_load=scope_may_load(scope.value, None, loads_default),
            )
            for name, scope, token in bootstrap
        }
        self._managed: dict[bytes, Principal] = {}
        self._revoked: dict[bytes, str] = {}
        self._rotated: frozenset[bytes] = frozenset()
        self._ever_managed = False
        self._interval = interval
        self._checked = 0.0
        self._data_version: int | None = None
        self._generation: int | None = None
        self._conn: sqlite3.Connection | None = None
        if db_path is not None:
            self._conn = sqlite3.connect(db_path, timeout=0.05, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
        self.refresh(force=True)

    @property
    def required(self) -> bool:
        """Auth is on once any key exists; a table of only revoked keys keeps it on."""
        return bool(self._bootstrap) or self._ever_managed

    @property
    def settings_keys(self) -> list[Principal]:
        """Keys from settings, by name and scope only: they cannot be changed over HTTP, but an
        operator should see that they exist."""
        return sorted(self._bootstrap.values(), key=lambda p: p.name)

    @property
    def managed_count(self) -> int:
        return len(self._managed)

    def identify(self, token: bytes) -> Principal | Problem:
        now = time.monotonic()
        if now - self._checked >= self._interval:
            self.refresh()
        digest = key_digest(self._secret, token)
        found = self._bootstrap.get(digest) or self._managed.get(digest)
        if found is None and digest not in self._revoked and self.refresh():
            found = self._managed.get(digest)
        if found is None:
            if digest in self._revoked:
                return Problem.REVOKED
            return Problem.ROTATED if digest in self._rotated else Problem.UNKNOWN
        if found.expires_at is not None and found.expires_at <= time.time():
            return Problem.EXPIRED
        return found

    def refresh(self, *, force: bool = False) -> bool:
        """Reload managed keys if the database changed since last time; True if reloaded."""
        self._checked = time.monotonic()
        if self._conn is None:
            return False
        try:
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            if version == self._data_version and not force:
                return False
            self._data_version = version
            generation = int(self._conn.execute("SELECT n FROM api_keys_generation").fetchone()[0])
            if generation == self._generation and not force:
                return False
            rows = self._conn.execute(_SELECT).fetchall()
            retired = self._conn.execute("SELECT digest FROM api_keys_retired").fetchall()
        except sqlite3.Error as exc:  # keep serving the last good table; retry next time
            log.warning("key_table_unreadable", error=str(exc))
            return False
        self._generation = generation
        self._load(rows)
        self._rotated = frozenset(bytes(r[0]) for r in retired)
        return True

    def _load(self, rows: list[sqlite3.Row]) -> None:
        managed: dict[bytes, Principal] = {}
        revoked: dict[bytes, str] = {}
        for row in rows:
            digest = bytes(row["digest"])
            if row["revoked_at"] is not None:
                revoked[digest] = row["name"]
                continue
            managed[digest] = Principal(
                id=row["id"],
                name=row["name"],
                scope=KeyScope(row["scope"]),
                models=tuple(orjson.loads(row["models"])) if row["models"] else (),
                rpm=row["rpm"],
                tpm=row["tpm"],
                max_concurrent=row["max_concurrent"],
                expires_at=row["expires_at"],
                tools=bool(row["tools"]),
                weight=float(row["weight"]),
                priority=row["priority"],
                may_load=scope_may_load(
                    row["scope"],
                    None if row["loads"] is None else bool(row["loads"]),
                    self._loads_default,
                ),
                max_loads_per_hour=row["max_loads_per_hour"],
                hours=stored_hours(row["hours"], row["days"], row["tz"]),
                daily_tokens=row["daily_tokens"],
                zone=stored_zone(row["tz"]),
            )
        self._managed, self._revoked = managed, revoked
        self._ever_managed = bool(rows)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
