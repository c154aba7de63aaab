"""What an admin can make the gateway hold through `/admin/upstreams` is bounded: at most
`MAX_UPSTREAMS` upstreams, bounded tables (tags, model patterns, aliases, URL, token), and an
upstream added and removed again leaves no row behind, however often it happens."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from lmgate.upstreams.config import MAX_ITEMS, MAX_TEXT, MAX_UPSTREAMS
from tests.servers import ADMIN_KEY, start_emulator, start_gateway
from tests.upstreams.conftest import ONLY_A, catalog, listed, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SECRET = "limits-token-0123456789"


def _rows(data: Path) -> int:
    with sqlite3.connect(f"file:{data / 'lmgate.sqlite3'}?mode=ro", uri=True) as db:
        count: int = db.execute("SELECT count(*) FROM upstreams").fetchone()[0]
    return count


def test_upstreams_tables_and_rows_are_bounded(tmp_path: Path) -> None:
    emu = start_emulator(tmp_path, "--no-sdk", "--models", catalog(tmp_path, "a", ONLY_A))
    data = tmp_path / "data"
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "5"}
    gw = start_gateway(tmp_path, emu.url, env=env, data_dir=data)
    admin = httpx.Client(base_url=gw.url, headers=ADMIN, timeout=30)
    try:
        wait_for(listed(gw, ONLY_A))

        def add(name: str, **extra: Any) -> httpx.Response:
            return admin.post("/admin/upstreams", json={"name": name, "url": emu.url, **extra})

        # Tables beyond their bounds: a 400 naming the field, never echoing the values.
        too_big: list[dict[str, Any]] = [
            {"tags": [f"t{i}" for i in range(MAX_ITEMS + 1)]},
            {"models": ["x" * (MAX_TEXT + 1)]},
            {"aliases": {f"a{i}": "k" for i in range(MAX_ITEMS + 1)}},
            {"aliases": {"short": "k" * (MAX_TEXT + 1)}},
            {"url": emu.url + "/" + "p" * 3000},
            {"token": SECRET * 400},
            {"weight": 1e9},
        ]
        for extra in too_big:
            refused = add("big", **extra)
            assert refused.status_code == 400, (extra.keys(), refused.text)
            assert refused.json()["error"]["code"] == "invalid_upstream"
            assert SECRET not in refused.text and "ppppp" not in refused.text

        # At most MAX_UPSTREAMS at once; removed ones leave no row and make room again.
        proc = psutil.Process(gw.proc.pid)  # type: ignore[union-attr]
        rss_before = proc.memory_info().rss
        started = time.monotonic()
        for i in range(1, MAX_UPSTREAMS):
            assert add(f"u{i}", token=SECRET).status_code == 201
        refused = add("one-too-many")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "too_many_upstreams"
        assert _rows(data) == MAX_UPSTREAMS - 1
        grown_mib = (proc.memory_info().rss - rss_before) / 2**20
        assert grown_mib < 80, grown_mib
        for round_ in range(3):  # churn: the table never grows past what is there
            for i in range(1, MAX_UPSTREAMS):
                assert admin.delete(f"/admin/upstreams/u{i}").status_code == 200
            assert _rows(data) == 0
            if round_ < 2:
                for i in range(1, MAX_UPSTREAMS):
                    assert add(f"u{i}").status_code == 201
        assert time.monotonic() - started < 120
        assert add("again").status_code == 201
        names = [u["name"] for u in admin.get("/admin/upstreams").json()["upstreams"]]
        assert names == ["upstream", "again"]
        # The gateway still serves its own model meanwhile.
        body = {"model": ONLY_A, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert admin.post("/v1/chat/completions", json=body).status_code == 200
    finally:
        admin.close()
        gw.stop()
        emu.stop()
