"""Per-key limits through the real server under 50 parallel requests: exact, with Retry-After."""

from __future__ import annotations

import asyncio

import httpx

from tests.security.tools import bearer, make_key
from tests.servers import ServerProcess

PARALLEL = 50


async def _burst(url: str, key: str, send: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=PARALLEL + 5)
    async with httpx.AsyncClient(
        base_url=url, headers=bearer(key), limits=limits, timeout=60
    ) as client:
        if send == "list":
            calls = [client.get("/v1/models") for _ in range(PARALLEL)]
        else:
            body = {
                "model": "qwen/qwen3-4b",
                "messages": [{"role": "user", "content": "count slowly"}],
                "stream": True,
            }
            # each answer takes about two seconds: every request arrives while the first run
            headers = {"x-emulator-token-delay": "0.1"}
            calls = [
                client.post("/v1/chat/completions", json=body, headers=headers)
                for _ in range(PARALLEL)
            ]
        return list(await asyncio.gather(*calls))


def _check_refusals(refused: list[httpx.Response], code: str) -> None:
    for resp in refused:
        assert resp.status_code == 429
        assert int(resp.headers["retry-after"]) >= 1
        error = resp.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == code and error["message"]


async def test_rpm_is_exact_under_concurrency(target: ServerProcess) -> None:
    key = make_key(target, name="rpm-20", rpm=20)
    answers = await _burst(target.url, key, "list")
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) == 20
    _check_refusals([r for r in answers if r.status_code != 200], "rate_limit_exceeded")
    later = await _burst(target.url, key, "list")
    assert all(r.status_code == 429 for r in later)  # the window slides; nothing freed yet


async def test_concurrency_is_exact_under_concurrency(target: ServerProcess) -> None:
    key = make_key(target, name="conc-5", max_concurrent=5)
    answers = await _burst(target.url, key, "chat")
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) == 5
    assert all(b"[DONE]" in r.content for r in ok)
    _check_refusals([r for r in answers if r.status_code != 200], "concurrency_limit_exceeded")
    again = await _burst(target.url, key, "chat")  # every slot came back when its stream ended
    assert sum(r.status_code == 200 for r in again) == 5


def test_tokens_per_minute_from_reported_usage(target: ServerProcess) -> None:
    body = {
        "model": "qwen/qwen3-4b",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
    }
    for stream in (False, True):
        key = make_key(target, name=f"tpm-{stream}", tpm=1)
        first = httpx.post(
            target.url + "/v1/chat/completions",
            headers=bearer(key),
            json={**body, "stream": stream},
        )
        assert first.status_code == 200
        second = httpx.post(
            target.url + "/v1/chat/completions",
            headers=bearer(key),
            json={**body, "stream": stream},
        )
        assert second.status_code == 429, stream
        assert second.json()["error"]["code"] == "token_rate_limit_exceeded"
        assert 50 <= int(second.headers["retry-after"]) <= 60
        assert httpx.get(target.url + "/v1/models", headers=bearer(key)).status_code == 200
