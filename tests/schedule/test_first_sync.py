"""A request that arrives before the gateway has read the upstream's model list for the first
time waits for that read and then takes its turn in the queue, rather than passing the
scheduler unseen (a busy one-slot model would then be asked for a second answer at once)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServerProcess, free_port, start_emulator, start_gateway

QWEN = "qwen/qwen3-4b"
KEY = "sk-first-sync-0123456789"
HOLD_S = 1.0  # model lists are answered this late while the front is young
LIST_PATHS = ("/api/v1/models", "/api/v0/models", "/v1/models")


class _SlowListFront(ThreadingHTTPServer):
    """Forwards everything to the emulator; a model-list read in its first seconds is held
    `HOLD_S` first, as a busy LM Studio answers its list late."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", free_port()), _Forward)
        self.upstream = upstream
        self.born = time.monotonic()
        self.client = httpx.Client(base_url=upstream, timeout=60)


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # close-delimited answers: streams pass as they come
    server: _SlowListFront

    def _forward(self) -> None:
        front = self.server
        young = time.monotonic() - front.born < HOLD_S * 4
        if self.command == "GET" and self.path.split("?")[0] in LIST_PATHS and young:
            time.sleep(HOLD_S)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        with front.client.stream(self.command, self.path, content=body, headers=headers) as up:
            self.send_response(up.status_code)
            for name, value in up.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.end_headers()
            try:
                for chunk in up.iter_raw():
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the gateway went away first

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def front(tmp_root: Path) -> Iterator[tuple[ServerProcess, _SlowListFront]]:
    emu = start_emulator(tmp_root, "--parallel", "1", "--token-delay", "0.1", name="emu-first")
    server = _SlowListFront(emu.url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield emu, server
    finally:
        server.shutdown()
        server.server_close()
        server.client.close()
        emu.stop()


def _stream(gw: ServerProcess, tokens: int, out: dict[str, Any]) -> None:
    body = {
        "model": QWEN,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": tokens,
    }
    headers = {"Authorization": f"Bearer {KEY}", "X-Lmgate-Queue-Comments": "off"}
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as answer:
        out["status"] = answer.status_code
        out["headers"] = answer.headers
        out["text"] = b"".join(answer.iter_raw())


def test_requests_before_the_first_model_list_wait_for_it_and_queue(
    tmp_root: Path, front: tuple[ServerProcess, _SlowListFront]
) -> None:
    emu, server = front
    env = {"LMGATE_API_KEYS": KEY, "LMGATE_SYNC_INTERVAL": "0.3"}
    gw = start_gateway(tmp_root, f"http://127.0.0.1:{server.server_address[1]}", env=env)
    try:
        with httpx.Client(base_url=emu.url) as up:
            seen = up.get("/__emulator/generations").json()
        first: dict[str, Any] = {}
        second: dict[str, Any] = {}
        one = threading.Thread(target=_stream, args=(gw, 20, first))
        one.start()
        time.sleep(0.3)
        two = threading.Thread(target=_stream, args=(gw, 3, second))
        two.start()
        one.join(60)
        two.join(60)
        assert first["status"] == second["status"] == 200
        assert b"[DONE]" in first["text"] and b"[DONE]" in second["text"]
        with httpx.Client(base_url=emu.url) as up:
            generations = up.get("/__emulator/generations").json()
        # The one-slot model never generated two answers at once: the second waited its turn.
        assert seen["peak_generating"].get(QWEN, 0) == 0
        assert generations["peak_generating"][QWEN] == 1, generations
        assert "x-queue-position" in second["headers"]
    finally:
        gw.stop()
