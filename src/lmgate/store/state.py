"""The active model, its default inference parameters and stored load configs.

Persisted in SQLite and mirrored in memory: the proxy reads `injection` (a precompiled value)
without awaiting anything; admin writes update the database first, then swap the value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from lmgate.pipeline.injection import Injection, compile_injection
from lmgate.store.db import Database


@dataclass(frozen=True, slots=True)
class ModelState:
    active_model: str | None = None
    default_inference: dict[str, Any] = field(default_factory=dict)
    activated_at: float | None = None
    load_configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "activeModel": self.active_model,
            "defaultInference": self.default_inference,
            "activatedAt": self.activated_at,
            "loadConfigs": self.load_configs,
        }


_CLEAR_ACTIVE = "UPDATE active_model SET model_key=NULL, default_inference='{}', activated_at=NULL"


class StateStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.state = self._read()
        self.injection: Injection = compile_injection(
            self.state.active_model, self.state.default_inference
        )

    def _read(self) -> ModelState:
        row = self.db.query("SELECT model_key, default_inference, activated_at FROM active_model")[
            0
        ]
        configs = {
            r["model_key"]: orjson.loads(r["load_config"])
            for r in self.db.query("SELECT model_key, load_config FROM model_profiles")
            if r["load_config"] is not None
        }
        return ModelState(
            active_model=row["model_key"],
            default_inference=orjson.loads(row["default_inference"]),
            activated_at=row["activated_at"],
            load_configs=configs,
        )

    def _swap(self, state: ModelState) -> None:
        self.state = state
        self.injection = compile_injection(state.active_model, state.default_inference)

    def stored_defaults(self, model_key: str) -> dict[str, Any]:
        """The defaults last given for `model_key` (its profile), or none."""
        if model_key == self.state.active_model:
            return dict(self.state.default_inference)
        rows = self.db.query(
            "SELECT default_inference FROM model_profiles WHERE model_key=?", (model_key,)
        )
        if rows and rows[0]["default_inference"] is not None:
            stored: dict[str, Any] = orjson.loads(rows[0]["default_inference"])
            return stored
        return {}

    async def activate(
        self,
        model_key: str,
        default_inference: dict[str, Any] | None,
        load_config: dict[str, Any] | None = None,
    ) -> ModelState:
        """Make `model_key` active. Defaults not given: the model's stored ones are kept."""
        now = time.time()
        if default_inference is None:
            default_inference = self.stored_defaults(model_key)
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                "UPDATE active_model SET model_key=?, default_inference=?, activated_at=?",
                (model_key, orjson.dumps(default_inference).decode(), now),
            )
        ]
        configs = dict(self.state.load_configs)
        statements.append(_upsert_profile(model_key, load_config, default_inference, now))
        if load_config is not None:
            configs[model_key] = load_config
        await self.db.atransaction(statements)
        self._swap(ModelState(model_key, dict(default_inference), now, configs))
        return self.state

    async def store_load_config(self, model_key: str, load_config: dict[str, Any]) -> ModelState:
        now = time.time()
        await self.db.atransaction([_upsert_profile(model_key, load_config, None, now)])
        configs = {**self.state.load_configs, model_key: load_config}
        s = self.state
        self._swap(ModelState(s.active_model, s.default_inference, s.activated_at, configs))
        return self.state

    async def clear(self, model_key: str) -> bool:
        """Deactivate `model_key` if it is the active model; return whether it was."""
        if self.state.active_model != model_key:
            return False
        await self.db.atransaction([(_CLEAR_ACTIVE, ())])
        self._swap(ModelState(None, {}, None, self.state.load_configs))
        return True


def _upsert_profile(
    model_key: str,
    load_config: dict[str, Any] | None,
    default_inference: dict[str, Any] | None,
    now: float,
) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO model_profiles (model_key, load_config, default_inference, updated_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT(model_key) DO UPDATE SET"
        " load_config=COALESCE(excluded.load_config, load_config),"
        " default_inference=COALESCE(excluded.default_inference, default_inference),"
        " updated_at=excluded.updated_at",
        (
            model_key,
            orjson.dumps(load_config).decode() if load_config is not None else None,
            orjson.dumps(default_inference).decode() if default_inference is not None else None,
            now,
        ),
    )
