"""The command line: help, secure-by-default refusal, and configuration errors a person can act
on: one line per problem, naming what they typed, the bad value and what is accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


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


def _problems(out: subprocess.CompletedProcess[str]) -> list[str]:
    """The error lines, checked to be plain lines a person can read."""
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines, "no explanation printed"
    text = out.stderr.lower()
    for leak in ("pydantic", "traceback", "errors.pydantic.dev", "validation error for"):
        assert leak not in text, out.stderr
    return lines


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
    (line,) = _problems(out)
    assert "invalid configuration" in line
    assert "LMGATE_ALLOW=not-a-cidr" in line and "192.168.1.0/24" in line


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    out = _lmgate("serve", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    (line,) = _problems(out)
    assert "config file not found" in line


@pytest.mark.parametrize(
    ("args", "env", "named", "accepted"),
    [
        ((), {"LMGATE_PORT": "abc"}, "LMGATE_PORT=abc", "0 to 65535"),
        (("--port", "abc"), {}, "--port abc", "0 to 65535"),
        (("--port", "70000"), {}, "--port 70000", "0 to 65535"),
        ((), {"GATEWAY_PORT": "8o01"}, "GATEWAY_PORT=8o01", "0 to 65535"),
        (("--allow", "192.168.1.0/33"), {}, "--allow 192.168.1.0/33", "CIDR"),
        (("--allow", "10.0.0.0/8", "--allow", "10.1.2.300"), {}, "--allow 10.1.2.300", "CIDR"),
        ((), {"LMGATE_ADMIN_ALLOW": "lan"}, "LMGATE_ADMIN_ALLOW=lan", "CIDR"),
        ((), {"LMGATE_REQUEST_TIMEOUT": "ten minutes"}, "LMGATE_REQUEST_TIMEOUT=", "10m"),
        ((), {"LMGATE_CONNECT_TIMEOUT": "-5"}, "LMGATE_CONNECT_TIMEOUT=-5", "greater than 0"),
        ((), {"PROXY_TIMEOUT": "soon"}, "PROXY_TIMEOUT=soon", "milliseconds"),
        (("--log-level", "loud"), {}, "--log-level loud", "warn"),
        ((), {"LMGATE_INSECURE_NO_AUTH": "maybe"}, "LMGATE_INSECURE_NO_AUTH=maybe", "true or"),
        (("--upstream", "ftp://box:1234"), {}, "--upstream ftp://box:1234", "http://"),
        (("--upstream", "http://box:12x4"), {}, "--upstream http://box:12x4", "port"),
        (("--workers", "0"), {}, "--workers 0", "between 1 and 64"),
    ],
)
def test_each_problem_names_what_was_typed(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str, accepted: str
) -> None:
    out = _lmgate("serve", *args, env=env, cwd=tmp_path)
    (line,) = _problems(out)
    assert line.startswith("lmgate: invalid configuration: ")
    assert named in line and accepted in line, line


def test_every_problem_gets_its_line_and_secrets_stay_hidden(tmp_path: Path) -> None:
    env = {
        "LMGATE_PORT": "abc",
        "LMGATE_STREAM_TIMEOUT": "5x",
        "LMGATE_API_KEYS": '["unterminated-secret-key"',
    }
    out = _lmgate("serve", "--allow", "1.2.3.4/99", env=env, cwd=tmp_path)
    lines = _problems(out)
    assert len(lines) == 4
    joined = "\n".join(lines)
    for named in ("LMGATE_PORT=abc", "LMGATE_STREAM_TIMEOUT=5x", "--allow 1.2.3.4/99"):
        assert named in joined
    assert "LMGATE_API_KEYS=(hidden)" in joined and "unterminated-secret-key" not in joined


def test_toml_key_is_named_as_written(tmp_path: Path) -> None:
    config = tmp_path / "lmgate.toml"
    config.write_text('port = "x"\nrequestTimeout = "2 weeks"\nallow = ["10.0.0.0/8"]\n')
    out = _lmgate("doctor", "--config", str(config), cwd=tmp_path)
    lines = _problems(out)
    assert any("port = x in" in line and str(config) in line for line in lines), lines
    assert any("requestTimeout = '2 weeks' in" in line and "10m" in line for line in lines)


def test_durations_and_edition_levels_are_accepted(tmp_path: Path) -> None:
    """Values the TypeScript edition and people use: `LOG_LEVEL=warn`, timeouts with units."""
    env = {
        "LOG_LEVEL": "warn",
        "LMGATE_REQUEST_TIMEOUT": "10m",
        "LMGATE_STREAM_TIMEOUT": "1h30m",
        "LMGATE_CONNECT_TIMEOUT": "1.5s",
        "LMGATE_HEADER_TIMEOUT": "500ms",
        "PROXY_TIMEOUT": "0",
    }
    script = (
        "from lmgate.cli.serve import load_settings; s = load_settings(); "
        "print(s.log_level, s.request_timeout, s.stream_timeout, s.connect_timeout, "
        "s.header_timeout)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["warning", "600.0", "5400.0", "1.5", "0.5"]
