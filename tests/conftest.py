"""Session-wide real servers: one emulator (LM Studio 0.4) and gateways in front of it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lmgate.demo import LM_STUDIO_ENV
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, start_emulator, start_gateway


@pytest.fixture(scope="session", autouse=True)
def no_lm_studio() -> Iterator[str]:
    """Where demo mode looks for LM Studio, for every gateway the tests start: a port bound
    here and never listened on, so whatever runs on this machine's port 1234 (a real LM
    Studio, another emulator) cannot change what a test sees."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        os.environ[LM_STUDIO_ENV] = url
        try:
            yield url
        finally:
            os.environ.pop(LM_STUDIO_ENV, None)


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def emulator(tmp_root: Path) -> Iterator[ServerProcess]:
    server = start_emulator(tmp_root, "--token-delay", "0.005", "--no-sdk")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    """A gateway with an admin key and an inference key."""
    server = start_gateway(
        tmp_root,
        emulator.url,
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_API_KEYS": f"{API_KEY},second-key-abcdef"},
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def open_gateway(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    """A gateway with no keys (loopback only), as a newcomer first runs it."""
    server = start_gateway(tmp_root, emulator.url)
    yield server
    server.stop()


@pytest.fixture
def admin(gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
def user(gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
def upstream(emulator: ServerProcess) -> Iterator[httpx.Client]:
    """Direct access to the emulator, including its `/__emulator/*` test hooks."""
    with httpx.Client(base_url=emulator.url, timeout=30) as client:
        client.delete("/__emulator/requests")
        yield client


@pytest.fixture
def no_active_model(admin: httpx.Client) -> Iterator[None]:
    """Start and end with nothing active on the shared gateway."""
    active = admin.get("/admin/state").json()["activeModel"]
    if active:
        admin.post("/admin/models/unload", json={"modelKey": active})
    yield
    active = admin.get("/admin/state").json()["activeModel"]
    if active:
        admin.post("/admin/models/unload", json={"modelKey": active})


@pytest.fixture(scope="session")
def emulator03(tmp_root: Path) -> Iterator[ServerProcess]:
    """LM Studio 0.3: no REST v1, so no model management over HTTP."""
    server = start_emulator(
        tmp_root, "--version", "0.3", "--token-delay", "0.005", "--no-sdk", name="emu03"
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway03(tmp_root: Path, emulator03: ServerProcess) -> Iterator[ServerProcess]:
    server = start_gateway(tmp_root, emulator03.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY})
    yield server
    server.stop()


@pytest.fixture
def admin03(gateway03: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=gateway03.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as client:
        active = client.get("/admin/state").json()["activeModel"]
        if active:
            client.post("/admin/models/unload", json={"modelKey": active})
        yield client
