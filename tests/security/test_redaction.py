"""An upstream URL with credentials (`http://user:pass@host`) never shows them, anywhere; and
keys that are not admin keys never see the upstream's address at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lmgate.redaction import redact_url, scrub_urls
from tests.security.tools import bearer, lmgate_cli
from tests.servers import (
    ADMIN_KEY,
    API_KEY,
    METRICS_KEY,
    ServerProcess,
    free_port,
    start_gateway,
)

USER, SECRET = "lmuser", "hunter2secret"
KEYS = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": API_KEY,
    "LMGATE_METRICS_KEY": METRICS_KEY,
}
CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}]}


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{SECRET}@")


@pytest.fixture(scope="module")
def live(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    server = start_gateway(
        tmp_root, with_credentials(emulator.url), env=KEYS, data_dir=tmp_root / "redact-live"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dead(tmp_root: Path) -> Iterator[tuple[ServerProcess, int]]:
    port = free_port()
    server = start_gateway(
        tmp_root,
        with_credentials(f"http://127.0.0.1:{port}"),
        env={**KEYS, "LMGATE_SYNC_INTERVAL": "0.2"},
        data_dir=tmp_root / "redact-dead",
    )
    yield server, port
    server.stop()


def no_credentials(text: str) -> None:
    assert SECRET not in text and USER not in text, text


def test_helpers() -> None:
    assert redact_url("http://u:p@h:1/x") == "http://***@h:1/x"
    assert redact_url("https://only-user@h") == "https://***@h"
    assert redact_url("http://h:1") == "http://h:1"
    assert redact_url("http://u:p%40ss@h") == "http://***@h"
    assert scrub_urls("Connection timeout to host http://a:b@10.0.0.1:9/v1 and ws://c@d") == (
        "Connection timeout to host http://***@10.0.0.1:9/v1 and ws://***@d"
    )


def test_the_upstream_still_gets_its_credentials(
    live: ServerProcess, upstream: httpx.Client
) -> None:
    """Redaction is for display only: the Basic auth the URL carries still goes upstream."""
    assert httpx.post(
        live.url + "/v1/chat/completions", json=CHAT, headers=bearer(API_KEY)
    ).is_success
    sent = [
        r
        for r in upstream.get("/__emulator/requests").json()
        if r["path"] == "/v1/chat/completions"
    ]
    assert sent and sent[-1]["headers"].get("authorization", "").startswith("Basic ")


def test_admin_sees_the_url_without_credentials(
    live: ServerProcess, emulator: ServerProcess
) -> None:
    shown = f"http://***@127.0.0.1:{emulator.port}"
    ready = httpx.get(live.url + "/ready", headers=bearer(ADMIN_KEY))
    assert ready.status_code == 200 and ready.json()["upstream"] == shown
    upstream = httpx.get(live.url + "/admin/upstream", headers=bearer(ADMIN_KEY))
    assert upstream.json()["url"] == shown
    for path in ("/ready", "/admin/upstream", "/debug/metrics", "/debug/status", "/admin/models"):
        no_credentials(httpx.get(live.url + path, headers=bearer(ADMIN_KEY)).text)


@pytest.mark.parametrize("key", [API_KEY, METRICS_KEY])
def test_other_keys_never_see_the_upstream(
    live: ServerProcess, emulator: ServerProcess, key: str
) -> None:
    ready = httpx.get(live.url + "/ready", headers=bearer(key))
    assert ready.status_code == 200
    assert "upstream" not in ready.json()
    assert f"127.0.0.1:{emulator.port}" not in ready.text


def test_errors_from_a_dead_upstream(dead: tuple[ServerProcess, int]) -> None:
    server, port = dead
    address = f"127.0.0.1:{port}"
    for key, named in ((API_KEY, "the upstream"), (ADMIN_KEY, f"upstream http://***@{address}")):
        chat = httpx.post(server.url + "/v1/chat/completions", json=CHAT, headers=bearer(key))
        assert chat.status_code == 503
        message = chat.json()["error"]["message"]
        assert message.startswith(f"{named} is unreachable"), message
        if key == API_KEY:
            assert address not in message and str(port) not in message
        no_credentials(chat.text)
    for key in (API_KEY, METRICS_KEY):
        ready = httpx.get(server.url + "/ready", headers=bearer(key))
        assert ready.status_code == 503 and "upstream" not in ready.json()
        assert address not in ready.text and ready.json()["error"]["message"]
    ready = httpx.get(server.url + "/ready", headers=bearer(ADMIN_KEY))
    assert ready.status_code == 503 and ready.json()["upstream"] == f"http://***@{address}"
    no_credentials(ready.text)
    for path in ("/admin/upstream?refresh=true", "/debug/metrics", "/admin/models"):
        no_credentials(httpx.get(server.url + path, headers=bearer(ADMIN_KEY)).text)


def test_logs_and_banner_never_hold_the_credentials(
    live: ServerProcess, dead: tuple[ServerProcess, int]
) -> None:
    server, _ = dead
    httpx.get(server.url + "/admin/upstream?refresh=true", headers=bearer(ADMIN_KEY))
    for gateway in (live, server):
        logs = gateway.logs()
        assert "***@127.0.0.1" in logs  # the start-up banner names the upstream, masked
        no_credentials(logs)


def test_doctor_masks_the_credentials(tmp_path: Path, emulator: ServerProcess) -> None:
    for url in (
        with_credentials(emulator.url),
        with_credentials(f"http://127.0.0.1:{free_port()}"),
    ):
        out = lmgate_cli("doctor", "--upstream", url, data_dir=tmp_path / "data")
        assert "***@127.0.0.1" in out.stdout, out.stdout + out.stderr
        no_credentials(out.stdout + out.stderr)
