"""Managed keys in SQLite: only HMACs stored, names unique among active keys, owner-only files."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from lmgate.guard.keys import KeyRegistry, Principal
from lmgate.guard.paths import Scope
from lmgate.store.db import DB_NAME, Database, _migrations
from lmgate.store.keys import (
    KEY_PREFIX,
    SECRET_FILE,
    KeyProblem,
    KeyStore,
    NameTaken,
    NewKey,
    UnknownKey,
    any_keys,
    key_digest,
    load_secret,
    parse_expiry,
)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(Database(tmp_path), load_secret(tmp_path))


def test_keys_are_random_prefixed_and_stored_only_as_hmacs(store: KeyStore, tmp_path: Path) -> None:
    row, key = store.create(NewKey(name="alice", rpm=5, models=("qwen*",)))
    other = store.create(NewKey(name="bob"))[1]
    assert key.startswith(KEY_PREFIX) and len(key) - len(KEY_PREFIX) >= 43  # 32 bytes, base64
    assert key != other
    assert row.hint == key[:8] and row.rpm == 5 and row.models == ("qwen*",)
    store.db.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DB_NAME))
    assert key.encode() not in raw and key[8:].encode() not in raw


def test_secret_and_database_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = load_secret(data)
    assert len(first) == 32 and load_secret(data) == first
    Database(data).close()
    for path in (data / SECRET_FILE, data / DB_NAME):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_damaged_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_bytes(b"short")
    with pytest.raises(KeyProblem):
        load_secret(tmp_path)


def test_names_unique_among_active_keys(store: KeyStore) -> None:
    store.create(NewKey(name="alice"))
    with pytest.raises(NameTaken):
        store.create(NewKey(name="alice"))
    store.revoke("alice")
    row, _ = store.create(NewKey(name="alice"))  # the name is free again
    assert store.find("alice") == row
    assert len(store.list()) == 1 and len(store.list(include_revoked=True)) == 2


def test_revoke_and_rotate(store: KeyStore) -> None:
    row, old = store.create(NewKey(name="svc", scope="admin", tpm=100))
    rotated, new = store.rotate(row.id)
    assert new != old and rotated.id == row.id and rotated.tpm == 100
    assert rotated.rotated_at is not None
    revoked = store.revoke("svc")
    assert revoked.revoked_at is not None and revoked.status(0) == "revoked"
    with pytest.raises(KeyProblem, match="already revoked"):
        store.revoke(row.id)
    with pytest.raises(KeyProblem):
        store.rotate(row.id)
    with pytest.raises(UnknownKey):
        store.revoke("nobody")


@pytest.mark.parametrize(
    "spec",
    [
        NewKey(name=""),
        NewKey(name="has space"),
        NewKey(name="x" * 65),
        NewKey(name="-leading"),
        NewKey(name="ok", scope="root"),
        NewKey(name="ok", rpm=0),
        NewKey(name="ok", max_concurrent=-1),
        NewKey(name="ok", models=("",)),
        NewKey(name="ok", expires_at=1.0),
    ],
)
def test_invalid_specs(store: KeyStore, spec: NewKey) -> None:
    with pytest.raises(KeyProblem):
        store.create(spec)


def test_parse_expiry() -> None:
    assert parse_expiry("30d", 1000.0) == 1000.0 + 30 * 86400
    assert parse_expiry("90m", 0.0) == 5400.0
    assert parse_expiry("2w", 0.0) == 14 * 86400
    assert parse_expiry("1970-01-02", 0.0) == 86400.0
    assert parse_expiry("1970-01-01T01:00:00+01:00", 0.0) == 0.0
    for bad in ("soon", "30x", "-1d", ""):
        with pytest.raises(KeyProblem):
            parse_expiry(bad, 0.0)


def test_any_keys_counts_revoked_keys_too(store: KeyStore, tmp_path: Path) -> None:
    assert not any_keys(tmp_path) and not any_keys(tmp_path / "nowhere")
    store.create(NewKey(name="a"))
    store.revoke("a")
    assert any_keys(tmp_path)


def test_metrics_keys_take_no_models_or_limits(store: KeyStore) -> None:
    row, _ = store.create(NewKey(name="prom", scope="metrics"))
    assert row.scope == "metrics"
    for spec in (
        NewKey(name="p1", scope="metrics", models=("qwen*",)),
        NewKey(name="p2", scope="metrics", rpm=5),
        NewKey(name="p3", scope="metrics", max_concurrent=1),
    ):
        with pytest.raises(KeyProblem, match="no models or limits"):
            store.create(spec)


def test_keys_made_before_the_metrics_scope_survive_its_migration(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    for number, sql in _migrations():
        if number <= 3:
            conn.executescript(sql)
    conn.execute("PRAGMA user_version=3")
    conn.close()
    secret = load_secret(tmp_path)
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    conn.execute(
        "INSERT INTO api_keys (id, name, digest, hint, scope, rpm, created_at, revoked_at)"
        " VALUES ('key_old', 'old', ?, 'lmg_abcd', 'admin', 7, 1.0, NULL),"
        " ('key_gone', 'gone', ?, 'lmg_efgh', 'inference', NULL, 2.0, 3.0)",
        (key_digest(secret, b"old-key"), key_digest(secret, b"gone-key")),
    )
    conn.close()

    db = Database(tmp_path)
    store = KeyStore(db, secret)
    assert [(r.name, r.scope, r.rpm) for r in store.list(include_revoked=True)] == [
        ("old", "admin", 7),
        ("gone", "inference", None),
    ]
    registry = KeyRegistry(secret, [], db.path)
    found = registry.identify(b"old-key")
    assert isinstance(found, Principal) and found.scope is Scope.ADMIN
    _, key = store.create(NewKey(name="prom", scope="metrics"))
    found = registry.identify(key.encode())  # the generation triggers came back with the table
    assert isinstance(found, Principal) and found.scope is Scope.METRICS
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO api_keys (id, name, digest, hint, scope, created_at)"
            " VALUES ('x', 'x', x'00', 'h', 'root', 0)"
        )
    registry.close()
