"""Gateways for the attack suite, each a real `lmgate serve` on a loopback port.

`target` is the main one: small input limits so attacks are cheap to send, damping off so
hundreds of bad keys do not lock the suite out. `edge` has the admin allowlist, a trusted
proxy, CORS and damping switched on. `scrape` has a metrics key and its own allowlist apart
from the admin one. Clients pick their source address inside 127.0.0.0/8 to play different
machines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ADMIN_KEY, API_KEY, METRICS_KEY, ServerProcess, start_gateway

TARGET_ENV = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": API_KEY,
    "LMGATE_METRICS_KEY": METRICS_KEY,
    "LMGATE_AUTH_FAIL_LIMIT": "0",
    "LMGATE_MAX_BODY_BYTES": "65536",
    "LMGATE_MAX_HEADER_BYTES": "8192",
    "LMGATE_HEADER_TIMEOUT": "1",
    "LMGATE_BODY_TIMEOUT": "1",
    "LMGATE_MAX_JSON_DEPTH": "32",
}


@pytest.fixture(scope="session")
def target(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    server = start_gateway(tmp_root, emulator.url, env=TARGET_ENV, data_dir=tmp_root / "target")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def edge(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_API_KEYS": API_KEY,
        "LMGATE_ADMIN_ALLOW": "127.0.0.2",
        "LMGATE_TRUSTED_PROXIES": "127.0.0.3",
        "LMGATE_CORS_ORIGINS": "http://app.lan:3000",
        "LMGATE_AUTH_FAIL_LIMIT": "5",
        "LMGATE_AUTH_BLOCK_SECONDS": "2",
    }
    server = start_gateway(tmp_root, emulator.url, env=env, data_dir=tmp_root / "edge")
    yield server
    server.stop()


# Sources in 127.0.0.0/8 standing for machines: the operator's, Prometheus's, anyone else's.
OPERATOR, PROMETHEUS, PROXY, STRANGER = "127.0.0.2", "127.0.0.4", "127.0.0.3", "127.0.0.6"


@pytest.fixture(scope="session")
def scrape(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_API_KEYS": API_KEY,
        "LMGATE_METRICS_KEY": METRICS_KEY,
        "LMGATE_ADMIN_ALLOW": OPERATOR,
        "LMGATE_METRICS_ALLOW": f"{PROMETHEUS},10.20.0.0/16",
        "LMGATE_TRUSTED_PROXIES": PROXY,
        "LMGATE_AUTH_FAIL_LIMIT": "0",
    }
    server = start_gateway(tmp_root, emulator.url, env=env, data_dir=tmp_root / "scrape")
    yield server
    server.stop()
