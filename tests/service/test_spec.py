"""The env file a service runs with gives back exactly the settings that were checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dotenv import dotenv_values

from lmgate.service.spec import EnvValueError, build_spec, quote
from lmgate.settings import Settings, recording

GIVEN = {
    "LMGATE_HOST": "0.0.0.0",
    "LMGATE_PORT": "8443",
    "LMGATE_UPSTREAM": "http://user:pw@gpu-box.lan:1234/v1",
    "LMGATE_ADMIN_KEY": "Zq8vN3kLp0Xw7RtY2mBf5HcJ9sDg4AeU",
    "LMGATE_API_KEYS": "first key with spaces,second-key$HOME",
    "LMGATE_ALLOW": "192.168.1.0/24,fd00::/8",
    "LMGATE_REQUEST_TIMEOUT": "off",
    "LMGATE_STREAM_TIMEOUT": "10m",
    "LMGATE_LMSTUDIO_LOG_DIR": "off",
    "LMGATE_ON_DEMAND_LOAD": "true",
    "LMGATE_MODEL_MEMORY_BUDGET": "20GiB",
    "LMGATE_WAKE_MAC": "3C-7C-3F-12-34-56",
    "LMGATE_WAKE_TIMEOUT": "3m",
    "LMGATE_IDLE_SLEEP_AFTER": "30m",
    "LMGATE_IDLE_SLEEP_COMMAND": "ssh gpu-box 'sudo systemctl suspend'",
    "LMGATE_CORS_ORIGINS": "http://app.lan:3000",
}


def _settings(env: dict[str, str], tmp: Path) -> tuple[Settings, set[str]]:
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update({k: v for k, v in old.items() if not k.startswith("LMGATE_")} | env)
    cwd = Path.cwd()
    os.chdir(tmp)
    try:
        with recording() as origins:
            settings = Settings()
        return settings, set(origins)
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(old)


def test_env_file_round_trip(tmp_path: Path) -> None:
    settings, given = _settings(GIVEN, tmp_path)
    spec = build_spec(settings, given, data_dir=tmp_path / "data")
    service = tmp_path / "service"
    service.mkdir()
    (service / ".env").write_text(spec.env_file())
    # read back as lmgate reads a `.env`, with no LMGATE_* in the environment
    back, _ = _settings({}, service)
    for field in Settings.model_fields:
        if field == "data_dir":
            assert back.data_dir == tmp_path / "data"
        elif field != "lmstudio_log_dir":
            assert getattr(back, field) == getattr(settings, field), field
    assert back.lmstudio_log_dir is None
    assert back.request_timeout is None and back.stream_timeout == 600
    assert [k.get_secret_value() for k in back.api_keys] == [
        "first key with spaces",
        "second-key$HOME",
    ]
    assert back.idle_sleep_command == ["ssh", "gpu-box", "sudo systemctl suspend"]
    # systemd's EnvironmentFile= and python-dotenv read the same: bare words or '...'
    lines = dict(line.split("=", 1) for line in spec.env_file().splitlines() if "=" in line)
    assert lines["LMGATE_API_KEYS"] == "'first key with spaces,second-key$HOME'"
    assert lines["LMGATE_HOST"] == "0.0.0.0" and lines["LMGATE_WAKE_MAC"] == "3c:7c:3f:12:34:56"
    assert dotenv_values(service / ".env")["LMGATE_API_KEYS"] == (
        "first key with spaces,second-key$HOME"
    )


def test_secrets_are_masked_when_shown(tmp_path: Path) -> None:
    settings, given = _settings(GIVEN, tmp_path)
    spec = build_spec(settings, given, data_dir=tmp_path)
    shown = spec.env_file(show_secrets=False)
    secret = {e.name for e in spec.env if e.secret}
    assert secret == {"LMGATE_ADMIN_KEY", "LMGATE_API_KEYS", "LMGATE_UPSTREAM"}
    for value in ("Zq8vN3kLp0Xw7RtY2mBf5HcJ9sDg4AeU", "first key", "user:pw"):
        assert value not in shown and value in spec.env_file()


def test_values_an_env_file_cannot_hold() -> None:
    for bad in ("it's", "a\nb", "back\\slash"):
        with pytest.raises(EnvValueError):
            quote(bad)
    assert quote("plain-value_1.2:3/4") == "plain-value_1.2:3/4"
    assert quote("has space") == "'has space'"
    assert quote("") == "''"
