"""Profiles' scheduling policy in the state store: stored, replaced or merged, kept by
activation, and told to listeners, also when another process (worker) changed it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lmgate.store.db import Database
from lmgate.store.state import ModelState, Profile, StateStore


def test_put_replaces_and_patch_merges_the_policy(tmp_path: Path) -> None:
    store = StateStore(Database(tmp_path))

    async def run() -> None:
        await store.set_profile("m", {"contextLength": 4096}, None, policy={"slots": 2, "ttl": 30})
        await store.set_profile("m", None, None, merge=True, policy={"pinned": True})
        assert store.profile("m") == Profile({"contextLength": 4096}, None, 2, 30.0, True)
        await store.activate("m", {"temperature": 0.5})  # activation keeps the policy
        assert store.profile("m").slots == 2 and store.profile("m").pinned
        await store.set_profile("m", None, None, merge=True, policy={"slots": None})
        assert store.profile("m").slots is None and store.profile("m").ttl == 30.0
        await store.set_profile("m", None, None)  # a replacement: back to the defaults
        assert not store.profile("m").has_policy

    asyncio.run(run())
    reopened = StateStore(Database(tmp_path))
    assert reopened.profile("m") == store.profile("m")


def test_listeners_hear_another_processs_change(tmp_path: Path) -> None:
    Database(tmp_path).close()
    here = StateStore(Database(tmp_path), follow=True)
    there = StateStore(Database(tmp_path), follow=True)
    heard: list[ModelState] = []
    here.listeners.append(heard.append)

    asyncio.run(there.set_profile("m", None, None, policy={"slots": 1, "pinned": True}))
    assert heard == []  # nothing read yet
    assert here.refresh()
    assert heard[-1].profiles["m"].slots == 1 and heard[-1].profiles["m"].pinned
    reopened = StateStore(Database(tmp_path))
    assert reopened.profile("m").as_json()["slots"] == 1
    here.close()
    there.close()
