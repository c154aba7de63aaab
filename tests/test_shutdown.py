"""Stopping the gateway (SIGTERM) with answers in progress: listeners close at once, answers
finish within LMGATE_SHUTDOWN_GRACE, the rest end with an error and are recorded as such."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lmgate.store.db import Database
from tests.servers import ServerProcess, start_gateway

GRACE = 3.0
CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Hi"}]}


class Client(threading.Thread):
    """One request, its lines and when each arrived (monotonic)."""

    def __init__(self, url: str, request_id: str, *, stream: bool, headers: dict[str, str]):
        super().__init__(daemon=True)
        self.url = url
        self.request_id = request_id
        self.stream = stream
        self.headers = {"x-request-id": request_id, **headers}
        self.status = 0
        self.lines: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self.first = threading.Event()

    def run(self) -> None:
        try:
            with httpx.stream(
                "POST",
                self.url + "/v1/chat/completions",
                json={**CHAT, "stream": self.stream},
                headers=self.headers,
                timeout=60,
            ) as resp:
                self.status = resp.status_code
                for line in resp.iter_lines():
                    if line:
                        self.lines.append((time.monotonic(), line))
                        self.first.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.first.set()

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _refused_after(port: int, within: float) -> float | None:
    """Seconds until a new connection to `port` is refused, or None if it never was."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def _request_lines(log: str) -> dict[str, dict[str, Any]]:
    lines = {}
    for text in log.splitlines():
        if text.startswith("{") and '"event":"request"' in text:
            line = json.loads(text)
            lines[line["request_id"]] = line
    return lines


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_what_fits_the_grace_and_ends_the_rest(
    tmp_path: Path, emulator: ServerProcess, workers: int
) -> None:
    data = tmp_path / "data"
    Database(data).close()  # migrated once, before workers race to do it
    args = ("--workers", str(workers)) if workers > 1 else ()
    env = {"LMGATE_SHUTDOWN_GRACE": str(GRACE)}
    gw = start_gateway(tmp_path, emulator.url, *args, env=env, data_dir=data)
    assert gw.proc is not None
    try:
        short = Client(gw.url, "sd-short", stream=True, headers={"x-emulator-token-delay": "0.05"})
        long = Client(gw.url, "sd-long", stream=True, headers={"x-emulator-token-delay": "0.5"})
        plain = Client(gw.url, "sd-plain", stream=False, headers={"x-emulator-delay": "30"})
        clients = (short, long, plain)
        for client in clients:
            client.start()
        assert long.first.wait(15) and short.first.wait(15)
        time.sleep(0.3)  # the plain request is on its way upstream too
        signalled = time.monotonic()
        gw.proc.terminate()

        refused = _refused_after(gw.port, within=5.0)
        assert refused is not None, "new connections are still accepted after SIGTERM"
        assert refused < 2.5  # the supervisor looks at signals twice a second

        for client in clients:
            client.join(timeout=GRACE + 15)
            assert not client.is_alive()
            assert client.error is None, client.error

        # short enough for the grace: whole, untouched
        assert short.status == 200
        assert short.lines[-1][1] == "data: [DONE]"
        assert "error" not in short.text

        # a stream still running at the end of the grace: an error frame, in SSE framing
        assert long.status == 200
        assert "data: [DONE]" not in long.text
        ended_at, last = long.lines[-1]
        assert last.startswith("data: ")
        error = json.loads(last[6:])["error"]
        assert error["code"] == "gateway_shutting_down" and error["type"] == "server_error"
        assert GRACE - 0.5 <= ended_at - signalled <= GRACE + 3.0
        assert len(long.lines) >= 4  # it did stream during the grace

        # a plain answer not started by then: a 503 error body
        assert plain.status == 503
        assert json.loads(plain.text)["error"]["code"] == "gateway_shutting_down"

        gw.proc.wait(timeout=15)
        assert gw.proc.returncode == 0
        assert time.monotonic() - signalled < GRACE + 5.0

        lines = _request_lines(gw.logs())
        assert lines["sd-short"]["status"] == 200 and lines["sd-short"]["error"] is None
        for rid in ("sd-long", "sd-plain"):
            assert lines[rid]["status"] == 503, lines[rid]
            assert "shut down" in lines[rid]["error"]
        assert "shutdown_interrupted" in gw.logs()
    finally:
        gw.stop()


def test_uvicorn_waits_longer_than_the_grace() -> None:
    """uvicorn cancels what is left when its own limit is over, recording it as a success;
    lmgate's grace must end first."""
    from lmgate.serving import server_options
    from lmgate.settings import Settings

    for grace in (0.0, 3.0, 30.0):
        options = server_options(Settings(shutdown_grace=grace, data_dir=Path("/nonexistent")))
        assert options["timeout_graceful_shutdown"] >= grace + 2
