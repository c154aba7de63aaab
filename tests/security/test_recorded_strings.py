"""A path is as long as the head limit allows (64 KiB): what lmgate records of it — log lines,
`auth_denied` events, listed requests, error messages — shows only its start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lmgate.exchange import SHOWN_CHARS, clip
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, raw_http, start_gateway

LONG = "/v1/" + "a" * 60_000


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, emulator: ServerProcess
) -> Iterator[ServerProcess]:
    server = start_gateway(
        tmp_path_factory.mktemp("recorded"), emulator.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY}
    )
    yield server
    server.stop()


def test_clip_keeps_the_start_and_says_how_long() -> None:
    assert clip("/v1/models") == "/v1/models"
    shown = clip("x" * 10_000)
    assert shown.startswith("x" * SHOWN_CHARS) and shown.endswith("(10000 chars)")
    assert len(shown) < SHOWN_CHARS + 20


def test_long_paths_are_clipped_in_logs_events_and_messages(keyed: ServerProcess) -> None:
    log = Path(keyed.log_path or "")
    before = log.stat().st_size
    with httpx.Client(base_url=keyed.url, timeout=30) as client:
        for _ in range(100):  # no key: 401, logged and published as a denial
            assert client.get(LONG).status_code == 401
        admin = admin_headers()
        unknown = client.get("/admin/" + "b" * 60_000, headers=admin)
        assert unknown.status_code == 404
        assert len(unknown.content) < 1024, "the 404 message echoes the whole path"
        events = client.get("/debug/requests?limit=100", headers=admin)
        assert events.status_code == 200
        assert len(events.content) < 100 * 2048
    grown = log.stat().st_size - before
    assert grown < 100 * 2048, f"100 denials wrote {grown} bytes of log"


@pytest.mark.parametrize(
    "spelling",
    [
        "/health/../v1/chat/completions",
        "/dashboard/%2e%2e/v1/chat/completions",
        "/DEBUG/../v1/chat/completions",
    ],
)
def test_a_request_through_a_quiet_prefix_is_still_listed(
    keyed: ServerProcess, spelling: str
) -> None:
    body = b'{"model":"qwen/qwen3-4b","messages":[{"role":"user","content":"hi"}],"max_tokens":3}'
    request = (
        f"POST {spelling} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answer = raw_http(keyed.port, request)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    listed = httpx.get(
        keyed.url + "/debug/requests?limit=5", headers=admin_headers(), timeout=10
    ).json()
    recent = [r for r in listed["completed"] if r["endpoint"] == "chat"]
    assert recent and recent[0]["path"] == "/v1/chat/completions"
