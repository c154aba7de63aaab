"""One-time pairing codes in SQLite: made by an admin, redeemed once by a device for a new key.

A code is a credential for exactly one key: it is stored as its HMAC (like keys), dies on first
use or at expiry, and redeeming it is one conditional UPDATE, so two workers (or two taps on a
phone) can never both win. The row stays as the audit record of the pairing. Pending codes are
bounded (`MAX_PENDING`): an admin script in a loop cannot fill the database.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson

from lmgate.store.db import Database
from lmgate.store.keys import KeyProblem, KeyRow, KeyStore, NameTaken, NewKey, key_digest

VALID_FOR_S = 600.0  # ten minutes, unless the admin says otherwise
MAX_VALID_FOR_S = 7 * 86400.0
MAX_PENDING = 50
# Codes that died unused (expired or cancelled) are kept as a record up to this many; the
# oldest go first, so an admin loop of create-and-cancel cannot grow the table without end.
# Redeemed codes are the audit of a key and are always kept.
MAX_UNUSED_KEPT = 1000
_PENDING = "redeemed_at IS NULL AND cancelled_at IS NULL AND expires_at > ?"
MAX_DEVICE_CHARS = 64
CODE_BYTES = 15  # 120 bits; 20 URL-safe characters
_CODE = re.compile(r"[A-Za-z0-9_-]{20}")
_COLUMNS = (
    "id, device, key_name, scope, models, rpm, tpm, key_expires_at, created_at, expires_at,"
    " created_by, redeemed_at, redeemed_by, key_id, cancelled_at"
)


class PairingProblem(KeyProblem):
    """A pairing that cannot be made as asked."""


class CodeRefused(Exception):
    """A code that redeems nothing: `reason` is unknown, used, expired or cancelled."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def looks_like_code(text: str) -> bool:
    return bool(_CODE.fullmatch(text))


def key_name_for(device: str) -> str:
    """A key name (letters, digits, `._@+-`) from a device label such as "Anna's phone"."""
    ascii_text = unicodedata.normalize("NFKD", device).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._@+-]+", "-", ascii_text.replace("'", "")).strip("-._@+")
    return (slug or "device")[:48]


@dataclass(frozen=True, slots=True)
class Pairing:
    id: str
    device: str
    key_name: str
    scope: str
    models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    key_expires_at: float | None
    created_at: float
    expires_at: float
    created_by: str
    redeemed_at: float | None
    redeemed_by: str | None
    key_id: str | None
    cancelled_at: float | None

    def status(self, now: float) -> str:
        if self.redeemed_at is not None:
            return "redeemed"
        if self.cancelled_at is not None:
            return "cancelled"
        return "expired" if self.expires_at <= now else "pending"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device": self.device,
            "keyName": self.key_name,
            "scope": self.scope,
            "models": list(self.models) or None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "keyExpiresAt": self.key_expires_at,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "createdBy": self.created_by,
            "redeemedAt": self.redeemed_at,
            "redeemedBy": self.redeemed_by,
            "keyId": self.key_id,
            "status": self.status(time.time()),
        }


@dataclass(frozen=True, slots=True)
class NewPairing:
    device: str
    scope: str = "inference"
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    key_expires_at: float | None = None
    valid_for: float = VALID_FOR_S
    created_by: str = "admin"

    def key_spec(self, name: str) -> NewKey:
        return NewKey(
            name=name,
            scope=self.scope,
            models=self.models,
            rpm=self.rpm,
            tpm=self.tpm,
            expires_at=self.key_expires_at,
        )

    def check(self, now: float) -> None:
        device = self.device.strip()
        if not device or len(device) > MAX_DEVICE_CHARS or not device.isprintable():
            raise PairingProblem(f"name: 1-{MAX_DEVICE_CHARS} printable characters")
        if self.scope == "admin":
            raise PairingProblem("a paired device gets an inference or metrics key, never admin")
        if not 60.0 <= self.valid_for <= MAX_VALID_FOR_S:
            raise PairingProblem("a pairing code lives between 1 minute and 7 days")
        self.key_spec(key_name_for(device)).check(now)


class PairingStore:
    def __init__(self, db: Database, keys: KeyStore) -> None:
        self.db = db
        self.keys = keys

    def _digest(self, code: str) -> bytes:
        return key_digest(self.keys.secret, b"pair:" + code.encode())

    def create(self, spec: NewPairing) -> tuple[Pairing, str]:
        """A new code; the caller shows it once. Refused while `MAX_PENDING` codes wait."""
        now = time.time()
        spec.check(now)
        code = secrets.token_urlsafe(CODE_BYTES)
        pairing_id = "pair_" + secrets.token_hex(6)
        models = orjson.dumps(list(spec.models)).decode() if spec.models else None
        # One statement counts and inserts, so admins creating codes at once (threads, workers)
        # cannot slip past the bound between a count and an insert.
        made = self.db.query(
            f"INSERT INTO pairing_codes (id, digest, device, key_name, scope, models, rpm, tpm,"
            f" key_expires_at, created_at, expires_at, created_by)"
            f" SELECT {', '.join('?' * 12)} WHERE (SELECT COUNT(*) FROM pairing_codes"
            f" WHERE {_PENDING}) < ? RETURNING id",
            (
                pairing_id,
                self._digest(code),
                spec.device.strip(),
                key_name_for(spec.device),
                spec.scope,
                models,
                spec.rpm,
                spec.tpm,
                spec.key_expires_at,
                now,
                now + spec.valid_for,
                spec.created_by,
                now,
                MAX_PENDING,
            ),
        )
        if not made:
            raise PairingProblem(
                f"{MAX_PENDING} pairing codes are still waiting; cancel some or let them expire"
            )
        self._forget_unused(now)
        return self.get(pairing_id), code

    def _forget_unused(self, now: float) -> None:
        self.db.execute(
            "DELETE FROM pairing_codes WHERE id IN (SELECT id FROM pairing_codes"
            " WHERE redeemed_at IS NULL AND (cancelled_at IS NOT NULL OR expires_at <= ?)"
            " ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
            (now, MAX_UNUSED_KEPT),
        )

    def get(self, pairing_id: str) -> Pairing:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM pairing_codes WHERE id=?", (pairing_id,))
        if not rows:
            raise PairingProblem(f"no pairing '{pairing_id}'")
        return _row(rows[0])

    def list(self, *, limit: int = 200) -> list[Pairing]:
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM pairing_codes ORDER BY created_at DESC LIMIT ?", (limit,)
        )
        return [_row(r) for r in rows]

    def devices(self) -> dict[str, str]:
        """Key id -> device label, for every key that came from a pairing."""
        rows = self.db.query("SELECT key_id, device FROM pairing_codes WHERE key_id IS NOT NULL")
        return {r["key_id"]: r["device"] for r in rows}

    def cancel(self, pairing_id: str) -> Pairing:
        self.db.execute(
            "UPDATE pairing_codes SET cancelled_at=? WHERE id=? AND redeemed_at IS NULL"
            " AND cancelled_at IS NULL",
            (time.time(), pairing_id),
        )
        return self.get(pairing_id)

    def peek(self, code: str) -> Pairing:
        """The pending pairing a code opens, without using it up; `CodeRefused` otherwise."""
        if not looks_like_code(code):
            raise CodeRefused("unknown")
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM pairing_codes WHERE digest=?", (self._digest(code),)
        )
        if not rows:
            raise CodeRefused("unknown")
        pairing = _row(rows[0])
        status = pairing.status(time.time())
        if status != "pending":
            raise CodeRefused("used" if status == "redeemed" else status)
        return pairing

    def redeem(self, code: str, address: str | None) -> tuple[Pairing, KeyRow, str]:
        """Use the code up (at most once, whoever asks first) and make its key."""
        pairing = self.peek(code)
        now = time.time()
        claimed = self.db.query(
            "UPDATE pairing_codes SET redeemed_at=?, redeemed_by=? WHERE id=?"
            " AND redeemed_at IS NULL AND cancelled_at IS NULL AND expires_at > ? RETURNING id",
            (now, address or "unknown", pairing.id, now),
        )
        if not claimed:
            raise CodeRefused("used")
        spec = NewPairing(
            pairing.device,
            pairing.scope,
            pairing.models,
            pairing.rpm,
            pairing.tpm,
            pairing.key_expires_at,
        )
        row, key = self._new_key(spec, pairing.key_name)
        self.db.execute("UPDATE pairing_codes SET key_id=? WHERE id=?", (row.id, pairing.id))
        return self.get(pairing.id), row, key

    def _new_key(self, spec: NewPairing, name: str) -> tuple[KeyRow, str]:
        """The device's key, under its name or, if an active key has it, with a suffix."""
        for attempt in range(1, 100):
            candidate = name if attempt == 1 else f"{name}-{attempt}"
            try:
                return self.keys.create(spec.key_spec(candidate))
            except NameTaken:
                continue
        raise PairingProblem(f"too many active keys are named like '{name}'")


def _row(row: Any) -> Pairing:
    models = tuple(orjson.loads(row["models"])) if row["models"] else ()
    return Pairing(
        row["id"], row["device"], row["key_name"], row["scope"], models, row["rpm"], row["tpm"],
        row["key_expires_at"], row["created_at"], row["expires_at"], row["created_by"],
        row["redeemed_at"], row["redeemed_by"], row["key_id"], row["cancelled_at"],
    )  # fmt: skip
