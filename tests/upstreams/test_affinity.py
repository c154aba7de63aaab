"""A key's requests for a model stay on the upstream it used last, until that upstream runs
more answers than another by the margin (`LMGATE_UPSTREAM_AFFINITY_MARGIN`)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway
from tests.upstreams.conftest import ONLY_B, SHARED, catalog, listed, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
K1, K2 = "affinity-key-one-0123456789", "affinity-key-two-0123456789"


def _ask(gw: ServerProcess, key: str, tag: str, **extra: object) -> httpx.Response:
    body = {"model": SHARED, "messages": [{"role": "user", "content": tag}], **extra}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def _got(server: ServerProcess, tag: str) -> bool:
    items = httpx.get(server.url + "/__emulator/requests", timeout=5).json()
    items = items["requests"] if isinstance(items, dict) else items
    return any(tag in str(r.get("body", "")) for r in items)


def test_affinity_keeps_a_key_on_its_upstream_until_it_is_busier(tmp_path: Path) -> None:
    models = catalog(tmp_path, "shared", SHARED)
    a = start_emulator(tmp_path, "--no-sdk", "--token-delay", "0.2", "--models", models, name="a")
    b = start_emulator(tmp_path, "--no-sdk", "--token-delay", "0.01", "--models", models, name="b")
    other = catalog(tmp_path, "other", ONLY_B)
    c = start_emulator(tmp_path, "--no-sdk", "--models", other, name="c")  # several from the start
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_API_KEYS": f"{K1},{K2}",
        "LMGATE_SYNC_INTERVAL": "0.3",
        "LMGATE_UPSTREAM_AFFINITY_MARGIN": "0",
    }
    gw = start_gateway(tmp_path, f"a={a.url}", "--upstream", f"c={c.url}", env=env)
    try:
        wait_for(listed(gw, SHARED, ONLY_B))
        assert _ask(gw, K1, "k1-first", max_tokens=1).status_code == 200
        assert _got(a, "k1-first")
        table = {"name": "b", "url": b.url, "weight": 5}  # b is preferred from now on
        added = httpx.post(gw.url + "/admin/upstreams", json=table, headers=ADMIN, timeout=10)
        assert added.status_code == 201

        def on_both() -> bool:
            entries = httpx.get(gw.url + "/v1/models", headers=ADMIN, timeout=5).json()["data"]
            return any(e["id"] == SHARED and e["lmgate"]["loadedOn"] == ["a", "b"] for e in entries)

        wait_for(on_both)
        assert _ask(gw, K2, "k2-first", max_tokens=1).status_code == 200
        assert _got(b, "k2-first") and not _got(a, "k2-first")  # no history: the heavier one
        assert _ask(gw, K1, "k1-second", max_tokens=1).status_code == 200
        assert _got(a, "k1-second") and not _got(b, "k1-second")  # kept on a

        # A long answer of k1's keeps a busy: the next one goes where it is served sooner.
        slow = threading.Thread(target=_ask, args=(gw, K1, "k1-slow"), kwargs={"stream": True})
        slow.start()
        wait_for(lambda: _got(a, "k1-slow"))
        assert _ask(gw, K1, "k1-third", max_tokens=1).status_code == 200
        assert _got(b, "k1-third") and not _got(a, "k1-third")
        slow.join(timeout=30)
    finally:
        gw.stop()
        a.stop()
        b.stop()
        c.stop()
