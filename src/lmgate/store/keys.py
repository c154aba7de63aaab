"""Managed API keys in SQLite: create, list, revoke, rotate. Shared by the gateway and the CLI.

A key is shown once, when made. What is stored is HMAC-SHA-256(server secret, key): a stolen
database alone cannot be used to check guesses, and the secret lives in its own owner-only file
in the data dir. Every change bumps `api_keys_generation` (by trigger), which running gateways
watch to pick changes up on their next request.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Final

import orjson

from lmgate.key_hours import KeyHours, ScheduleProblem, parse_zone, stored_hours
from lmgate.store.db import DB_NAME, Database
from lmgate.store.integrity import SECRET_FILE as SECRET_FILE
from lmgate.store.integrity import remember_keys

KEY_PREFIX = "lmg_"
SCOPES = ("inference", "metrics", "admin")
TOOLS = ("allow", "deny")
LOADS = ("allow", "deny")
MAX_WEIGHT = 1000.0
PRIORITIES = range(-100, 101)
MAX_LOADS_PER_HOUR = 100_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_COLUMNS = (
    "id, name, hint, scope, models, rpm, tpm, max_concurrent,"
    " created_at, expires_at, revoked_at, rotated_at, tools,"
    " weight, priority, loads, max_loads_per_hour, hours, days, tz, daily_tokens"
)
MAX_DAILY_TOKENS = 10**12


class KeyProblem(ValueError):
    """A key operation that cannot be done as asked (bad value, or one of the below)."""


class UnknownKey(KeyProblem):
    pass


class NameTaken(KeyProblem):
    pass


def load_secret(data_dir: Path) -> bytes:
    """The server's HMAC secret, created on first use (32 random bytes, mode 0600)."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) < 32:
            raise KeyProblem(f"{path} is damaged (shorter than 32 bytes)") from None
        return secret
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    return path.read_bytes()


def any_keys(data_dir: Path) -> bool:
    """Whether the data dir holds managed keys (revoked ones count: auth stays on)."""
    path = data_dir / DB_NAME
    if not path.is_file():
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM api_keys)").fetchone()[0])
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def key_digest(secret: bytes, token: bytes) -> bytes:
    return hmac.digest(secret, token, hashlib.sha256)  # one-shot, in C


def _hint(key: str) -> str:
    return key[: len(KEY_PREFIX) + 4]


def generate_key() -> str:
    """`lmg_` and 32 random bytes, URL-safe: recognisable in a leak scan, unguessable."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: float) -> float:
    """`30d`, `12h`, `90m`, `3600s`, `2w` from now, or an ISO date/time (UTC unless it says)."""
    text = text.strip()
    match = re.fullmatch(r"(\d{1,7})([smhdw])", text)
    if match:
        return now + int(match[1]) * _UNITS[match[2]]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise KeyProblem(f"expiry '{text}': use e.g. 30d, 12h, 90m or 2026-12-31") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    name: str
    hint: str
    scope: str
    models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    rotated_at: float | None
    tools: bool = False  # may have the upstream use tools (MCP servers, plugins) for it
    weight: float = 1.0  # share among waiting requests of the same priority
    priority: int = 0  # higher classes are served first
    loads: bool | None = None  # may cause model loads; None: the default for its scope
    max_loads_per_hour: int | None = None
    hours: str | None = None  # allowed hours, HH:MM-HH:MM
    days: str | None = None  # allowed days, e.g. mon-fri
    tz: str | None = None  # their time zone; None: the gateway's
    daily_tokens: int | None = None  # prompt + completion tokens a local day

    @classmethod
    def of(cls, row: sqlite3.Row) -> KeyRow:
        models = tuple(orjson.loads(row["models"])) if row["models"] else ()
        loads = row["loads"]
        return cls(
            row["id"], row["name"], row["hint"], row["scope"], models, row["rpm"], row["tpm"],
            row["max_concurrent"], row["created_at"], row["expires_at"], row["revoked_at"],
            row["rotated_at"], bool(row["tools"]), float(row["weight"]), row["priority"],
            None if loads is None else bool(loads), row["max_loads_per_hour"], row["hours"],
            row["days"], row["tz"], row["daily_tokens"],
        )  # fmt: skip

    def schedule(self) -> KeyHours | None:
        """Its allowed hours (None: any time)."""
        return stored_hours(self.hours, self.days, self.tz)

    def may_load(self, loads_default: bool) -> bool:
        """Whether its requests may make lmgate load a model: its own choice, else allow for
        admin keys, never for metrics keys, `LMGATE_KEY_LOADS_DEFAULT` for the others."""
        return scope_may_load(self.scope, self.loads, loads_default)

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_json(self, loads_default: bool = True) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "hint": self.hint + "...",
            "scope": self.scope,
            "models": list(self.models) or None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "maxConcurrent": self.max_concurrent,
            "tools": "allow" if self.tools else "deny",
            "weight": self.weight,
            "priority": self.priority,
            "loads": "allow" if self.may_load(loads_default) else "deny",
            "loadsDefault": self.loads is None,  # follows the default for its scope
            "maxLoadsPerHour": self.max_loads_per_hour,
            "hours": self.hours,
            "days": self.days,
            "timeZone": self.tz,
            "dailyTokens": self.daily_tokens,
            "schedule": _schedule_text(self),
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "revokedAt": self.revoked_at,
            "rotatedAt": self.rotated_at,
            "status": self.status(time.time()),
        }


@dataclass(frozen=True, slots=True)
class NewKey:
    """What a caller may ask for; validated here so the CLI and the API agree."""

    name: str
    scope: str = "inference"
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    expires_at: float | None = None
    tools: str | None = None  # allow or deny; None: allow for admin keys, deny for others
    weight: float = 1.0
    priority: int = 0
    loads: str | None = None  # allow or deny; None: the default for its scope, as it changes
    max_loads_per_hour: int | None = None
    hours: str | None = None
    days: str | None = None
    tz: str | None = None
    daily_tokens: int | None = None

    @property
    def allows_tools(self) -> bool:
        return self.tools == "allow" if self.tools is not None else self.scope == "admin"

    def check(self, now: float) -> None:
        if not _NAME.match(self.name):
            raise KeyProblem("name: 1-64 letters, digits or ._@+- , starting with a letter/digit")
        if self.scope not in SCOPES:
            raise KeyProblem(f"scope must be one of {', '.join(SCOPES)}")
        limits = {"rpm": self.rpm, "tpm": self.tpm, "max_concurrent": self.max_concurrent}
        if self.scope == "metrics" and (self.models or any(v is not None for v in limits.values())):
            raise KeyProblem("a metrics key reaches no model: it takes no models or limits")
        if self.tools is not None and self.tools not in TOOLS:
            raise KeyProblem(f"tools must be one of {', '.join(TOOLS)}")
        if self.scope == "metrics" and self.tools == "allow":
            raise KeyProblem("a metrics key reaches no model: it cannot use tools")
        for label, value in limits.items():
            if value is not None and value < 1:
                raise KeyProblem(f"{label} must be at least 1")
        if any(not p.strip() or len(p) > 200 for p in self.models) or len(self.models) > 100:
            raise KeyProblem("models: up to 100 non-empty glob patterns")
        if self.expires_at is not None and self.expires_at <= now:
            raise KeyProblem("the expiry is in the past")
        check_scheduling(
            self.scope, self.weight, self.priority, self.loads, self.max_loads_per_hour
        )
        check_schedule(self.scope, self.hours, self.days, self.tz, self.daily_tokens)


def _blank(text: str | None) -> str | None:
    """Stored as given, trimmed; empty means none."""
    return text.strip() or None if text is not None else None


def scope_may_load(scope: str, loads: bool | None, loads_default: bool) -> bool:
    if loads is not None:
        return loads
    return scope == "admin" or (scope == "inference" and loads_default)


def check_scheduling(
    scope: str, weight: float, priority: int, loads: str | None, max_loads: int | None
) -> None:
    """The scheduler's key attributes, the same checks for the CLI and the API. A priority
    above 0 puts a key's requests before everyone else's, however many wait: only an admin key,
    whose holder controls the gateway anyway, may have it. A lower class is open to every key
    (batch jobs that should yield)."""
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise KeyProblem("weight must be a number")
    if not math.isfinite(weight) or not 0 < weight <= MAX_WEIGHT:
        raise KeyProblem(f"weight must be a number above 0 and at most {MAX_WEIGHT:g}")
    if isinstance(priority, bool) or not isinstance(priority, int) or priority not in PRIORITIES:
        raise KeyProblem(
            f"priority must be a whole number from {PRIORITIES[0]} to {PRIORITIES[-1]}"
        )
    if priority > 0 and scope != "admin":
        raise KeyProblem("only admin keys may have a priority above 0 (others: 0 or below)")
    if loads is not None and loads not in LOADS:
        raise KeyProblem(f"loads must be one of {', '.join(LOADS)}")
    if max_loads is not None and (
        isinstance(max_loads, bool)
        or not isinstance(max_loads, int)
        or not 1 <= max_loads <= MAX_LOADS_PER_HOUR
    ):
        raise KeyProblem(
            f"max loads per hour must be a whole number from 1 to {MAX_LOADS_PER_HOUR}"
        )
    if scope == "metrics" and (
        weight != 1.0 or priority != 0 or loads == "allow" or max_loads is not None
    ):
        raise KeyProblem("a metrics key reaches no model: it takes no scheduling attributes")


def check_schedule(
    scope: str, hours: str | None, days: str | None, tz: str | None, daily: int | None
) -> None:
    """Allowed hours, days and zone must read; a daily budget is a whole number of tokens."""
    try:
        KeyHours.parse(hours, days, tz)
        if tz:
            parse_zone(tz)
    except ScheduleProblem as exc:
        raise KeyProblem(str(exc)) from None
    if daily is not None and (
        isinstance(daily, bool) or not isinstance(daily, int) or not 1 <= daily <= MAX_DAILY_TOKENS
    ):
        raise KeyProblem(f"daily tokens must be a whole number from 1 to {MAX_DAILY_TOKENS}")
    if scope == "metrics" and daily is not None:
        raise KeyProblem("a metrics key reaches no model: it takes no daily token budget")


def _schedule_text(row: KeyRow) -> str | None:
    """`07:00-21:00 mon,...,fri (Europe/Berlin); 50000 tokens a day`, or None: no schedule."""
    parts = []
    hours = row.schedule()
    if hours is not None:
        parts.append(hours.describe())
    if row.daily_tokens is not None:
        parts.append(f"{row.daily_tokens} tokens a day")
    return "; ".join(parts) or None


class Keep(Enum):
    """A field of `KeyUpdate` left as stored."""

    KEEP = 0


KEEP: Final = Keep.KEEP


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    """Attributes to change in place on an active key; fields left at KEEP stay as stored."""

    weight: float | Keep = KEEP
    priority: int | Keep = KEEP
    loads: str | Keep | None = KEEP  # allow, deny, or None: the default for its scope
    max_loads_per_hour: int | Keep | None = KEEP  # None: no cap
    tools: str | Keep = KEEP  # allow or deny
    hours: str | Keep | None = KEEP  # None: any hour
    days: str | Keep | None = KEEP  # None: every day
    tz: str | Keep | None = KEEP  # None: the gateway's zone
    daily_tokens: int | Keep | None = KEEP  # None: no budget

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is KEEP for f in fields(self))


class KeyStore:
    def __init__(self, db: Database, secret: bytes) -> None:
        self.db = db
        self.secret = secret

    def create(self, spec: NewKey) -> tuple[KeyRow, str]:
        now = time.time()
        spec.check(now)
        key = generate_key()
        key_id = "key_" + secrets.token_hex(6)
        models = orjson.dumps(list(spec.models)).decode() if spec.models else None
        try:
            self.db.execute(
                "INSERT INTO api_keys (id, name, digest, hint, scope, models, rpm, tpm,"
                " max_concurrent, created_at, expires_at, tools, weight, priority, loads,"
                " max_loads_per_hour, hours, days, tz, daily_tokens)"
                f" VALUES ({', '.join('?' * 20)})",
                (
                    key_id,
                    spec.name,
                    key_digest(self.secret, key.encode()),
                    _hint(key),
                    spec.scope,
                    models,
                    spec.rpm,
                    spec.tpm,
                    spec.max_concurrent,
                    now,
                    spec.expires_at,
                    int(spec.allows_tools),
                    float(spec.weight),
                    spec.priority,
                    None if spec.loads is None else int(spec.loads == "allow"),
                    spec.max_loads_per_hour,
                    _blank(spec.hours),
                    _blank(spec.days),
                    _blank(spec.tz),
                    spec.daily_tokens,
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise NameTaken(f"an active key named '{spec.name}' already exists") from exc
        remember_keys(self.db.path.parent)  # evidence that outlives a lost database
        return self.get(key_id), key

    def get(self, key_id: str) -> KeyRow:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM api_keys WHERE id=?", (key_id,))
        if not rows:
            raise UnknownKey(f"no key '{key_id}'")
        return KeyRow.of(rows[0])

    def find(self, name_or_id: str) -> KeyRow | None:
        """By id, else the active key of that name, else the latest revoked one of that name."""
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM api_keys WHERE id=? OR name=?"
            " ORDER BY id=? DESC, revoked_at IS NULL DESC, created_at DESC LIMIT 1",
            (name_or_id, name_or_id, name_or_id),
        )
        return KeyRow.of(rows[0]) if rows else None

    def list(self, *, include_revoked: bool = False) -> list[KeyRow]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = self.db.query(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at")
        return [KeyRow.of(r) for r in rows]

    def _require_active(self, name_or_id: str) -> KeyRow:
        row = self.find(name_or_id)
        if row is None:
            raise UnknownKey(f"no key named or with id '{name_or_id}'")
        if row.revoked_at is not None:
            raise KeyProblem(f"key '{row.name}' ({row.id}) is already revoked")
        return row

    def revoke(self, name_or_id: str) -> KeyRow:
        row = self._require_active(name_or_id)
        self.db.execute("UPDATE api_keys SET revoked_at=? WHERE id=?", (time.time(), row.id))
        return self.get(row.id)

    def update(self, name_or_id: str, change: KeyUpdate) -> KeyRow:
        """Change an active key's scheduling attributes or tools permission in place; a
        running gateway applies them from its next request on."""
        if change.empty:
            raise KeyProblem("nothing to change: give at least one attribute")
        row = self._require_active(name_or_id)
        weight = row.weight if change.weight is KEEP else change.weight
        priority = row.priority if change.priority is KEEP else change.priority
        stored = None if row.loads is None else ("allow" if row.loads else "deny")
        loads = stored if change.loads is KEEP else change.loads
        max_loads = (
            row.max_loads_per_hour
            if change.max_loads_per_hour is KEEP
            else change.max_loads_per_hour
        )
        tools = ("allow" if row.tools else "deny") if change.tools is KEEP else change.tools
        if tools not in TOOLS:
            raise KeyProblem(f"tools must be one of {', '.join(TOOLS)}")
        if row.scope == "metrics" and tools == "allow":
            raise KeyProblem("a metrics key reaches no model: it cannot use tools")
        check_scheduling(row.scope, weight, priority, loads, max_loads)
        hours = row.hours if change.hours is KEEP else _blank(change.hours)
        days = row.days if change.days is KEEP else _blank(change.days)
        tz = row.tz if change.tz is KEEP else _blank(change.tz)
        daily = row.daily_tokens if change.daily_tokens is KEEP else change.daily_tokens
        check_schedule(row.scope, hours, days, tz, daily)
        self.db.execute(
            "UPDATE api_keys SET weight=?, priority=?, loads=?, max_loads_per_hour=?, tools=?,"
            " hours=?, days=?, tz=?, daily_tokens=? WHERE id=?",
            (
                float(weight),
                priority,
                None if loads is None else int(loads == "allow"),
                max_loads,
                int(tools == "allow"),
                hours,
                days,
                tz,
                daily,
                row.id,
            ),
        )
        return self.get(row.id)

    def rotate(self, name_or_id: str) -> tuple[KeyRow, str]:
        """A new secret for the same key (name, limits); the old one stops working at once."""
        row = self._require_active(name_or_id)
        key = generate_key()
        now = time.time()
        self.db.transaction(
            [
                (
                    "INSERT OR IGNORE INTO api_keys_retired (digest, key_id, retired_at)"
                    " SELECT digest, id, ? FROM api_keys WHERE id=?",
                    (now, row.id),
                ),
                (
                    "UPDATE api_keys SET digest=?, hint=?, rotated_at=? WHERE id=?",
                    (key_digest(self.secret, key.encode()), _hint(key), now, row.id),
                ),
            ]
        )
        return self.get(row.id), key
