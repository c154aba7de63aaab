"""`--json` on every `models` and `keys` command, the seven inference defaults of `models
activate`, `models profile get|set|delete` and `models download --wait`: the real command line
against a real gateway and emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from lmgate.cli.keys import keys_app
from lmgate.cli.models import models_app
from tests.server_fixtures import emulator_fixture, gateway_fixture
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers

# 10 s a download: long enough for a second command line to start and cancel one that runs.
emu = emulator_fixture(
    "--download-speed", "15000000", "--download-size", "150000000", name="emu-cli"
)
gw = gateway_fixture(
    "emu", env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_DOWNLOAD_POLL_SECONDS": "0.2"}
)


def _lmgate(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "lmgate", *args],
        env={**clean, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _models(gw: ServerProcess, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"LMGATE_URL": gw.url, "LMGATE_ADMIN_KEY": ADMIN_KEY}
    return _lmgate("models", *args, cwd=tmp, env=env)


def _json(out: subprocess.CompletedProcess[str]) -> Any:
    """stdout holds exactly one JSON document and nothing else."""
    return json.loads(out.stdout)


def _commands(app: typer.Typer) -> Iterator[tuple[str, Any]]:
    group: Any = typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group of its own (`models profile`)
            for sub, inner in command.commands.items():
                yield f"{name} {sub}", inner
        else:
            yield name, command


@pytest.mark.parametrize("app", [models_app, keys_app], ids=["models", "keys"])
def test_every_command_has_json(app: typer.Typer) -> None:
    found = list(_commands(app))
    assert len(found) >= 5
    for name, command in found:
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert "--json" in options, f"{name} has no --json"


def test_activate_takes_all_seven_defaults(gw: ServerProcess, tmp_path: Path) -> None:
    args = [
        "activate", "qwen/qwen3-4b", "--temperature", "0.3", "--max-tokens", "256",
        "--top-p", "0.9", "--top-k", "40", "--repeat-penalty", "1.1",
        "--stop", "###", "--stop", "END", "--no-stream",
    ]  # fmt: skip
    out = _models(gw, tmp_path, *args, "--json")
    assert out.returncode == 0, out.stderr
    body = _json(out)
    assert body["status"] == "activated" and body["modelKey"] == "qwen/qwen3-4b"
    assert body["defaultInference"] == {
        "temperature": 0.3,
        "maxTokens": 256,
        "topP": 0.9,
        "topK": 40,
        "repeatPenalty": 1.1,
        "stopStrings": ["###", "END"],
        "stream": False,
    }
    state = httpx.get(gw.url + "/admin/state", headers=admin_headers()).json()
    assert state["defaultInference"]["stopStrings"] == ["###", "END"]
    human = _models(gw, tmp_path, "activate", "qwen/qwen3-4b", "--stream")
    assert human.returncode == 0 and "activated" in human.stdout
    assert "stream=yes" in human.stdout


def test_profile_get_set_delete(gw: ServerProcess, tmp_path: Path) -> None:
    model = "google/gemma-3-1b"
    out = _models(
        gw, tmp_path, "profile", "set", model, "--context-length", "8192",
        "--temperature", "0.5", "--stop", "STOP", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    body = _json(out)
    assert body["modelKey"] == model and body["loadConfig"] == {"contextLength": 8192}
    assert body["defaultInference"] == {"temperature": 0.5, "stopStrings": ["STOP"]}
    got = _json(_models(gw, tmp_path, "profile", "get", model, "--json"))
    assert got["loadConfig"] == {"contextLength": 8192}
    text = _models(gw, tmp_path, "profile", "get", model)
    assert "contextLength=8192" in text.stdout and "temperature=0.5" in text.stdout
    deleted = _models(gw, tmp_path, "profile", "delete", model, "--json")
    assert _json(deleted) == {"status": "deleted", "modelKey": model}
    missing = _models(gw, tmp_path, "profile", "get", model, "--json")
    assert missing.returncode == 1
    assert _json(missing)["error"]["code"] == "profile_not_found"


def test_download_wait_json_and_list(gw: ServerProcess, tmp_path: Path) -> None:
    out = _models(gw, tmp_path, "download", "acme/cli-model-1b", "--wait", "--json")
    assert out.returncode == 0, out.stderr
    job = _json(out)
    assert job["status"] == "completed" and job["downloadedBytes"] == 150_000_000
    listed = _json(_models(gw, tmp_path, "downloads", "--json"))
    assert any(j["id"] == job["id"] for j in listed["downloads"])
    table = _models(gw, tmp_path, "downloads")
    assert job["id"] in table.stdout and "completed" in table.stdout
    human = _models(gw, tmp_path, "download", "acme/cli-model-1b")
    assert human.returncode == 0 and "already_downloaded" in human.stdout
    started = _json(_models(gw, tmp_path, "download", "acme/other-2b", "--json"))
    assert started["status"] == "downloading"
    cancelled = _models(gw, tmp_path, "download-cancel", started["id"], "--json")
    body = _json(cancelled)
    assert body["status"] == "cancelled" and body["upstreamStopped"] is False


def test_download_on_an_upstream_without_the_api(gateway03: ServerProcess, tmp_path: Path) -> None:
    out = _models(gateway03, tmp_path, "download", "acme/x", "--wait", "--json")
    assert out.returncode == 1
    assert _json(out)["error"]["code"] == "not_implemented"
    assert "501" in out.stderr


def test_load_and_unload_json(gw: ServerProcess, tmp_path: Path) -> None:
    loaded = _json(_models(gw, tmp_path, "load", "google/gemma-3-1b", "--json"))
    assert loaded["status"] == "loaded" and loaded["instanceId"]
    unloaded = _json(_models(gw, tmp_path, "unload", "google/gemma-3-1b", "--json"))
    assert unloaded["status"] == "unloaded"
    listed = _json(_models(gw, tmp_path, "list", "--json"))
    assert isinstance(listed["models"], list)


def test_keys_json(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    created = _lmgate("keys", "create", "--name", "ci", "--json", *data, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = _json(created)
    assert key["key"].startswith("lmg_") and key["name"] == "ci" and key["status"] == "active"
    shown = _json(_lmgate("keys", "show", "ci", "--json", *data, cwd=tmp_path))
    assert shown["id"] == key["id"] and "key" not in shown
    listed = _json(_lmgate("keys", "list", "--json", *data, cwd=tmp_path))
    assert [k["id"] for k in listed] == [key["id"]]
    rotated = _json(_lmgate("keys", "rotate", "ci", "--json", *data, cwd=tmp_path))
    assert rotated["key"] != key["key"] and rotated["id"] == key["id"]
    revoked = _json(_lmgate("keys", "revoke", "ci", "--json", *data, cwd=tmp_path))
    assert revoked["status"] == "revoked"
    missing = _lmgate("keys", "show", "nobody", "--json", *data, cwd=tmp_path)
    assert missing.returncode == 1 and "nobody" in _json(missing)["error"]["message"]
