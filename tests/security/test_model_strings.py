"""Model names a client makes up, over real sockets: absurd ones are refused before anything
records them, and thousands of distinct ones cost a bounded amount of memory, scrape and disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.security.tools import bearer
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, start_gateway, upstream_requests

QWEN = "qwen/qwen3-4b"
USER = [{"role": "user", "content": "hi"}]
# Every endpoint whose body names a model, with the rest of a plausible body.
ENDPOINTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"messages": USER}),
    ("/chat/completions", {"messages": USER}),
    ("/api/v0/chat/completions", {"messages": USER}),
    ("/v1/completions", {"prompt": "once"}),
    ("/api/v0/completions", {"prompt": "once"}),
    ("/v1/embeddings", {"input": "hi"}),
    ("/api/v0/embeddings", {"input": "hi"}),
    ("/v1/responses", {"input": "hi"}),
    ("/v1/messages", {"messages": USER, "max_tokens": 3}),
    ("/api/v1/chat", {"input": "hi"}),
]
OUR_CODES = {"model_name_too_long", "invalid_model"}


@pytest.fixture(scope="module")
def strings_gw(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_API_KEYS": API_KEY,
        "LMGATE_USAGE_FLUSH_SECONDS": "0.2",
        "LMGATE_AUTH_FAIL_LIMIT": "0",
    }
    server = start_gateway(tmp_root, emulator.url, env=env, data_dir=tmp_root / "strings")
    yield server
    server.stop()


def _admin(server: ServerProcess, path: str) -> Any:
    resp = httpx.get(server.url + path, headers=bearer(ADMIN_KEY), timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _usage_models(server: ServerProcess) -> list[str]:
    """Every model the usage table holds (read straight from the database, read-only)."""
    _admin(server, "/admin/usage")  # flushes what is pending
    path = Path(server.env["LMGATE_DATA_DIR"]) / "lmgate.sqlite3"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT DISTINCT model FROM usage_minutes")]
    finally:
        conn.close()


BAD_MODELS: list[tuple[object, str]] = [
    ("q" * 257, "model_name_too_long"),
    ("publisher/" + "n" * 5000 + "@q4_k_m", "model_name_too_long"),
    ("é" * 300, "model_name_too_long"),
    (12, "invalid_model"),
    (1.5, "invalid_model"),
    (True, "invalid_model"),
    (["qwen/qwen3-4b"], "invalid_model"),
    ({"id": "qwen/qwen3-4b"}, "invalid_model"),
    ("qwen/qwen3-4b\nX-Injected: 1", "invalid_model"),
    ("qwen\x00", "invalid_model"),
    ("qwen\x1b[31m", "invalid_model"),
    ("qwen\u0085", "invalid_model"),
    ("qwen\x7f", "invalid_model"),
    ("qwen\u202egpj.exe", "invalid_model"),  # right-to-left override
    ("qwen\u200b", "invalid_model"),  # zero-width space
]


def test_unusable_model_names_are_refused_and_never_recorded(
    strings_gw: ServerProcess, emulator: ServerProcess
) -> None:
    marker = "zq-marker-"
    with httpx.Client(base_url=emulator.url) as upstream:
        upstream.delete("/__emulator/requests")
    with httpx.Client(base_url=strings_gw.url, headers=bearer(API_KEY), timeout=30) as client:
        for i, (model, code) in enumerate(BAD_MODELS):
            if isinstance(model, str):
                model = marker + model
            path, rest = ENDPOINTS[i % len(ENDPOINTS)]
            for stream in (False, True):
                resp = client.post(path, json={"model": model, **rest, "stream": stream})
                assert resp.status_code == 400, (path, model, resp.text)
                error = resp.json()["error"]
                assert error["type"] == "invalid_request_error" and error["code"] == code, error
                assert error["param"] == "model" and len(error["message"]) < 200
        # the longest name that may be one passes the gateway (the emulator has no such model)
        longest = "p/" + "m" * 254
        for path, rest in ENDPOINTS:
            resp = client.post(path, json={"model": longest, **rest})
            assert resp.status_code in (200, 400, 404), resp.text
            assert resp.json().get("error", {}).get("code") not in OUR_CODES, (path, resp.text)
        # an explicit null is the upstream's to judge
        resp = client.post("/v1/chat/completions", json={"model": None, "messages": USER})
        assert resp.json().get("error", {}).get("code") not in OUR_CODES

    with httpx.Client(base_url=emulator.url) as upstream:
        seen = [r for r in upstream_requests(upstream) if r["method"] == "POST"]
    assert len(seen) == len(ENDPOINTS) + 1  # the refused requests never went upstream
    assert marker not in json.dumps(seen)

    time.sleep(0.5)  # the log line is written as the exchange finishes
    assert marker not in strings_gw.logs()
    assert all(marker not in m for m in _usage_models(strings_gw))
    requests = _admin(strings_gw, "/debug/requests?limit=100")
    assert marker not in json.dumps(requests)
    refused = [r for r in requests["completed"] if r.get("status") == 400 and not r.get("model")]
    assert len(refused) >= 2 * len(BAD_MODELS)
    by_model = _admin(strings_gw, "/debug/metrics")["windows"]["sinceStart"]["byModel"]
    assert all(marker not in m for m in by_model)
    metrics = httpx.get(strings_gw.url + "/metrics", headers=bearer(ADMIN_KEY)).text
    assert marker not in metrics


async def _normal_client(url: str, stop: asyncio.Event) -> list[float]:
    """A well-behaved client asking for a real model until told to stop: its latencies."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=bearer(API_KEY), timeout=60) as client:
        while not stop.is_set():
            started = time.monotonic()
            resp = await client.post(
                "/v1/chat/completions", json={"model": QWEN, "messages": USER, "max_tokens": 3}
            )
            assert resp.status_code == 200, resp.text
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
    return latencies


async def _flood(url: str, names: list[str], body_of: Any, parallel: int = 16) -> set[int]:
    limits = httpx.Limits(max_connections=parallel)
    async with httpx.AsyncClient(
        base_url=url, headers=bearer(API_KEY), timeout=120, limits=limits
    ) as client:
        gate = asyncio.Semaphore(parallel)

        async def one(i: int, name: str) -> int:
            path, rest = body_of(i)
            async with gate:
                resp = await client.post(path, json={"model": name, **rest})
                return resp.status_code

        return set(await asyncio.gather(*(one(i, n) for i, n in enumerate(names))))


async def _under_attack(
    url: str, names: list[str], body_of: Any
) -> tuple[set[int], list[float], float]:
    """The flood, with a normal client served alongside: the flood's statuses, the normal
    client's latencies, and how long the flood took."""
    stop = asyncio.Event()
    normal = asyncio.create_task(_normal_client(url, stop))
    started = time.monotonic()
    codes = await _flood(url, names, body_of)
    elapsed = time.monotonic() - started
    stop.set()
    return codes, await normal, elapsed


def _every_endpoint(i: int) -> tuple[str, dict[str, Any]]:
    return ENDPOINTS[i % len(ENDPOINTS)]


def test_huge_unique_model_names_cost_nothing(strings_gw: ServerProcess) -> None:
    """400 names of 100 KB each, all different: refused, and the gateway keeps none of them."""
    proc = psutil.Process(strings_gw.proc.pid)  # type: ignore[union-attr]
    asyncio.run(_flood(strings_gw.url, [f"warm-{i}" for i in range(50)], _every_endpoint))
    before = proc.memory_info().rss
    names = [f"{i:05d}-" + "x" * 100_000 for i in range(400)]
    codes, latencies, elapsed = asyncio.run(_under_attack(strings_gw.url, names, _every_endpoint))
    assert codes == {400}
    grown = (proc.memory_info().rss - before) / 2**20
    assert grown < 24, f"RSS grew {grown:.1f} MiB for refused names"  # kept: 40 MB of names
    assert elapsed < 60
    assert latencies and max(latencies) < 10
    assert all(len(m) <= 256 for m in _usage_models(strings_gw))
    metrics = httpx.get(strings_gw.url + "/metrics", headers=bearer(ADMIN_KEY)).content
    assert b"x" * 300 not in metrics


def test_thousands_of_distinct_names_stop_growing_state(strings_gw: ServerProcess) -> None:
    """Distinct names of the longest allowed length on every endpoint: past the cap (100 by
    default) memory, `/metrics`, `/debug/metrics` and the usage table stop growing, the
    model the upstream offers keeps its own name, and a normal client is served meanwhile."""
    proc = psutil.Process(strings_gw.proc.pid)  # type: ignore[union-attr]

    def names(start: int, stop: int) -> list[str]:
        return [(f"made-up/{i:06d}-" * 20)[:256] for i in range(start, stop)]

    def sizes() -> tuple[int, int, int]:
        scrape = httpx.get(strings_gw.url + "/metrics", headers=bearer(ADMIN_KEY), timeout=60)
        debug = httpx.get(strings_gw.url + "/debug/metrics", headers=bearer(ADMIN_KEY))
        return proc.memory_info().rss, len(scrape.content), len(debug.content)

    codes = asyncio.run(_flood(strings_gw.url, names(0, 2000), _every_endpoint))
    assert codes <= {200, 400, 404}
    rss1, scrape1, debug1 = sizes()
    _, latencies, _ = asyncio.run(_under_attack(strings_gw.url, names(2000, 8000), _every_endpoint))
    rss2, scrape2, debug2 = sizes()

    grown = (rss2 - rss1) / 2**20
    assert grown < 4, f"RSS grew {grown:.1f} MiB over 6000 more names"  # kept: about 9 MiB
    assert scrape2 < scrape1 * 1.05 and scrape2 < 2 * 2**20
    assert debug2 < debug1 * 1.05 and debug2 < 1 * 2**20
    started = time.monotonic()
    httpx.get(strings_gw.url + "/metrics", headers=bearer(ADMIN_KEY), timeout=60)
    assert time.monotonic() - started < 2
    assert latencies and max(latencies) < 10

    by_model = _admin(strings_gw, "/debug/metrics")["windows"]["sinceStart"]["byModel"]
    made_up = [m for m in by_model if m.startswith("made-up/")]
    assert len(made_up) <= 100 and by_model["other"]["requests"] >= 6000
    assert by_model[QWEN]["requests"] >= len(latencies)  # offered upstream: kept by name
    stored = _usage_models(strings_gw)
    assert len(stored) <= 100 + 10 and "other" in stored and QWEN in stored
