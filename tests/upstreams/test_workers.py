"""Several upstreams with several workers: the shared scheduler places every worker's
requests, and each worker forwards to the upstream the place is on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.servers import ADMIN_KEY, start_emulator, start_gateway
from tests.upstreams.conftest import ONLY_A, ONLY_B, catalog, listed, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _chats(url: str, model: str) -> int:
    items = httpx.get(url + "/__emulator/requests", timeout=5).json()
    items = items["requests"] if isinstance(items, dict) else items
    return sum(1 for r in items if model in str(r.get("body", "")))


def test_two_workers_route_by_model(tmp_path: Path) -> None:
    a = start_emulator(tmp_path, "--no-sdk", "--models", catalog(tmp_path, "a", ONLY_A), name="a")
    b = start_emulator(tmp_path, "--no-sdk", "--models", catalog(tmp_path, "b", ONLY_B), name="b")
    gw = start_gateway(
        tmp_path,
        f"a={a.url}",
        "--upstream",
        f"b={b.url}",
        "--workers",
        "2",
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.5"},
    )
    try:
        wait_for(listed(gw, ONLY_A, ONLY_B), timeout=60)

        def ask(i: int) -> tuple[str, int, int]:
            model = ONLY_A if i % 2 else ONLY_B
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            with httpx.Client(headers=ADMIN, timeout=20) as client:  # a new connection
                answer = client.post(gw.url + "/v1/chat/completions", json=body)
                status = client.get(gw.url + "/debug/status").json()
                return model, int(status["worker"]["index"]), answer.status_code

        with ThreadPoolExecutor(8) as pool:
            # Every worker reads the upstreams' lists on its own: until each has, a worker may
            # not know a model yet. Once 8 concurrent requests in a row are all answered, both
            # have; what that took is forgotten before counting.
            wait_for(lambda: all(r[2] == 200 for r in pool.map(ask, range(8))), timeout=60)
            for emulator in (a, b):
                httpx.delete(emulator.url + "/__emulator/requests", timeout=5)
            # Which worker accepts a connection is the kernel's choice: rounds of concurrent
            # connections until both workers have forwarded some.
            sent = {ONLY_A: 0, ONLY_B: 0}
            workers: set[int] = set()
            for _ in range(10):
                for model, worker, status in pool.map(ask, range(8)):
                    assert status == 200, (model, worker, status)
                    sent[model] += 1
                    workers.add(worker)
                if workers == {0, 1}:
                    break
        assert workers == {0, 1}
        assert _chats(a.url, ONLY_A) == sent[ONLY_A] and _chats(a.url, ONLY_B) == 0
        assert _chats(b.url, ONLY_B) == sent[ONLY_B] and _chats(b.url, ONLY_A) == 0
    finally:
        gw.stop()
        a.stop()
        b.stop()
