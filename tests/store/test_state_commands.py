"""`lmgate serve`, `keys`, `doctor` and `reset` on lost or damaged state, as an operator runs
them: one message naming the file and the way out, exit 2, no traceback, nothing overwritten;
`reset` moves the file aside and the next start works; a fresh data dir starts as ever."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerProcess, clean_env, free_port, start_gateway

DB = "lmgate.sqlite3"
DEAD = "http://127.0.0.1:9"


def lmgate(*args: str, data: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmgate", *args],
        env=clean_env(LMGATE_DATA_DIR=str(data)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def serve(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return lmgate("serve", "--port", str(free_port()), "--upstream", DEAD, *args, data=data)


def with_key(data: Path) -> Path:
    made = lmgate("keys", "create", "--name", "alice", data=data)
    assert made.returncode == 0, made.stderr
    return data


def _corrupt_page(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE filler (v TEXT)")
    conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 800,) for _ in range(300)])
    conn.close()
    with db.open("r+b") as file:
        file.seek(db.stat().st_size // 2 // 4096 * 4096)
        file.write(b"\x5a" * 4096)


def _blocked_migration(db: Path) -> None:
    """An old database (schema 3) on which the next migration cannot run."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA user_version=3")
    conn.execute("CREATE TABLE api_keys_new (x)")  # the name migration 4 builds its table in
    conn.close()


DAMAGES: dict[str, Callable[[Path], None]] = {
    "zero-bytes": lambda db: db.write_bytes(b""),
    "deleted": lambda db: db.unlink(),
    "garbage": lambda db: db.write_bytes(b"not a database at all\n" * 500),
    "torn-page": _corrupt_page,
    "failed-migration": _blocked_migration,
}


def assert_refused(out: subprocess.CompletedProcess[str], db: Path) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(db.absolute()) in lines[0] and "lmgate reset --data-dir" in lines[0]


@pytest.mark.parametrize("damage", DAMAGES)
def test_serve_refuses_lost_or_damaged_state(tmp_path: Path, damage: str) -> None:
    data = with_key(tmp_path / "data")
    db = data / DB
    DAMAGES[damage](db)
    before = db.read_bytes() if db.exists() else None
    started = time.monotonic()
    assert_refused(serve(data), db)
    assert time.monotonic() - started < 30
    assert (db.read_bytes() if db.exists() else None) == before  # left for a restore


def test_zero_byte_database_next_to_the_secret_alone_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert lmgate("keys", "list", data=data).returncode == 0  # made the database and secret
    (data / DB).write_bytes(b"")
    assert_refused(serve(data), data / DB)


def test_lan_listener_on_damaged_state_names_the_file_not_missing_keys(tmp_path: Path) -> None:
    data = with_key(tmp_path / "data")
    DAMAGES["garbage"](data / DB)
    out = serve(data, "--host", "0.0.0.0")
    assert_refused(out, data / DB)
    assert "no API key configured" not in out.stderr


def test_workers_refuse_in_the_parent_before_spawning(tmp_path: Path) -> None:
    data = with_key(tmp_path / "data")
    DAMAGES["zero-bytes"](data / DB)
    assert_refused(serve(data, "--workers", "2"), data / DB)


def test_keys_and_doctor_report_it_too(tmp_path: Path) -> None:
    data = with_key(tmp_path / "data")
    DAMAGES["deleted"](data / DB)
    for args in (("keys", "list"), ("keys", "create", "--name", "bob"), ("keys", "revoke", "x")):
        assert_refused(lmgate(*args, data=data), data / DB)
    assert not (data / DB).exists()  # no fresh database made over the lost one
    doctor = lmgate("doctor", "--upstream", DEAD, data=data)
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert f"[FAIL] state: the state database {(data / DB).absolute()} is missing" in doctor.stdout
    assert "auth is off" not in doctor.stdout


def test_reset_moves_the_database_aside_and_the_next_start_works(
    tmp_path: Path, emulator: ServerProcess
) -> None:
    data = with_key(tmp_path / "data")
    db = data / DB
    DAMAGES["garbage"](db)
    broken = db.read_bytes()
    out = lmgate("reset", data=data)
    assert out.returncode == 0, out.stderr
    assert "Managed keys are gone" in out.stdout and "lmgate keys create" in out.stdout
    aside = [p for p in data.iterdir() if p.name.startswith(f"{DB}.broken-")]
    assert len(aside) == 1 and aside[0].read_bytes() == broken
    assert str(aside[0]) in out.stdout
    assert (data / "keys.secret").exists()

    gateway = start_gateway(tmp_path, emulator.url, data_dir=data)
    try:
        assert httpx.get(gateway.url + "/v1/models").status_code == 200  # no keys: auth off
    finally:
        gateway.stop()
    logs = gateway.logs()
    assert "NOTE: the state was reset" in logs and "managed keys made before are gone" in logs
    assert lmgate("keys", "create", "--name", "fresh", data=data).returncode == 0
    assert lmgate("reset", data=data).returncode == 1  # sound now: nothing to reset


def test_reset_leaves_sound_state_alone_unless_forced(tmp_path: Path) -> None:
    data = with_key(tmp_path / "data")
    out = lmgate("reset", data=data)
    assert out.returncode == 1 and "--force" in out.stderr
    assert sorted(p.name for p in data.iterdir()) == ["keys.issued", "keys.secret", DB]
    forced = lmgate("reset", "--force", data=data)
    assert forced.returncode == 0, forced.stderr
    assert any(p.name.startswith(f"{DB}.broken-") for p in data.iterdir())
    listed = lmgate("keys", "list", "--json", data=data)
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"


def test_a_fresh_data_dir_starts_and_restarts_as_before(
    tmp_path: Path, emulator: ServerProcess
) -> None:
    data = tmp_path / "fresh"
    for _ in range(2):
        gateway = start_gateway(tmp_path, emulator.url, data_dir=data)
        try:
            assert httpx.get(gateway.url + "/v1/models").status_code == 200
        finally:
            gateway.stop()
        assert "NOTE" not in gateway.logs() and "Traceback" not in gateway.logs()
    assert (data / DB).stat().st_size > 0 and os.stat(data).st_mode & 0o077 == 0
