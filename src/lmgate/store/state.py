"""The active model, its default inference parameters, and per-model profiles.

Persisted in SQLite and mirrored in memory: the proxy reads `injection` (a precompiled value)
without awaiting anything; admin writes update the database first, then swap the value.
A profile is a model's stored load config and defaults; its defaults take precedence over
the active ones for requests naming that model. Its policy (`slots`, `ttl`, `pinned`) is the
scheduler's: every swap of the state is told to `listeners`, so a change made here or read
from another worker reaches the scheduler at once. Embeddings get a model by capability: the
stored default embedding model, else the one embedding model loaded upstream (told by the
upstream watcher through `use_loaded_embedding`), never the active chat model.

With several workers (`follow=True`) another process may write: the store then keeps its own
read connection and, as an exchange observer, asks it for `PRAGMA data_version` when each
request starts (about 3 us; a counter in shared memory, no disk, no lock with the writer
thread). Only when it moved are the two small tables read again (also moved by other
workers' usage writes, hence the compare before the swap), so an activation made through one
worker applies to the next request any other worker serves. Other shared tables follow the
same way: `moved` listeners are told, with a reader on that connection, whenever the counter
moved (the upstream list: `upstreams/members.py`). One worker: no connection, no check,
exactly as before.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import EllipsisType
from typing import Any

import orjson
import structlog

from lmgate.exchange import Exchange
from lmgate.pipeline.injection import Injection, compile_injection
from lmgate.store.db import Database

Statement = tuple[str, tuple[Any, ...]]
log = structlog.get_logger("lmgate.state")


POLICY_FIELDS = ("slots", "ttl", "pinned")


@dataclass(frozen=True, slots=True)
class Profile:
    load_config: dict[str, Any] | None = None
    default_inference: dict[str, Any] | None = None
    slots: int | None = None  # answers at once; None: what the upstream reports
    ttl: float | None = None  # idle seconds before lmgate unloads it; 0 = never; None: default
    pinned: bool = False  # never evicted, never unloaded for idleness

    @property
    def has_policy(self) -> bool:
        return self.slots is not None or self.ttl is not None or self.pinned

    def as_json(self) -> dict[str, Any]:
        return {
            "loadConfig": self.load_config,
            "defaultInference": self.default_inference,
            "slots": self.slots,
            "ttl": self.ttl,
            "pinned": self.pinned,
        }


@dataclass(frozen=True, slots=True)
class ModelState:
    active_model: str | None = None
    default_inference: dict[str, Any] = field(default_factory=dict)
    activated_at: float | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)
    embedding_model: str | None = None

    @property
    def load_configs(self) -> dict[str, dict[str, Any]]:
        return {k: p.load_config for k, p in self.profiles.items() if p.load_config is not None}

    def as_json(self) -> dict[str, Any]:
        return {
            "activeModel": self.active_model,
            "defaultInference": self.default_inference,
            "activatedAt": self.activated_at,
            "loadConfigs": self.load_configs,
            "profiles": {k: p.as_json() for k, p in self.profiles.items()},
            "defaultEmbeddingModel": self.embedding_model,
        }


_CLEAR_ACTIVE = "UPDATE active_model SET model_key=NULL, default_inference='{}', activated_at=NULL"
_UPSERT = (
    "INSERT INTO model_profiles (model_key, load_config, default_inference, updated_at, slots,"
    " ttl, pinned) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(model_key) DO UPDATE SET"
    " load_config=excluded.load_config, default_inference=excluded.default_inference,"
    " updated_at=excluded.updated_at, slots=excluded.slots, ttl=excluded.ttl,"
    " pinned=excluded.pinned"
)


def _dump(value: dict[str, Any] | None) -> str | None:
    return orjson.dumps(value).decode() if value is not None else None


def _load(text: str | None) -> dict[str, Any] | None:
    return orjson.loads(text) if text is not None else None


class StateStore:
    def __init__(self, db: Database, *, follow: bool = False) -> None:
        self.db = db
        self.state = ModelState()
        self.injection = Injection()
        self.loaded_embedding: str | None = None
        self.listeners: list[Callable[[ModelState], None]] = []  # told of every new state
        # told whenever another connection committed, with a reader on the follow connection
        self.moved: list[Callable[[Callable[[str], list[Any]]], None]] = []
        self._follow: sqlite3.Connection | None = None
        self._version: int | None = None
        if follow:
            self._follow = sqlite3.connect(db.path, timeout=0.05, check_same_thread=False)
            self._follow.row_factory = sqlite3.Row
            self._version = self._data_version(self._follow)
        self._swap(self._read(self.db.query))

    @staticmethod
    def _data_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def refresh(self) -> bool:
        """Take in what other processes committed since the last look; True if it changed."""
        conn = self._follow
        if conn is None:
            return False
        try:
            version = self._data_version(conn)
            if version == self._version:
                return False
            read = self._reader(conn)
            fresh = self._read(read)
            self._version = version  # only once read: a failed read is tried again next time
        except sqlite3.Error as exc:  # keep the last good state; look again next time
            log.warning("state_unreadable", error=str(exc))
            return False
        for listener in self.moved:
            try:
                listener(read)
            except Exception:  # one table's reader must not keep the others stale
                log.exception("state_follower_failed")
        if fresh == self.state:
            return False
        self._swap(fresh)
        return True

    @property
    def follows(self) -> bool:
        """Whether other processes write this database (several workers)."""
        return self._follow is not None

    @staticmethod
    def _reader(conn: sqlite3.Connection) -> Callable[[str], list[Any]]:
        return lambda sql: conn.execute(sql).fetchall()

    def on_start(self, ex: Exchange) -> None:
        self.refresh()

    def on_finish(self, ex: Exchange) -> None:
        pass

    def close(self) -> None:
        if self._follow is not None:
            self._follow.close()
            self._follow = None

    def _read(self, query: Any) -> ModelState:
        sql = "SELECT model_key, default_inference, activated_at, embedding_model FROM active_model"
        row = query(sql)[0]
        columns = "model_key, load_config, default_inference, slots, ttl, pinned"
        profiles = {
            r["model_key"]: Profile(
                _load(r["load_config"]),
                _load(r["default_inference"]),
                r["slots"],
                r["ttl"],
                bool(r["pinned"]),
            )
            for r in query(f"SELECT {columns} FROM model_profiles")
        }
        return ModelState(
            active_model=row["model_key"],
            default_inference=orjson.loads(row["default_inference"]),
            activated_at=row["activated_at"],
            profiles=profiles,
            embedding_model=row["embedding_model"],
        )

    def _swap(self, state: ModelState) -> None:
        self.state = state
        self.injection = compile_injection(
            state.active_model,
            state.default_inference,
            {k: p.default_inference for k, p in state.profiles.items() if p.default_inference},
            embedding_model=state.embedding_model or self.loaded_embedding,
        )
        for listener in self.listeners:
            listener(state)

    def use_loaded_embedding(self, model: str | None) -> None:
        """The embedding model to inject when none is stored: the one loaded upstream, or
        None when none or several are."""
        if model != self.loaded_embedding:
            self.loaded_embedding = model
            self._swap(self.state)

    def profile(self, model_key: str) -> Profile:
        return self.state.profiles.get(model_key, Profile())

    async def _write(self, statements: list[Statement], state: ModelState) -> ModelState:
        await self.db.atransaction(statements)
        self._swap(state)
        return state

    def _with_profile(
        self, key: str, profile: Profile, now: float
    ) -> tuple[Statement, dict[str, Profile]]:
        row = (
            key,
            _dump(profile.load_config),
            _dump(profile.default_inference),
            now,
            profile.slots,
            profile.ttl,
            int(profile.pinned),
        )
        return (_UPSERT, row), {**self.state.profiles, key: profile}

    async def activate(
        self,
        model_key: str,
        default_inference: dict[str, Any] | None,
        load_config: dict[str, Any] | None = None,
        *,
        embedding_model: str | EllipsisType | None = ...,
    ) -> ModelState:
        """Make `model_key` active. Defaults, load config or embedding model not given (the
        last: `...`; None clears it): the stored ones stay."""
        self.refresh()  # the stored ones may have been changed by another worker
        now = time.time()
        old = self.profile(model_key)
        if default_inference is None:
            default_inference = old.default_inference or {}
        profile = replace(
            old,
            load_config=load_config if load_config is not None else old.load_config,
            default_inference=default_inference,
        )
        upsert, profiles = self._with_profile(model_key, profile, now)
        embedding = self.state.embedding_model if embedding_model is ... else embedding_model
        activate = (
            "UPDATE active_model SET model_key=?, default_inference=?, activated_at=?,"
            " embedding_model=?",
            (model_key, _dump(default_inference), now, embedding),
        )
        state = ModelState(model_key, dict(default_inference), now, profiles, embedding)
        return await self._write([activate, upsert], state)

    async def set_profile(
        self,
        model_key: str,
        load_config: dict[str, Any] | None,
        default_inference: dict[str, Any] | None,
        *,
        merge: bool = False,
        policy: Mapping[str, Any] | None = None,
    ) -> ModelState:
        """Store a model's profile; with `merge`, parts given as None keep their stored value,
        and so does every policy field (`slots`, `ttl`, `pinned`) not in `policy`; without it,
        those not in `policy` go back to their defaults."""
        self.refresh()
        old = self.profile(model_key)
        base = old if merge else Profile()
        if merge:
            load_config = load_config if load_config is not None else old.load_config
            default_inference = (
                default_inference if default_inference is not None else old.default_inference
            )
        given = {k: v for k, v in (policy or {}).items() if k in POLICY_FIELDS}
        profile = replace(
            base, load_config=load_config, default_inference=default_inference, **given
        )
        upsert, profiles = self._with_profile(model_key, profile, time.time())
        s = self.state
        statements = [upsert]
        defaults = s.default_inference
        if model_key == s.active_model and default_inference is not None:
            defaults = default_inference
            statements.append(
                ("UPDATE active_model SET default_inference=?", (_dump(default_inference),))
            )
        state = replace(s, default_inference=defaults, profiles=profiles)
        return await self._write(statements, state)

    async def delete_profile(self, model_key: str) -> bool:
        self.refresh()
        if model_key not in self.state.profiles:
            return False
        profiles = {k: p for k, p in self.state.profiles.items() if k != model_key}
        s = self.state
        delete = ("DELETE FROM model_profiles WHERE model_key=?", (model_key,))
        await self._write([delete], replace(s, profiles=profiles))
        return True

    async def clear(self, model_key: str | None = None) -> bool:
        """Deactivate `model_key` (any model when None) if it is active; return whether it was."""
        self.refresh()
        active = self.state.active_model
        if active is None or (model_key is not None and active != model_key):
            return False
        cleared = replace(self.state, active_model=None, default_inference={}, activated_at=None)
        await self._write([(_CLEAR_ACTIVE, ())], cleared)
        return True
