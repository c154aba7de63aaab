"""`lmgate_requests_in_flight` counts requests being served, never the scrape reading it."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, start_gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
USER = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def quiet_gateway(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_API_KEYS": API_KEY}
    server = start_gateway(tmp_root, emulator.url, env=env, data_dir=tmp_root / "in-flight")
    yield server
    server.stop()


def _in_flight(server: ServerProcess, path: str = "/metrics") -> float:
    text = httpx.get(server.url + path, headers=ADMIN, timeout=30).text
    found = re.search(r"^lmgate_requests_in_flight(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    assert found, text[:2000]
    return float(found.group(1))


def test_an_idle_gateway_reads_zero_however_metrics_is_spelled(
    quiet_gateway: ServerProcess,
) -> None:
    for path in ("/metrics", "/%6detrics", "/v1/../metrics"):
        assert _in_flight(quiet_gateway, path) == 0, path


def test_a_request_being_served_is_counted(quiet_gateway: ServerProcess) -> None:
    body = {
        "model": "qwen/qwen3-4b",
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": 600,
        "stream": True,
    }
    started = threading.Event()

    def stream() -> None:
        with httpx.stream(
            "POST", quiet_gateway.url + "/v1/chat/completions", json=body, headers=USER, timeout=60
        ) as resp:
            for _ in resp.iter_bytes():
                started.set()

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        assert started.wait(30)
        assert _in_flight(quiet_gateway) == 1
    finally:
        worker.join(60)
    deadline = time.monotonic() + 10
    while _in_flight(quiet_gateway) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _in_flight(quiet_gateway) == 0
