"""Settings precedence: flag > LMGATE_* env > .env > TypeScript-edition names > TOML > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmgate.settings import Settings, explicit_upstream, recording


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("LMGATE_") or name in {
            "LMSTUDIO_BASE_URL",
            "GATEWAY_HOST",
            "GATEWAY_PORT",
            "GATEWAY_API_KEY",
            "IP_ALLOWLIST",
            "REQUIRE_AUTH_FOR_HEALTH",
            "LOG_LEVEL",
            "PROXY_TIMEOUT",
            "PROXY_STREAM_TIMEOUT",
        }:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.upstream) == ("127.0.0.1", 1235, "http://127.0.0.1:1234")
    assert not s.auth_enabled
    assert not explicit_upstream(s)


def test_lists_from_env_comma_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMGATE_ALLOW", "10.0.0.0/8,fd00::/8")
    monkeypatch.setenv("LMGATE_API_KEYS", '["k1", "k2"]')
    s = Settings()
    assert s.allow == ["10.0.0.0/8", "fd00::/8"]
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"]
    assert s.auth_enabled


def test_bad_cidr_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMGATE_ALLOW", "10.0.0.0/99")
    with pytest.raises(ValueError):
        Settings()


def test_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "lmgate.toml"
    config.write_text(
        'port = 2000\nupstream = "http://file:1"\nrequireAuthForHealth = true\nhost = "127.0.0.2"\n'
    )
    (tmp_path / ".env").write_text("LMGATE_UPSTREAM=http://dotenv:1\nGATEWAY_PORT=3000\n")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", "http://legacy:1")
    s = Settings(config=config)
    assert s.port == 3000  # legacy .env name beats the file
    assert s.upstream == "http://dotenv:1"  # LMGATE_ in .env beats legacy names
    assert s.require_auth_for_health is True  # camelCase key from the file
    assert s.host == "127.0.0.2"
    monkeypatch.setenv("LMGATE_UPSTREAM", "http://env:1")
    assert Settings(config=config).upstream == "http://env:1"
    assert Settings(config=config, upstream="http://flag:1").upstream == "http://flag:1"
    assert explicit_upstream(Settings(config=config))


def test_typescript_edition_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMSTUDIO_BASE_URL", "http://10.0.0.5:1234")
    monkeypatch.setenv("GATEWAY_HOST", "0.0.0.0")
    monkeypatch.setenv("GATEWAY_PORT", "8080")
    monkeypatch.setenv("GATEWAY_API_KEY", "full-access")
    monkeypatch.setenv("IP_ALLOWLIST", "*")
    monkeypatch.setenv("REQUIRE_AUTH_FOR_HEALTH", "true")
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("PROXY_TIMEOUT", "1500")
    monkeypatch.setenv("PROXY_STREAM_TIMEOUT", "0")
    s = Settings()
    assert s.upstream == "http://10.0.0.5:1234"
    assert (s.host, s.port) == ("0.0.0.0", 8080)
    assert s.admin_key is not None and s.admin_key.get_secret_value() == "full-access"
    assert s.allow == ["0.0.0.0/0", "::/0"]
    assert s.require_auth_for_health is True
    assert s.log_level == "warning"
    assert s.request_timeout == 1.5
    assert s.stream_timeout is None


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMGATE_ADMIN_KEY", "super-secret-value")
    monkeypatch.setenv("LMGATE_METRICS_KEY", "scraper-secret-value")
    text = repr(Settings())
    assert "super-secret-value" not in text and "scraper-secret-value" not in text


def test_metrics_key_and_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().metrics_allow is None  # the same as --allow
    monkeypatch.setenv("LMGATE_METRICS_KEY", "scraper")
    monkeypatch.setenv("LMGATE_METRICS_ALLOW", "10.0.0.5, fd00::/8")
    s = Settings()
    assert s.auth_enabled and s.metrics_allow == ["10.0.0.5", "fd00::/8"]
    monkeypatch.setenv("LMGATE_METRICS_ALLOW", "*")
    assert Settings().metrics_allow == ["0.0.0.0/0", "::/0"]
    monkeypatch.setenv("LMGATE_METRICS_ALLOW", "")
    assert Settings().metrics_allow is None
    monkeypatch.setenv("LMGATE_METRICS_ALLOW", "10.0.0.0/40")
    with pytest.raises(ValueError):
        Settings()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        (" 2 min ", 120.0),
        ("5 minutes", 300.0),
        ("1 hour 30 mins", 5400.0),
        ("0", None),
        ("none", None),
        ("off", None),
    ],
)
def test_durations_take_units(
    monkeypatch: pytest.MonkeyPatch, text: str, seconds: float | None
) -> None:
    monkeypatch.setenv("LMGATE_REQUEST_TIMEOUT", text)
    monkeypatch.setenv("LMGATE_SYNC_INTERVAL", text if seconds else "1s")
    s = Settings()
    assert s.request_timeout == seconds
    assert s.sync_interval == (seconds or 1.0)


def test_bad_durations_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for text in ("10 fortnights", "5x", "m", "-3s", "0s", "1m-30s"):
        monkeypatch.setenv("LMGATE_LOAD_TIMEOUT", text)
        with pytest.raises(ValueError):
            Settings()


def test_batch_interval_in_ms_takes_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMGATE_DEBUG_STREAM_BATCH_MS", "0.1s")
    assert Settings().debug_stream_batch_ms == pytest.approx(100.0)


def test_edition_timeouts_stay_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXY_TIMEOUT", "1500")
    monkeypatch.setenv("PROXY_STREAM_TIMEOUT", "2m")
    s = Settings()
    assert (s.request_timeout, s.stream_timeout) == (1.5, 120.0)


@pytest.mark.parametrize("name", ["LOG_LEVEL", "LMGATE_LOG_LEVEL"])
@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("warn", "warning"),
        ("WARN", "warning"),
        ("error", "error"),
        ("debug", "debug"),
        ("info", "info"),
        ("warning", "warning"),
    ],
)
def test_edition_log_levels(
    monkeypatch: pytest.MonkeyPatch, name: str, given: str, level: str
) -> None:
    monkeypatch.setenv(name, given)
    assert Settings().log_level == level


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://127.0.0.1:1234", "http://127.0.0.1:1234"),
        ("127.0.0.1:1234", "http://127.0.0.1:1234"),
        ("gpu-box.lan:1234/", "http://gpu-box.lan:1234"),
        ("http://192.168.1.20:1234/v1", "http://192.168.1.20:1234"),
        ("HTTPS://box/v1/", "https://box"),
        ("http://box/lmstudio/v1", "http://box/lmstudio"),
        ("http://box:1234/api/v0", "http://box:1234"),
        ("box:1234/api/v1/", "http://box:1234"),
        ("http://[::1]:1234", "http://[::1]:1234"),
    ],
)
def test_upstream_urls_as_people_write_them(given: str, used: str) -> None:
    s = Settings(upstream=given)
    assert s.upstream_url == used


@pytest.mark.parametrize(
    "given", ["", "ftp://box:1234", "http://", "http://box:99999", "http://box?x=1", "a b:1"]
)
def test_unusable_upstreams_are_refused(given: str) -> None:
    with pytest.raises(ValueError):
        Settings(upstream=given)


def test_edition_configuration_keeps_its_admin_access(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GATEWAY_API_KEY", "a-long-random-key-ZmE3Nz")
    monkeypatch.setenv("IP_ALLOWLIST", "192.168.1.0/24,127.0.0.1")
    with recording() as origins:
        s = Settings()
    assert s.admin_allow == ["192.168.1.0/24", "127.0.0.1"] == s.allow
    assert origins["admin_allow"].kind == "derived"
    monkeypatch.delenv("IP_ALLOWLIST")
    assert Settings().admin_allow == ["0.0.0.0/0", "::/0"]  # the edition's default: everyone
    monkeypatch.setenv("LMGATE_ALLOW", "10.0.0.0/8")
    assert Settings().admin_allow == ["10.0.0.0/8"]
    monkeypatch.setenv("LMGATE_ADMIN_ALLOW", "127.0.0.1")
    with recording() as origins:
        assert Settings().admin_allow == ["127.0.0.1"]
    assert origins["admin_allow"].label == "LMGATE_ADMIN_ALLOW"
    monkeypatch.delenv("LMGATE_ADMIN_ALLOW")
    config = tmp_path / "c.toml"
    config.write_text('adminAllow = ["10.1.0.0/16"]\n')
    assert Settings(config=config).admin_allow == ["10.1.0.0/16"]


def test_lmgate_configuration_keeps_loopback_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMGATE_ADMIN_KEY", "a-long-random-key-ZmE3Nz")
    monkeypatch.setenv("IP_ALLOWLIST", "192.168.1.0/24")
    assert Settings().admin_allow == ["127.0.0.0/8", "::1/128"]


def test_origins_name_what_was_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('requireAuthForHealth = true\nsync_interval = "2s"\n')
    (tmp_path / ".env").write_text("LMGATE_UPSTREAM=http://dotenv:1\nGATEWAY_PORT=3000\n")
    monkeypatch.setenv("LMGATE_LOG_LEVEL", "debug")
    with recording() as origins:
        Settings(config=config, host="127.0.0.2")
    labels = {field: origin.label for field, origin in origins.items()}
    assert labels["host"] == "--host"
    assert labels["log_level"] == "LMGATE_LOG_LEVEL"
    assert labels["upstream"] == "LMGATE_UPSTREAM (in .env)"
    assert labels["port"] == "GATEWAY_PORT (in .env)"
    assert labels["require_auth_for_health"] == f"requireAuthForHealth in {config}"
    assert labels["sync_interval"] == f"sync_interval in {config}"
    assert origins["sync_interval"].raw == "2s"
