"""One upstream dies mid-run: its stream ends with a clear error, its models become a prompt
404 naming it as down, the other upstream's models are served all along; nothing hangs."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.servers import ADMIN_KEY, start_emulator, start_gateway
from tests.upstreams.conftest import ONLY_A, ONLY_B, catalog, listed, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _ask(url: str, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=20)


def test_an_upstream_killed_mid_stream(tmp_path: Path) -> None:
    a = start_emulator(
        tmp_path, "--no-sdk", "--token-delay", "0.002", "--models", catalog(tmp_path, "a", ONLY_A)
    )
    b = start_emulator(
        tmp_path, "--no-sdk", "--token-delay", "0.5", "--models", catalog(tmp_path, "b", ONLY_B)
    )
    gw = start_gateway(
        tmp_path,
        f"a={a.url}",
        "--upstream",
        f"b={b.url}",
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.3"},
    )
    try:
        wait_for(listed(gw, ONLY_A, ONLY_B))
        ready = httpx.get(gw.url + "/ready", headers=ADMIN, timeout=10)
        assert ready.status_code == 200 and ready.json()["upstreams"] == {"a": True, "b": True}
        body = {"model": ONLY_B, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        started = time.monotonic()
        with httpx.stream(
            "POST", gw.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=20
        ) as stream:
            assert stream.status_code == 200
            chunks = stream.iter_bytes()
            first = next(chunks)
            assert first.startswith(b"data:")
            assert b.proc is not None
            b.proc.kill()
            rest = b"".join(chunks)
        assert time.monotonic() - started < 15  # ended, not hung for the stream's 12 s
        assert b'"error"' in rest and b"[DONE]" not in rest

        assert _ask(gw.url, ONLY_A).status_code == 200  # the other upstream serves on

        def down() -> bool:
            begun = time.monotonic()
            answer = _ask(gw.url, ONLY_B)
            assert time.monotonic() - begun < 10  # each try is answered promptly
            assert answer.status_code in (404, 502, 503), answer.text
            assert "error" in answer.json()
            return answer.status_code == 404 and "b (down)" in answer.json()["error"]["message"]

        wait_for(down, timeout=20)
        assert _ask(gw.url, ONLY_A).status_code == 200
        state = httpx.get(gw.url + "/admin/upstreams", headers=ADMIN, timeout=10).json()
        assert [u["state"] for u in state["upstreams"]] == ["up", "down"]
        ids = {e["id"] for e in httpx.get(gw.url + "/v1/models", headers=ADMIN).json()["data"]}
        assert ids == {ONLY_A}
        ready = httpx.get(gw.url + "/ready", headers=ADMIN, timeout=10)
        assert ready.status_code == 200 and ready.json()["upstreams"] == {"a": True, "b": False}
        for model, status in ((ONLY_B, 503), (ONLY_A, 200)):  # the active model's upstream
            activated = httpx.post(
                gw.url + "/admin/models/activate",
                json={"modelKey": model, "force": True},
                headers=ADMIN,
            )
            assert activated.status_code == 200, activated.text
            assert httpx.get(gw.url + "/ready", headers=ADMIN, timeout=10).status_code == status
        assert httpx.get(gw.url + "/health", timeout=10).status_code == 200
        failed = [line for line in gw.logs().splitlines() if "upstream_sync_failed" in line]
        assert failed and all('"name":"b"' in line.replace(" ", "") for line in failed)
    finally:
        gw.stop()
        a.stop()
        b.stop()
