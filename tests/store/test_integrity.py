"""The data dir's state is checked before use: lost or damaged state is refused, never replaced
by a fresh database; storage failures are told apart (full disk, busy, damaged, bug)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from lmgate.errors import InsufficientStorage, StorageUnavailable
from lmgate.store.db import DB_NAME, Database, storage_error
from lmgate.store.integrity import KEYS_MARKER, StateError, verify
from lmgate.store.keys import SECRET_FILE, KeyStore, NewKey, load_secret


def _with_key(data: Path) -> Path:
    """A data dir as `lmgate keys create` leaves it, with enough rows to span many pages."""
    db = Database(data)
    KeyStore(db, load_secret(data)).create(NewKey(name="alice"))
    db.transaction(
        [
            (
                "INSERT INTO model_profiles (model_key, load_config, updated_at) VALUES (?, ?, 0)",
                (f"model-{i}", "{" + '"x": "' + "y" * 400 + '"}'),
            )
            for i in range(400)
        ]
    )
    db.close()
    return data


def _rewrite(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(sql)
    conn.close()


def _empty(db: Path) -> None:
    db.write_bytes(b"")


def _missing(db: Path) -> None:
    db.unlink()


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(20_000))


def _truncated(db: Path) -> None:
    os.truncate(db, db.stat().st_size // 3)


def _bad_page(db: Path) -> None:
    with db.open("r+b") as file:
        file.seek(db.stat().st_size // 2 // 4096 * 4096)
        file.write(b"\xa5" * 4096)


def _replaced(db: Path) -> None:
    other = db.parent.parent / "other"
    Database(other).close()
    shutil.copyfile(other / DB_NAME, db)


def _emptied(db: Path) -> None:
    _rewrite(db, "DELETE FROM api_keys")


def _lost_row(db: Path) -> None:
    _rewrite(db, "DELETE FROM active_model")


def _directory(db: Path) -> None:
    db.unlink()
    db.mkdir()


# (damage, words of the message, whether opening the database refuses it too (cheap checks))
DAMAGES: list[tuple[Callable[[Path], None], str, bool]] = [
    (_empty, "is empty (0 bytes)", True),
    (_missing, "is missing", True),
    (_garbage, "not a SQLite database", True),
    (_truncated, "malformed", False),
    (_bad_page, "", False),
    (_replaced, "holds no managed keys", True),
    (_emptied, "holds no managed keys", True),
    (_lost_row, "lost the row of its table active_model", False),
    (_directory, "not a regular file", True),
]


@pytest.mark.parametrize(
    ("damage", "words", "on_open"), DAMAGES, ids=lambda v: getattr(v, "__name__", "")
)
def test_lost_or_damaged_state_is_refused_naming_the_file(
    tmp_path: Path, damage: Callable[[Path], None], words: str, on_open: bool
) -> None:
    data = _with_key(tmp_path / "data")
    db = data / DB_NAME
    damage(db)
    with pytest.raises(StateError) as refused:
        verify(data)
    message = str(refused.value)
    assert str(db.absolute()) in message and words in message
    assert f"lmgate reset --data-dir {data.absolute()}" in message
    assert "\n" not in message
    if on_open:
        before = db.read_bytes() if db.is_file() else None
        with pytest.raises(StateError, match="lmgate reset"):
            Database(data)
        assert (db.read_bytes() if db.is_file() else None) == before  # nothing made over it


def test_a_fresh_data_dir_and_a_sound_one_pass(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert verify(data) == [] and not data.exists()  # the check creates nothing
    Database(data).close()
    load_secret(data)
    assert verify(data) == []
    assert not (data / KEYS_MARKER).exists()  # no key made yet: no evidence of keys
    _with_key(data)
    assert verify(data) == [] and (data / KEYS_MARKER).exists()


def test_the_secret_alone_is_evidence_that_the_database_existed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Database(data).close()
    load_secret(data)
    _empty(data / DB_NAME)
    with pytest.raises(StateError, match=r"is empty \(0 bytes\).*keys\.secret is there"):
        verify(data)


def test_keys_made_before_the_marker_existed_get_it_on_open(tmp_path: Path) -> None:
    data = _with_key(tmp_path / "data")
    (data / KEYS_MARKER).unlink()
    Database(data).close()
    assert (data / KEYS_MARKER).exists()
    _missing(data / DB_NAME)
    (data / SECRET_FILE).unlink()
    with pytest.raises(StateError, match="managed keys were created"):
        Database(data)  # no secret, no database: the marker alone still refuses


def test_a_lost_or_damaged_secret_is_refused_while_keys_exist(tmp_path: Path) -> None:
    data = _with_key(tmp_path / "data")
    secret = data / SECRET_FILE
    secret.write_bytes(b"short")
    with pytest.raises(StateError, match="shorter than 32 bytes"):
        verify(data)
    secret.unlink()
    with pytest.raises(StateError, match=r"keys\.secret is missing"):
        verify(data)


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    db = Database(tmp_path)
    good = ("INSERT INTO model_profiles (model_key, updated_at) VALUES ('m', 0)", ())
    with pytest.raises(sqlite3.OperationalError):
        db.transaction([good, ("INSERT INTO no_such_table VALUES (1)", ())])
    assert db.query("SELECT count(*) FROM model_profiles")[0][0] == 0
    db.transaction([good])  # no transaction was left open
    assert db.query("SELECT count(*) FROM model_profiles")[0][0] == 1
    db.close()


def test_storage_failures_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    conn.execute("CREATE TABLE t (v BLOB)")
    conn.execute("PRAGMA max_page_count=3")  # SQLite's own SQLITE_FULL, as on a full disk
    with pytest.raises(sqlite3.OperationalError) as full:
        conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    error = storage_error(full.value, path)
    assert isinstance(error, InsufficientStorage) and error.status == 507
    assert error.code == "storage_full" and str(tmp_path) in error.message
    conn.execute("PRAGMA max_page_count=100000")
    conn.execute("CREATE TABLE u (v INTEGER UNIQUE)")

    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError) as busy:
        conn.execute("INSERT INTO t VALUES (1)")
    error = storage_error(busy.value, path)
    assert isinstance(error, StorageUnavailable) and error.status == 503
    assert error.headers == {"Retry-After": "1"}
    other.execute("ROLLBACK")

    with pytest.raises(sqlite3.OperationalError) as missing:
        conn.execute("SELECT * FROM nowhere")
    assert storage_error(missing.value, path).status == 503
    conn.execute("INSERT INTO u VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as bug:
        conn.execute("INSERT INTO u VALUES (1)")
    assert storage_error(bug.value, path).status == 500  # lmgate's own bug, as JSON
    conn.close()
    other.close()
