"""Command-line listings: ids and model keys whole at any width and through a pipe, `--json`
on every list, no Python reprs, and a missing admin key named with its fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import ADMIN_KEY, ServerProcess


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    clean.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "lmgate", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("columns", [None, "80", "60"])
def test_key_ids_are_never_cut(tmp_path: Path, columns: str | None) -> None:
    env = {"LMGATE_DATA_DIR": str(tmp_path)} | ({"COLUMNS": columns} if columns else {})
    for name in ("alice-with-a-rather-long-name", "bob"):
        made = _run("keys", "create", "--name", name, "--models", "qwen*,nomic*", env=env)
        assert made.returncode == 0, made.stderr
    listed = json.loads(_run("keys", "list", "--json", env=env).stdout)
    ids = [k["id"] for k in listed]
    table = _run("keys", "list", env=env)
    assert table.returncode == 0, table.stderr
    for key_id in ids:
        assert key_id in table.stdout, table.stdout
    assert "…" not in table.stdout
    if columns:
        assert max(len(line) for line in table.stdout.splitlines()) <= int(columns)


def test_models_list_piped_is_whole_and_has_no_reprs(gateway: ServerProcess) -> None:
    env = {"LMGATE_URL": gateway.url, "LMGATE_ADMIN_KEY": ADMIN_KEY}
    profile = {"loadConfig": {"gpu": {"ratio": 0.5}}, "defaultInference": {"stopStrings": ["X"]}}
    key = "text-embedding-nomic-embed-text-v1.5"
    put = httpx.put(
        f"{gateway.url}/admin/models/{key}/profile",
        json=profile,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert put.status_code == 200, put.text
    out = _run("models", "list", env=env)
    assert out.returncode == 0, out.stderr
    assert key in out.stdout and "…" not in out.stdout
    assert "{'" not in out.stdout and "['" not in out.stdout  # no Python reprs
    assert 'gpu={"ratio":0.5}' in out.stdout
    data = json.loads(_run("models", "list", "--json", env=env).stdout)
    assert any(m["key"] == key for m in data["models"])


@pytest.mark.parametrize("command", [("models", "list"), ("blocks", "list")])
def test_a_missing_admin_key_names_the_fix(
    gateway: ServerProcess, command: tuple[str, ...]
) -> None:
    out = _run(*command, env={"LMGATE_URL": gateway.url})
    assert out.returncode == 1
    assert "LMGATE_ADMIN_KEY" in out.stderr and "--admin-key" in out.stderr
    assert not re.search(r"Traceback", out.stderr)
