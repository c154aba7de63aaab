"""Exposure findings: public listeners, auth off, clear-text keys, an upstream open to the LAN."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from lmgate.guard import exposure
from lmgate.guard.exposure import listener_findings, upstream_findings, wide_listeners
from lmgate.settings import Settings
from tests.servers import ServerProcess

LAN = [ipaddress.ip_address("192.168.1.20"), ipaddress.ip_address("fd00::20")]
PUBLIC = [*LAN, ipaddress.ip_address("81.2.69.160")]


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(data_dir=tmp_path, **values)


def _topics(findings: list[exposure.Finding]) -> dict[str, str]:
    return {f.topic: f.level for f in findings}


def test_loopback_is_fine(tmp_path: Path) -> None:
    found = listener_findings(_settings(tmp_path), keys_required=False, addresses=PUBLIC)
    assert _topics(found) == {"listener": "ok"}


def test_public_address_no_auth_no_tls(tmp_path: Path) -> None:
    found = listener_findings(
        _settings(tmp_path, host="0.0.0.0"), keys_required=False, addresses=PUBLIC
    )
    assert _topics(found) == {"public-listener": "warn", "no-auth": "warn", "no-tls": "warn"}
    assert "81.2.69.160" in found[0].message


def test_lan_with_keys_and_tls(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, host="192.168.1.20", tls_cert=tmp_path / "c", tls_key=tmp_path / "k"
    )
    found = listener_findings(settings, keys_required=True, addresses=PUBLIC)
    assert _topics(found) == {"listener": "ok"}  # a specific LAN address: the public one is unused
    clear = listener_findings(_settings(tmp_path, host="::"), keys_required=True, addresses=LAN)
    assert _topics(clear) == {"no-tls": "warn"}


def test_wide_listeners_reads_listening_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def conn(ip: str, port: int, status: str = psutil.CONN_LISTEN) -> Any:
        return SimpleNamespace(status=status, laddr=SimpleNamespace(ip=ip, port=port))

    fake = [conn("127.0.0.1", 1234), conn("0.0.0.0", 1234), conn("::", 1234), conn("0.0.0.0", 99)]
    fake.append(conn("10.0.0.2", 1234, psutil.CONN_ESTABLISHED))
    monkeypatch.setattr(psutil, "net_connections", lambda kind: fake)
    assert wide_listeners(1234) == ["0.0.0.0:1234", ":::1234"]


def test_real_loopback_listener_is_not_wide() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert wide_listeners(sock.getsockname()[1]) == []


async def test_upstream_on_loopback_only_is_not_probed(tmp_path: Path) -> None:
    found = await upstream_findings(_settings(tmp_path, upstream="http://127.0.0.1:9"))
    assert _topics(found) == {"upstream-exposure": "ok"}


async def test_upstream_open_to_the_lan_without_a_token(
    tmp_path: Path, emulator: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exposure, "wide_listeners", lambda port: [f"0.0.0.0:{port}"])
    found = await upstream_findings(_settings(tmp_path, upstream=emulator.url))
    assert _topics(found) == {"upstream-bypass": "warn"}
    assert "Serve on Local Network" in found[0].message


def test_startup_warnings_on_loopback(tmp_path: Path) -> None:
    assert (
        exposure.startup_warnings(
            _settings(tmp_path, upstream="http://127.0.0.1:9"), keys_required=False
        )
        == []
    )
