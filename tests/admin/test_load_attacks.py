"""What an admin client can make the gateway hold through loads and downloads: huge and
garbage load bodies, and a flood of download requests, over real sockets, with the gateway's
memory and time bounded and another client served meanwhile."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import psutil

from tests.server_fixtures import emulator_fixture, gateway_fixture
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers

MIB = 2**20


slow_dl_emu = emulator_fixture(
    "--download-speed",
    "1000000",
    "--download-size",
    "10000000000",
    "--no-sdk",
    name="emu-attack-dl",
)
gw = gateway_fixture("slow_dl_emu", env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_LMS_PATH": "off"})


class Served:
    """Another, normal client asking for /health while the attack runs."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.codes: list[int] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                self.codes.append(client.get("/health").status_code)
                self.slowest = max(self.slowest, time.monotonic() - started)
                time.sleep(0.05)

    def __enter__(self) -> Served:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        deadline = time.monotonic() + 10
        while len(self.codes) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # served during the attack's end too
        self._stop.set()
        self._thread.join()


def _rss(server: ServerProcess) -> int:
    assert server.proc is not None
    return int(psutil.Process(server.proc.pid).memory_info().rss)


def _send_body(server: ServerProcess, size: int, chunk: bytes) -> bytes:
    """POST /admin/models/load with a body of `size` bytes sent as it is, and its answer."""
    head = (
        f"POST /admin/models/load HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < size:
                piece = chunk[: size - sent]
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass  # the gateway answered and closed before the end: what is wanted
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
    return answer


def test_huge_and_garbage_load_bodies(gw: ServerProcess) -> None:
    base = _rss(gw)
    started = time.monotonic()
    with Served(gw) as other:
        huge = _send_body(gw, 200 * MIB, b'{"modelKey": "' + b"a" * MIB)
        assert huge.startswith(b"HTTP/1.1 413"), huge[:200]
        nested = b"[" * 100_000
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=30) as adm:
            for body in (
                nested,
                b"\xff\xfe garbage",
                b'{"modelKey": "m", "loadConfig": {"contextLength": "' + b"9" * MIB + b'"}}',
                b'{"modelKey": "m", "loadConfig": {"gpu": {"ratio": [' + b"1," * 200_000 + b"1]}}}",
                b'{"modelKey": "' + b"x" * MIB + b'"}',
                b'{"modelKey": "m", "surface": "nope"}',
                b'{"modelKey": "m", "loadConfig": {"contextLength": 1e400}}',
            ):
                resp = adm.post(
                    "/admin/models/load", content=body, headers={"Content-Type": "application/json"}
                )
                assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
                assert "error" in resp.json()
                assert len(resp.content) < 64 * 1024  # the answer does not echo the body
    assert time.monotonic() - started < 60
    assert _rss(gw) - base < 150 * MIB
    assert other.codes and set(other.codes) <= {200} and other.slowest < 10


def test_a_flood_of_download_requests_is_bounded(
    gw: ServerProcess, slow_dl_emu: ServerProcess
) -> None:
    base = _rss(gw)
    started = time.monotonic()
    codes: list[int] = []
    with (
        Served(gw) as other,
        httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=30) as adm,
    ):
        for i in range(2000):
            resp = adm.post("/admin/models/download", json={"model": f"pub/model-{i}-GGUF"})
            codes.append(resp.status_code)
            assert (resp.status_code != 500 and "error" in resp.json()) or resp.is_success
        listed = adm.get("/admin/models/downloads").json()["downloads"]
        running = [d for d in listed if d["status"] not in ("failed", "cancelled", "completed")]
        for job in running:
            adm.post(f"/admin/models/downloads/{job['id']}/cancel")
    assert codes.count(429) > 1500, sorted(set(codes))  # at most a few run at once
    assert len(listed) <= 16 + 50
    assert time.monotonic() - started < 120
    assert _rss(gw) - base < 100 * MIB
    assert other.codes and set(other.codes) <= {200} and other.slowest < 10
