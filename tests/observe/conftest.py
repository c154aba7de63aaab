"""An emulator and a gateway of their own for the observability tests, so counts are exact.

Each test that counts uses its own inference key (`api-key-N` in events, metrics, usage):
`KEYS[n]` is the key, `key_name(n)` the name the gateway gives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway

KEYS = {n: f"observe-key-{n}-0123456789abcdef" for n in range(1, 7)}
SETTINGS = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": ",".join(KEYS.values()),
    "LMGATE_USAGE_FLUSH_SECONDS": "0.2",
}


def key_name(n: int) -> str:
    return f"api-key-{n}"


@pytest.fixture(scope="session")
def obs_emulator(tmp_root: Path) -> Iterator[ServerProcess]:
    server = start_emulator(tmp_root, "--token-delay", "0.002", name="obs-emulator")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def obs_log(tmp_root: Path) -> Path:
    """The LM Studio log file the observed gateway follows."""
    path = tmp_root / "obs-lmstudio-logs" / "2026-11" / "2026-11-30.1.log"
    path.parent.mkdir(parents=True)
    path.write_text("")
    return path


@pytest.fixture(scope="session")
def observed(tmp_root: Path, obs_emulator: ServerProcess, obs_log: Path) -> Iterator[ServerProcess]:
    env = {
        **SETTINGS,
        "LMGATE_LMSTUDIO_LOG_DIR": str(obs_log.parent.parent),
        "LMGATE_LMSTUDIO_LOG_POLL_SECONDS": "0.05",
    }
    server = start_gateway(tmp_root, obs_emulator.url, env=env)
    yield server
    server.stop()


def client(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture
def obs_admin(observed: ServerProcess) -> Iterator[httpx.Client]:
    with client(observed, ADMIN_KEY) as c:
        yield c


@pytest.fixture
def direct(obs_emulator: ServerProcess) -> Iterator[httpx.Client]:
    """The emulator itself: the same requests without lmgate, and its test hooks."""
    with httpx.Client(base_url=obs_emulator.url, timeout=30) as c:
        yield c
