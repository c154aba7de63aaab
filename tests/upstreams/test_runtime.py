"""Upstreams added, drained and removed on a running gateway: requests follow at once, the
changes outlive a restart, and each is an event naming the upstream, never its token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway
from tests.upstreams.conftest import ONLY_A, ONLY_B, buffered_events, catalog, listed, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TOKEN = "runtime-token-0123456789"


def _ask(gw: ServerProcess, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=20)


def _names(gw: ServerProcess) -> list[tuple[str, str]]:
    answer = httpx.get(gw.url + "/admin/upstreams", headers=ADMIN, timeout=10)
    assert TOKEN not in answer.text
    return [(u["name"], u["state"]) for u in answer.json()["upstreams"]]


def test_add_drain_remove_and_restart(tmp_path: Path) -> None:
    a = start_emulator(tmp_path, "--no-sdk", "--models", catalog(tmp_path, "a", ONLY_A))
    b = start_emulator(
        tmp_path, "--no-sdk", "--api-token", TOKEN, "--models", catalog(tmp_path, "b", ONLY_B)
    )
    data = tmp_path / "data"
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.3"}
    gw = start_gateway(tmp_path, a.url, env=env, data_dir=data)
    try:
        wait_for(listed(gw, ONLY_A))
        assert _ask(gw, ONLY_B).status_code != 200  # nobody has it yet
        table = {"name": "b", "url": b.url, "token": TOKEN, "maxLoadedModels": 1}
        added = httpx.post(gw.url + "/admin/upstreams", json=table, headers=ADMIN, timeout=10)
        assert added.status_code == 201, added.text
        assert TOKEN not in added.text
        again = httpx.post(gw.url + "/admin/upstreams", json=table, headers=ADMIN, timeout=10)
        assert again.status_code == 409 and again.json()["error"]["code"] == "upstream_conflict"
        bad = httpx.post(
            gw.url + "/admin/upstreams", json={"name": "x y", "url": b.url}, headers=ADMIN
        )
        assert bad.status_code == 400 and "error" in bad.json()
        wait_for(listed(gw, ONLY_A, ONLY_B))
        assert _ask(gw, ONLY_B).status_code == 200
        assert _ask(gw, ONLY_A).status_code == 200

        drained = httpx.post(gw.url + "/admin/upstreams/b/drain", headers=ADMIN, timeout=10)
        assert drained.status_code == 200
        refused = _ask(gw, ONLY_B)
        assert refused.status_code == 404 and "b (draining)" in refused.json()["error"]["message"]
        assert _names(gw) == [("upstream", "up"), ("b", "draining")]

        primary = httpx.delete(gw.url + "/admin/upstreams/upstream", headers=ADMIN, timeout=10)
        assert primary.status_code == 409
        missing = httpx.delete(gw.url + "/admin/upstreams/nope", headers=ADMIN, timeout=10)
        assert missing.status_code == 404

        events = buffered_events(gw, "upstream_added", "upstream_draining")
        assert '"upstream":"b"' in events.replace(" ", "") and TOKEN not in events

        gw.stop()  # the drained state and the added upstream outlive a restart
        gw = start_gateway(tmp_path, a.url, env=env, data_dir=data)
        wait_for(lambda: _names(gw) == [("upstream", "up"), ("b", "draining")])
        resumed = subprocess.run(
            [sys.executable, "-m", "lmgate", "upstreams", "resume", "b", "--url", gw.url],
            env={**os.environ, "LMGATE_ADMIN_KEY": ADMIN_KEY},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert "upstream b takes requests again" in resumed.stdout
        assert _names(gw) == [("upstream", "up"), ("b", "up")]
        assert _ask(gw, ONLY_B).status_code == 200
        assert "event: upstream_resumed" in buffered_events(gw, "upstream_resumed")

        removed = httpx.delete(gw.url + "/admin/upstreams/b", headers=ADMIN, timeout=10)
        assert removed.status_code == 200
        assert _names(gw) == [("upstream", "up")]
        gone = _ask(gw, ONLY_B)
        assert gone.status_code == 404 and "no upstream offers" in gone.json()["error"]["message"]
        assert _ask(gw, ONLY_A).status_code == 200
        gw.stop()
        gw = start_gateway(tmp_path, a.url, env=env, data_dir=data)
        wait_for(listed(gw, ONLY_A))
        assert _names(gw) == [("upstream", "up")]
        assert TOKEN not in gw.logs()
    finally:
        gw.stop()
        a.stop()
        b.stop()
