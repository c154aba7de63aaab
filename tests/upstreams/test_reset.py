"""An upstream that dies with requests it never accepted: its kernel resets their connections,
and each such request is admitted once more on another upstream, as a refused one is.

The dying upstream is a listening socket that answered its model list and then stopped
calling `accept`: the gateway's next connection completes in its backlog and the request is
written there, unread. Closing the socket resets it, as a killed server's would.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import orjson

from tests.servers import ADMIN_KEY, start_emulator, start_gateway
from tests.upstreams.conftest import SHARED, catalog, heavier_b, listed, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
_LISTEN = "0A"


class Backlogged:
    """Answers every request (`/v1/models` with `SHARED`, else 404) on a connection of its own,
    until `stop_accepting`; then connections wait unaccepted until `close` resets them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._accepting = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._accepting:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
                status, body = b"404 Not Found", b'{"error":"not found"}'
                if path == b"/v1/models":
                    status = b"200 OK"
                    body = orjson.dumps({"object": "list", "data": [{"id": SHARED}]})
                conn.sendall(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
                )

    def stop_accepting(self) -> None:
        self._accepting = False
        self._thread.join(10)

    def waiting(self) -> int:
        """Connections complete in the backlog, not accepted (the listener's receive queue)."""
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == self.port and fields[3] == _LISTEN:
                return int(fields[4].split(":")[1], 16)
        return 0

    def close(self) -> None:
        self.sock.close()


def test_a_request_reset_unread_goes_to_another_upstream(tmp_path: Path) -> None:
    a = start_emulator(tmp_path, "--no-sdk", "--models", catalog(tmp_path, "a", SHARED), name="a")
    b = Backlogged()
    config = heavier_b(tmp_path, a.url, b.url)
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "60"}
    gw = start_gateway(tmp_path, a.url, "--config", str(config), env=env)
    try:
        wait_for(listed(gw, SHARED))
        b.stop_accepting()
        answers: list[httpx.Response] = []
        body = {"model": SHARED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}

        def ask() -> None:
            answers.append(
                httpx.post(gw.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=30)
            )

        asker = threading.Thread(target=ask)
        asker.start()
        wait_for(lambda: b.waiting() >= 1)  # b (the heavier) was chosen; its request waits
        b.close()
        begun = time.monotonic()
        asker.join(30)
        assert not asker.is_alive()
        assert time.monotonic() - begun < 15
        [answer] = answers
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        metrics = httpx.get(gw.url + "/metrics", headers=ADMIN, timeout=10).text
        assert 'lmgate_upstream_requests_total{outcome="retried",upstream="b"} 1.0' in metrics
        assert 'lmgate_upstream_requests_total{outcome="ok",upstream="a"} 1.0' in metrics
    finally:
        gw.stop()
        b.close()
        a.stop()
