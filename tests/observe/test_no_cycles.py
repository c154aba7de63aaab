"""A proxied request leaves no reference cycle behind: what it allocated is freed as it ends.

Cyclic garbage waits for the collector, which then walks every young object, thousands of
requests a second; an early usage tap was such a cycle (its `feed` a bound method of its
own). The collector is told to keep what it finds, so the test can name what lmgate leaked.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lmgate.app import create_app
from lmgate.settings import Settings
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    """Collect now, then keep every object the next collection finds (in the list given)."""
    found: list[Any] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _ours(obj: Any) -> str | None:
    """The lmgate type an object is, or belongs to as a bound method; None for others."""
    owner = getattr(obj, "__self__", obj)
    module = type(owner).__module__ or ""
    return type(owner).__qualname__ if module.startswith("lmgate") else None


async def _requests(client: httpx.AsyncClient, n: int) -> None:
    for _ in range(n):
        plain = await client.post("/v1/chat/completions", headers=AUTH, json=CHAT)
        assert plain.status_code == 200, plain.text
        streamed = await client.post(
            "/v1/chat/completions", headers=AUTH, json={**CHAT, "stream": True}
        )
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        listed = await client.get("/v1/models", headers=AUTH)
        assert listed.status_code == 200


async def test_proxied_requests_leave_no_cycles(
    tmp_path: Path, emulator: ServerProcess, saved_garbage: list[Any]
) -> None:
    settings = Settings(
        data_dir=tmp_path, upstream=emulator.url, admin_key=ADMIN_KEY, api_keys=[API_KEY]
    )
    app = create_app(settings)
    await app.gateway.start()
    try:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            await _requests(client, 3)  # first calls fill caches: not garbage, but not per request
            gc.collect()
            gc.garbage.clear()
            await _requests(client, 10)
            gc.collect()
            saved_garbage.extend(gc.garbage)
    finally:
        await app.gateway.stop()
    leaked = Counter(name for name in map(_ours, saved_garbage) if name is not None)
    assert not leaked, f"lmgate objects freed only by the garbage collector: {dict(leaked)}"
