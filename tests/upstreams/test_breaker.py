"""An upstream that refuses connections: requests it never accepted are admitted once more
on another upstream; its circuit opens after a few failures and closes once it answers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from lmgate.upstreams.health import THRESHOLD, Breaker
from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway
from tests.upstreams.conftest import SHARED, buffered_events, catalog, heavier_b, listed, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _ask(gw: ServerProcess) -> httpx.Response:
    body = {"model": SHARED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=20)


def _served(server: ServerProcess) -> int:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        items = client.get("/__emulator/requests").json()
    items = items["requests"] if isinstance(items, dict) else items
    return sum(1 for r in items if str(r.get("path", "")).endswith("/chat/completions"))


def test_breaker_opens_after_failures_and_closes_on_success() -> None:
    now = [0.0]
    breaker = Breaker(clock=lambda: now[0])
    for _ in range(THRESHOLD - 1):
        assert not breaker.failure()
    assert breaker.state == "closed"
    assert breaker.failure() and breaker.is_open
    now[0] += 2.5  # the cool-down passed: half-open
    assert breaker.state == "half-open"
    assert breaker.failure() and breaker.is_open  # failed again: open at once, longer
    now[0] += 2.5
    assert breaker.is_open
    now[0] += 2.0
    assert breaker.success() and breaker.state == "closed"


def test_refused_requests_move_and_the_circuit_opens_and_closes(tmp_path: Path) -> None:
    models = catalog(tmp_path, "shared", SHARED)
    a = start_emulator(tmp_path, "--no-sdk", "--models", models, name="a")
    b = start_emulator(tmp_path, "--no-sdk", "--models", models, name="b")
    config = heavier_b(tmp_path, a.url, b.url)
    # Model lists are read rarely: only the requests themselves can find b gone.
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "60"}
    gw = start_gateway(tmp_path, a.url, "--config", str(config), env=env)
    try:
        wait_for(listed(gw, SHARED))
        wait_for(lambda: _ask(gw).status_code == 200 and _served(b) >= 1)  # b weighs more
        assert _served(a) == 0
        assert b.proc is not None
        b.proc.kill()
        b.proc.wait()
        for _ in range(THRESHOLD + 3):  # each one refused by b is served by a
            begun = time.monotonic()
            assert _ask(gw).status_code == 200
            assert time.monotonic() - begun < 10
        assert _served(a) == THRESHOLD + 3
        events = buffered_events(gw, "request_retried", "upstream_down")
        assert '"upstream":"b"' in events.replace(" ", "") and '"to":"a"' in events.replace(" ", "")
        state = httpx.get(gw.url + "/admin/upstreams", headers=ADMIN, timeout=10).json()
        assert {u["name"]: u["state"] for u in state["upstreams"]}["b"] == "down"
        metrics = httpx.get(gw.url + "/metrics", headers=ADMIN, timeout=10).text
        assert 'lmgate_upstream_requests_total{outcome="retried",upstream="b"}' in metrics
        assert 'lmgate_upstreams_up{upstream="b"} 0.0' in metrics

        argv = [sys.executable, "-m", "lmgate.emulator", "--port", str(b.port), "--no-sdk"]
        b2 = ServerProcess(
            [*argv, "--models", models],
            port=b.port,
            ready_path="/lmstudio-greeting",
            log=tmp_path / "b2.log",
        ).start()
        try:
            # After the cool-down a request tries b again; it answers: the circuit closes.
            wait_for(lambda: _ask(gw).status_code == 200 and _served(b2) >= 1, timeout=30)
            assert "event: upstream_up" in buffered_events(gw, "upstream_up")
            state = httpx.get(gw.url + "/admin/upstreams", headers=ADMIN, timeout=10).json()
            assert {u["name"]: u["state"] for u in state["upstreams"]}["b"] == "up"
        finally:
            b2.stop()
    finally:
        gw.stop()
        a.stop()
        b.stop()
