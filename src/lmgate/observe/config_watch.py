"""`config_changed` events for runtime configuration, whoever changed it and however.

Runtime state (the active model, its defaults, per-model profiles) changes through several
paths: admin routes, on-demand loading, the model sync loop. Rather than ask each to publish,
a background loop compares cheap snapshots every `interval` seconds and publishes what
differs, field by field. Stores swap in a new immutable value on every change, so an
unchanged source costs one identity check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lmgate.observe.events import EventBus
from lmgate.store.state import StateStore

Snapshot = Callable[[], tuple[object, dict[str, Any]]]  # (identity token, fields)


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fields whose value changed; dict fields report which of their entries did."""
    changes: dict[str, Any] = {}
    for name in old.keys() | new.keys():
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict) and name == "profiles":
            changes[name] = {
                "added": sorted(after.keys() - before.keys()),
                "removed": sorted(before.keys() - after.keys()),
                "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
            }
        else:
            changes[name] = {"from": before, "to": after}
    return changes


def model_state(store: StateStore) -> Snapshot:
    def snapshot() -> tuple[object, dict[str, Any]]:
        store.refresh()  # with workers: an idle one still reports another's change, once
        state = store.state
        return state, {
            "activeModel": state.active_model,
            "defaultInference": state.default_inference,
            "profiles": {k: p.as_json() for k, p in state.profiles.items()},
        }

    return snapshot


class ConfigWatch:
    def __init__(self, bus: EventBus, *, interval: float = 1.0) -> None:
        self.bus = bus
        self.interval = interval
        self.sources: dict[str, Snapshot] = {}
        self._last: dict[str, tuple[object, dict[str, Any]]] = {}

    def watch(self, what: str, snapshot: Snapshot) -> None:
        self.sources[what] = snapshot
        self._last[what] = snapshot()

    def check(self) -> None:
        for what, snapshot in self.sources.items():
            token, fields = snapshot()
            last_token, last_fields = self._last[what]
            if token is last_token:
                continue
            self._last[what] = (token, fields)
            changes = diff(last_fields, fields)
            if changes:
                self.bus.publish("config_changed", what=what, changes=changes, requestId=None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()
