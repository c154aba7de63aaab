"""`lmgate doctor` on good and bad setups: it names each problem and exits non-zero."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from tests.security.tools import lmgate_cli
from tests.servers import ServerProcess, free_port


def test_healthy_loopback_setup(tmp_path: Path, emulator: ServerProcess) -> None:
    out = lmgate_cli("doctor", "--upstream", emulator.url, data_dir=tmp_path / "data")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ ok ] upstream:" in out.stdout and "lmstudio-0.4+" in out.stdout
    assert "[ ok ] listener: listens on loopback only" in out.stdout
    assert "[WARN]" not in out.stdout and "[FAIL]" not in out.stdout


def test_open_permissions_and_missing_upstream(tmp_path: Path, emulator: ServerProcess) -> None:
    data = tmp_path / "data"
    made = lmgate_cli("keys", "create", "--name", "x", data_dir=data)
    assert made.returncode == 0
    os.chmod(data / "lmgate.sqlite3", 0o644)
    os.chmod(data / "keys.secret", 0o640)
    dead = f"http://127.0.0.1:{free_port()}"
    out = lmgate_cli("doctor", "--upstream", dead, "--json", data_dir=data)
    assert out.returncode == 1
    findings = orjson.loads(out.stdout)
    failed = {(f["topic"], f["level"]) for f in findings if f["level"] != "ok"}
    assert ("permissions", "fail") in failed and ("upstream", "fail") in failed
    assert any("chmod 600" in f["message"] and "keys.secret" in f["message"] for f in findings)


def test_network_listener_without_keys_or_tls(tmp_path: Path, emulator: ServerProcess) -> None:
    out = lmgate_cli("doctor", "--host", "0.0.0.0", "--upstream", emulator.url, data_dir=tmp_path)
    assert out.returncode == 1
    assert "[WARN] no-auth:" in out.stdout and "[WARN] no-tls:" in out.stdout


def test_invalid_configuration(tmp_path: Path) -> None:
    out = lmgate_cli(
        "doctor", "--upstream", "http://127.0.0.1:9", "--tls-cert", "x.pem", data_dir=tmp_path
    )
    assert out.returncode == 2 and "invalid configuration" in out.stderr
