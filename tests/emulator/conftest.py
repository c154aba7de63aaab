"""Run the emulator as a real server in a subprocess on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

TOKEN = "sk-lm-Ab3dEf9h:Q1w2E3r4T5y6U7i8O9p0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Emulator:
    """A running emulator subprocess and its base URL."""

    proc: subprocess.Popen[str]
    url: str
    banner: str
    token: str | None = None

    def get(self, path: str) -> Any:
        return httpx.get(self.url + path, timeout=5).json()

    def post(self, path: str, body: Any) -> Any:
        return httpx.post(self.url + path, json=body, timeout=5).json()

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self.get("/__emulator/stats")
        return result

    def reset(self) -> None:
        httpx.post(self.url + "/__emulator/reset", timeout=5).raise_for_status()


def start_emulator(*args: str) -> Emulator:
    port = free_port()
    cmd = [sys.executable, "-m", "lmgate.emulator", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(url + "/lmstudio-greeting", timeout=1).json() == {"lmstudio": True}:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_emulator(proc)
            raise RuntimeError(f"emulator did not start: {cmd}")
        time.sleep(0.05)
    assert proc.stdout is not None
    return Emulator(proc, url, proc.stdout.readline().strip())


def stop_emulator(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Emulator]]:
    """Start extra emulators with custom flags; all are stopped after the test."""
    started: list[Emulator] = []

    def run(*args: str) -> Emulator:
        started.append(start_emulator(*args))
        return started[-1]

    yield run
    for emu in started:
        stop_emulator(emu.proc)


@pytest.fixture(scope="session")
def emulator_v04() -> Iterator[Emulator]:
    emu = start_emulator()
    yield emu
    stop_emulator(emu.proc)


@pytest.fixture
def emu(emulator_v04: Emulator) -> Emulator:
    """The shared 0.4 emulator, reset to its startup state for this test."""
    emulator_v04.reset()
    return emulator_v04


@pytest.fixture(scope="session")
def emu_v03() -> Iterator[Emulator]:
    emu = start_emulator("--version", "0.3", "--unknown-status", "404")
    yield emu
    stop_emulator(emu.proc)


@pytest.fixture(scope="session")
def emu_nojit() -> Iterator[Emulator]:
    emu = start_emulator("--no-jit", "--no-preload")
    yield emu
    stop_emulator(emu.proc)


@pytest.fixture(scope="session")
def emu_auth() -> Iterator[Emulator]:
    emu = start_emulator("--api-token", TOKEN)
    emu.token = TOKEN
    yield emu
    stop_emulator(emu.proc)


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.url, timeout=10) as client:
        yield client
