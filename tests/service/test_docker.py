"""The Dockerfile and compose.yaml against the package they run (nothing is built): the
entry point is the `lmgate` console script, the command and flags exist, every LMGATE_* name
is a real setting, and the health check answers against a real gateway."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import typer
import yaml

from lmgate.cli import app
from lmgate.settings import Settings
from tests.servers import ServerProcess, clean_env, free_port

REPO = Path(__file__).resolve().parents[2]
FIELDS = {f"LMGATE_{name.upper()}" for name in Settings.model_fields}


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if line.endswith("\\"):
            continue
        word, _, rest = pending.strip().partition(" ")
        lines.append((word.upper(), rest.strip()))
        pending = ""
    return lines


def _one(name: str) -> str:
    found = [args for word, args in _instructions() if word == name]
    assert len(found) == 1, (name, found)
    return found[0]


def _env() -> dict[str, str]:
    values: dict[str, str] = {}
    for word, args in _instructions():
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                values[key] = value
    return values


def test_entry_point_is_the_console_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entry = json.loads(_one("ENTRYPOINT"))
    assert entry == ["lmgate"] and scripts["lmgate"] == "lmgate.cli:main"
    command = json.loads(_one("CMD"))
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert command[0] in group.commands
    options = {opt for p in group.commands[command[0]].params for opt in p.opts}
    for word in command[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in options, word
    assert _one("FROM").startswith("python:") and _one("FROM").endswith("-slim")


def test_env_names_are_settings() -> None:
    env = _env()
    for name in env:
        if name.startswith("LMGATE_"):
            assert name in FIELDS, name
    assert env["LMGATE_HOST"] == "0.0.0.0"
    assert json.loads(_one("VOLUME")) == [env["LMGATE_DATA_DIR"]]
    assert _one("EXPOSE") == env["LMGATE_PORT"]
    assert _one("USER") not in ("root", "0")
    # the sources it copies exist, and what it leaves out is not needed to install
    for word, args in _instructions():
        if word == "COPY":
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), source
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and "src" not in ignored


def test_compose_requires_a_key_and_uses_real_settings() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    service = compose["services"]["lmgate"]
    assert service["build"] == "."
    environment = service["environment"]
    for name in environment:
        assert name in FIELDS, name
    assert ":?" in environment["LMGATE_ADMIN_KEY"]  # compose refuses to start without it
    env = _env()
    assert any(v.endswith(":" + env["LMGATE_DATA_DIR"]) for v in service["volumes"])
    assert any(p.endswith(":" + env["LMGATE_PORT"]) for p in service["ports"])


def test_health_check_against_a_real_gateway(open_gateway: ServerProcess) -> None:
    argv = json.loads(_one("HEALTHCHECK").split(" CMD ", 1)[1])
    assert argv[0] == "python" and "/health" in argv[-1]
    run = [sys.executable, *argv[1:]]
    healthy = subprocess.run(
        run, env=clean_env(LMGATE_PORT=str(open_gateway.port)), timeout=30, check=False
    )
    assert healthy.returncode == 0
    dead = subprocess.run(
        run,
        env=clean_env(LMGATE_PORT=str(free_port())),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert dead.returncode != 0
