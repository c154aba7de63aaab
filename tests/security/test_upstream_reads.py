"""lmgate's own reads from the upstream (capability probes, the model-list sync, `/ready`,
`/admin/models`) are capped: an upstream answering its model list with 50 MB costs the gateway
a bounded amount of memory and time, gives a clear error, and other clients are served."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from lmgate.upstream.bounded import CONTROL_READ_LIMIT
from tests.servers import ADMIN_KEY, ServerProcess, start_gateway

HUGE = 50 * 1024 * 1024
LIMIT_MIB = 12 * CONTROL_READ_LIMIT / 2**20  # buffers of the cap at once; never whole lists
CHUNK = 1024 * 1024


def _listing(key: str, entry: bytes) -> Iterator[bytes]:
    """A valid JSON listing of about HUGE bytes, made as it is sent."""
    yield b'{"' + key.encode() + b'": ['
    block = b",".join([entry] * (CHUNK // len(entry)))
    for i in range(HUGE // len(block)):
        yield (b"," if i else b"") + block
    yield b"]}"


class HugeUpstream(BaseHTTPRequestHandler):
    """Answers like LM Studio, except that every model list is 50 MB."""

    with_length = True
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/lmstudio-greeting":
            self._send([b'{"lmstudio": true}'])
            return
        key = "models" if self.path == "/api/v1/models" else "data"
        entry = b'{"key": "m", "id": "m", "type": "llm", "state": "loaded"}'
        self._send(list(_listing(key, entry)) if self.with_length else _listing(key, entry))

    def _send(self, parts: Any) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if isinstance(parts, list):
            self.send_header("Content-Length", str(sum(len(p) for p in parts)))
        else:
            self.send_header("Connection", "close")  # the body ends when the socket does
            self.close_connection = True
        self.end_headers()
        try:
            for part in parts:
                self.wfile.write(part)
        except OSError:
            pass  # the gateway stopped reading, as it should

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(params=[True, False], ids=["content-length", "until-close"])
def huge_upstream(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (HugeUpstream,), {"with_length": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class PeakRss:
    """Samples a process's resident memory in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def test_a_50_mb_model_list_costs_bounded_memory_and_time(
    tmp_path: Path, huge_upstream: str
) -> None:
    gateway: ServerProcess = start_gateway(
        tmp_path,
        huge_upstream,
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.2"},
    )
    admin = httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    try:
        assert gateway.proc is not None
        start_rss = psutil.Process(gateway.proc.pid).memory_info().rss
        rss = PeakRss(gateway.proc.pid)
        began = time.monotonic()
        time.sleep(1.0)  # the sync loop meets the huge lists a few times on its own
        for _ in range(5):
            models = admin.get("/admin/models")
            assert models.status_code == 200
            assert "larger than" in models.json()["error"], models.text
            upstream = admin.get("/admin/upstream", params={"refresh": "true"}).json()
            assert "larger than" in str(upstream["lastError"]) + str(upstream["syncError"])
            ready = admin.get("/ready")
            assert ready.status_code == 503 and "larger than" in ready.json()["error"]["message"]
            quick = time.monotonic()
            assert httpx.get(gateway.url + "/health").status_code == 200
            assert time.monotonic() - quick < 2.0  # other clients are served meanwhile
        elapsed = time.monotonic() - began
        peak = rss.stop()
        grown = (peak - start_rss) / 2**20
        # Whole lists read and parsed took 1.4 GiB and almost two minutes here (50 MB, four
        # probes at once, the parsed objects); capped reads hold a few buffers of the cap.
        assert grown < LIMIT_MIB, f"RSS grew {grown:.0f} MiB"
        assert elapsed < 30, f"{elapsed:.1f} s"
        print(f"peak RSS growth {grown:.1f} MiB over {elapsed:.1f} s")
    finally:
        admin.close()
        gateway.stop()
