"""The command line: help, secure-by-default refusal, and configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _lmgate(
    *args: str, env: dict[str, str] | None = None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "lmgate", *args],
        env={**clean, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_documents_the_contract(tmp_path: Path) -> None:
    out = _lmgate("serve", "--help", cwd=tmp_path)
    assert out.returncode == 0
    for flag in ("--host", "--port", "--upstream", "--config", "--data-dir", "--allow"):
        assert flag in out.stdout
    top = _lmgate("--help", cwd=tmp_path)
    assert "LMGATE_ADMIN_KEY" in top.stdout and "LMGATE_API_KEYS" in top.stdout


def test_refuses_network_listener_without_keys(tmp_path: Path) -> None:
    out = _lmgate("serve", "--host", "0.0.0.0", "--port", "1", cwd=tmp_path)
    assert out.returncode == 2
    assert "LMGATE_ADMIN_KEY" in out.stderr and "--insecure-no-auth" in out.stderr


def test_invalid_config_is_reported(tmp_path: Path) -> None:
    out = _lmgate("serve", "--port", "1", env={"LMGATE_ALLOW": "not-a-cidr"}, cwd=tmp_path)
    assert out.returncode == 2
    assert "invalid configuration" in out.stderr


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    out = _lmgate("serve", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert out.returncode == 2
    assert "config file not found" in out.stderr
