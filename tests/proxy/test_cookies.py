"""The gateway keeps no cookies of its own: what an upstream sets for one client goes to that
client, and never rides along on another client's request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerProcess, start_gateway


class _CookieUpstream(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:
        _CookieUpstream.seen.append(self.headers.get("Cookie"))
        body = b'{"object":"list","data":[]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "session=first-client-secret; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def cookie_gateway(tmp_root: Path) -> Iterator[ServerProcess]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _CookieUpstream)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{upstream.server_address[1]}"
    gateway = start_gateway(tmp_root, url)
    try:
        yield gateway
    finally:
        gateway.stop()
        upstream.shutdown()
        upstream.server_close()


def test_upstream_cookies_reach_their_client_and_no_other(cookie_gateway: ServerProcess) -> None:
    first = httpx.get(cookie_gateway.url + "/v1/models", timeout=10)
    assert first.status_code == 200
    assert "first-client-secret" in first.headers["set-cookie"]  # relayed to its client
    second = httpx.get(cookie_gateway.url + "/v1/models", timeout=10)
    assert second.status_code == 200
    assert _CookieUpstream.seen[-2:] == [None, None]  # the gateway sent no cookie upstream
