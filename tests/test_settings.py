"""Settings precedence: flag > LMGATE_* env > .env > TypeScript-edition names > TOML > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmgate.settings import Settings, explicit_upstream


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
