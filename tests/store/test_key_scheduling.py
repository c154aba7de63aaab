"""Keys' scheduling attributes in the store and the registry: bounds, updates in place, the
migration of keys made before them, and `loads` following the setting while unset."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lmgate.guard.keys import KeyRegistry, Principal
from lmgate.guard.paths import Scope
from lmgate.store import db as db_module
from lmgate.store.db import Database
from lmgate.store.keys import (
    KEEP,
    KeyProblem,
    KeyStore,
    KeyUpdate,
    NewKey,
    key_digest,
    load_secret,
)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(Database(tmp_path), load_secret(tmp_path))


def _principal(data: Path, token: str, *, loads_default: bool = True) -> Principal:
    reg = KeyRegistry(load_secret(data), [], data / "lmgate.sqlite3", loads_default=loads_default)
    found = reg.identify(token.encode())
    reg.close()
    assert isinstance(found, Principal)
    return found


def test_created_attributes_reach_the_principal(store: KeyStore, tmp_path: Path) -> None:
    row, token = store.create(
        NewKey("a", weight=2.5, priority=-1, loads="deny", max_loads_per_hour=3)
    )
    assert (row.weight, row.priority, row.loads, row.max_loads_per_hour) == (2.5, -1, False, 3)
    p = _principal(tmp_path, token)
    assert (p.weight, p.priority, p.may_load, p.max_loads_per_hour) == (2.5, -1, False, 3)
    shown = row.as_json()
    assert shown["loads"] == "deny" and shown["loadsDefault"] is False
    assert shown["maxLoadsPerHour"] == 3 and shown["weight"] == 2.5


def test_unset_loads_follow_the_setting_for_inference_keys_only(
    store: KeyStore, tmp_path: Path
) -> None:
    _, inference = store.create(NewKey("i"))
    _, admin = store.create(NewKey("adm", scope="admin"))
    _, chose = store.create(NewKey("chose", loads="allow"))
    assert _principal(tmp_path, inference, loads_default=True).may_load
    assert not _principal(tmp_path, inference, loads_default=False).may_load
    assert _principal(tmp_path, admin, loads_default=False).may_load
    assert _principal(tmp_path, chose, loads_default=False).may_load
    env_keys = KeyRegistry(
        load_secret(tmp_path),
        [("api-key-1", Scope.INFERENCE, "t" * 24), ("admin", Scope.ADMIN, "u" * 24)],
        None,
        loads_default=False,
    )
    settings_key = env_keys.identify(b"t" * 24)
    assert isinstance(settings_key, Principal) and not settings_key.may_load
    assert settings_key.weight == 1.0 and settings_key.priority == 0
    admin_key = env_keys.identify(b"u" * 24)
    assert isinstance(admin_key, Principal) and admin_key.may_load


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (NewKey("x", weight=0), "weight"),
        (NewKey("x", weight=-1), "weight"),
        (NewKey("x", weight=1001), "weight"),
        (NewKey("x", weight=float("nan")), "weight"),
        (NewKey("x", weight=float("inf")), "weight"),
        (NewKey("x", priority=1), "only admin keys"),
        (NewKey("x", priority=-101), "priority"),
        (NewKey("x", scope="admin", priority=101), "priority"),
        (NewKey("x", loads="maybe"), "loads"),
        (NewKey("x", max_loads_per_hour=0), "max loads"),
        (NewKey("x", max_loads_per_hour=100_001), "max loads"),
        (NewKey("x", scope="metrics", weight=2), "metrics"),
        (NewKey("x", scope="metrics", loads="allow"), "metrics"),
    ],
)
def test_bad_values_are_refused_with_a_reason(store: KeyStore, spec: NewKey, words: str) -> None:
    with pytest.raises(KeyProblem, match=words):
        store.create(spec)
    assert store.list() == []


def test_an_admin_key_may_have_a_higher_class(store: KeyStore) -> None:
    row, _ = store.create(NewKey("ops", scope="admin", priority=5))
    assert row.priority == 5


def test_update_changes_only_what_is_given(store: KeyStore, tmp_path: Path) -> None:
    row, token = store.create(NewKey("u", weight=2, loads="deny", max_loads_per_hour=5))
    changed = store.update("u", KeyUpdate(weight=4))
    assert (changed.weight, changed.loads, changed.max_loads_per_hour) == (4.0, False, 5)
    changed = store.update(row.id, KeyUpdate(loads=None, max_loads_per_hour=None, tools="allow"))
    assert changed.loads is None and changed.max_loads_per_hour is None and changed.tools
    assert changed.weight == 4.0 and changed.name == "u" and changed.hint == row.hint
    assert _principal(tmp_path, token).weight == 4.0  # the same secret, new attributes
    with pytest.raises(KeyProblem, match="only admin keys"):
        store.update("u", KeyUpdate(priority=2))
    with pytest.raises(KeyProblem, match="nothing to change"):
        store.update("u", KeyUpdate())
    with pytest.raises(KeyProblem, match="weight"):
        store.update("u", KeyUpdate(weight=0))
    assert store.get(row.id).priority == 0 and store.get(row.id).weight == 4.0
    store.revoke("u")
    with pytest.raises(KeyProblem, match="revoked"):
        store.update("u", KeyUpdate(weight=1))
    assert KeyUpdate(weight=KEEP).empty


def test_keys_made_before_the_migration_get_the_defaults(tmp_path: Path) -> None:
    """A database at migration 8 with a key in it: 009 gives the key weight 1, priority 0, no
    cap and `loads` unset (the default, as it changes)."""
    path = tmp_path / db_module.DB_NAME
    conn = sqlite3.connect(path, isolation_level=None)
    for number, sql in db_module._migrations():
        if number <= 8:
            conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")
    secret = load_secret(tmp_path)
    conn.execute(
        "INSERT INTO api_keys (id, name, digest, hint, scope, created_at) VALUES (?,?,?,?,?,?)",
        ("key_old", "old", key_digest(secret, b"old-token"), "lmg_xxxx", "inference", 1.0),
    )
    conn.close()
    (tmp_path / "keys.issued").touch()
    store = KeyStore(Database(tmp_path), secret)
    row = store.get("key_old")
    assert (row.weight, row.priority, row.loads, row.max_loads_per_hour) == (1.0, 0, None, None)
    assert _principal(tmp_path, "old-token", loads_default=False).may_load is False
    assert _principal(tmp_path, "old-token", loads_default=True).may_load is True
