"""The in-memory key table: bootstrap and managed keys, and changes made by other processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lmgate.guard.keys import KeyRegistry, Principal, Problem
from lmgate.guard.paths import Scope
from lmgate.store.db import Database
from lmgate.store.keys import KeyStore, NewKey, load_secret


@pytest.fixture
def data(tmp_path: Path) -> Path:
    Database(tmp_path).close()
    return tmp_path


def _cli_store(data: Path) -> KeyStore:
    """A separate connection, as `lmgate keys` in another process has."""
    return KeyStore(Database(data), load_secret(data))


def test_bootstrap_keys(data: Path) -> None:
    reg = KeyRegistry(
        load_secret(data), [("admin", Scope.ADMIN, "a" * 20)], data / "lmgate.sqlite3"
    )
    found = reg.identify(b"a" * 20)
    assert isinstance(found, Principal) and found.scope is Scope.ADMIN and found.name == "admin"
    assert reg.identify(b"a" * 19) is Problem.UNKNOWN
    assert reg.required


def test_no_keys_means_not_required(data: Path) -> None:
    reg = KeyRegistry(load_secret(data), [], data / "lmgate.sqlite3")
    assert not reg.required and reg.identify(b"anything") is Problem.UNKNOWN


def test_key_made_elsewhere_works_on_first_use(data: Path) -> None:
    reg = KeyRegistry(load_secret(data), [], data / "lmgate.sqlite3", interval=3600)
    assert not reg.required
    _, key = _cli_store(data).create(NewKey(name="alice", models=("qwen*",), rpm=3))
    found = reg.identify(key.encode())  # unknown digest: checks the database at once
    assert isinstance(found, Principal)
    assert found.name == "alice" and found.rpm == 3 and found.allows_model("qwen/qwen3-4b")
    assert not found.allows_model("google/gemma-3-1b")
    assert reg.required


def test_revocation_elsewhere_is_seen_after_the_interval(data: Path) -> None:
    reg = KeyRegistry(load_secret(data), [], data / "lmgate.sqlite3", interval=0.05)
    cli = _cli_store(data)
    _, key = cli.create(NewKey(name="bob"))
    assert isinstance(reg.identify(key.encode()), Principal)
    cli.revoke("bob")
    time.sleep(0.06)
    assert reg.identify(key.encode()) is Problem.REVOKED
    assert reg.required  # revoking every key does not open the gateway


def test_rotation_elsewhere(data: Path) -> None:
    reg = KeyRegistry(load_secret(data), [], data / "lmgate.sqlite3", interval=0.0)
    cli = _cli_store(data)
    _, old = cli.create(NewKey(name="svc"))
    _, new = cli.rotate("svc")
    assert reg.identify(old.encode()) is Problem.ROTATED
    assert isinstance(reg.identify(new.encode()), Principal)
    _, newest = cli.rotate("svc")
    assert reg.identify(new.encode()) is Problem.ROTATED
    assert reg.identify(old.encode()) is Problem.ROTATED
    assert isinstance(reg.identify(newest.encode()), Principal)
    assert reg.identify(b"never-issued") is Problem.UNKNOWN


def test_expired_key(data: Path) -> None:
    reg = KeyRegistry(load_secret(data), [], data / "lmgate.sqlite3", interval=0.0)
    cli = _cli_store(data)
    # long enough to be checked once before it expires, even on a busy machine
    expires = time.time() + 1.0
    _, key = cli.create(NewKey(name="short", expires_at=expires))
    assert isinstance(reg.identify(key.encode()), Principal)
    time.sleep(max(0.0, expires - time.time()) + 0.01)
    assert reg.identify(key.encode()) is Problem.EXPIRED


def test_unchanged_database_is_not_reloaded(data: Path) -> None:
    reg = KeyRegistry(load_secret(data), [], data / "lmgate.sqlite3", interval=0.0)
    assert reg.refresh() is False
    _cli_store(data).create(NewKey(name="x"))
    assert reg.refresh() is True
    assert reg.refresh() is False and reg.managed_count == 1


def test_a_different_secret_matches_nothing(
    data: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, key = _cli_store(data).create(NewKey(name="x"))
    other_secret = load_secret(tmp_path_factory.mktemp("other"))
    reg = KeyRegistry(other_secret, [], data / "lmgate.sqlite3")
    assert reg.identify(key.encode()) is Problem.UNKNOWN
