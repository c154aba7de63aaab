"""Stream lifecycle (cancellation, injected failures, pacing) and the `/__emulator/` hooks."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import openai
import pytest

from lmgate.emulator.generation import NATURAL_TOKENS

if TYPE_CHECKING:
    from tests.emulator.conftest import Emulator

QWEN, GEMMA = "qwen/qwen3-4b", "google/gemma-3-1b"
PROMPT = "tell me a long story"
CHAT = {"model": QWEN, "messages": [{"role": "user", "content": PROMPT}]}


async def wait_for(emu: Emulator, key: str, value: int, within: float) -> float:
    started = time.monotonic()
    while emu.stats()[key] != value:
        if time.monotonic() - started > within:
            raise AssertionError(f"{key} stayed at {emu.stats()[key]}, wanted {value}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/v1/responses", {"model": QWEN, "input": "long story"}),
        ("/v1/messages", {**CHAT, "max_tokens": 100}),
        ("/api/v1/chat", {"model": QWEN, "input": "long story"}),
    ],
)
async def test_client_disconnect_cancels_stream(
    emu: Emulator, http: httpx.AsyncClient, path: str, body: dict[str, object]
) -> None:
    headers = {"x-emulator-token-delay": "0.2"}
    async with http.stream("POST", path, json={**body, "stream": True}, headers=headers) as r:
        first_line = await anext(r.aiter_lines())
        assert first_line.startswith(("data: ", "event: "))
        assert emu.stats()["active_streams"] == 1
    # Closing mid-stream must stop generation well before the next token would be due.
    elapsed = await wait_for(emu, "cancelled_streams", 1, within=1.0)
    assert elapsed < 0.2
    assert emu.stats() == {
        "active_streams": 0,
        "completed_streams": 0,
        "cancelled_streams": 1,
        "loads": 0,
        "unloads": 0,
    }


async def test_completed_streams_are_counted(emu: Emulator, http: httpx.AsyncClient) -> None:
    headers = {"x-emulator-token-delay": "0"}
    for _ in range(2):
        response = await http.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
        )
        assert response.text.endswith("data: [DONE]\n\n")
    assert emu.stats()["completed_streams"] == 2 and emu.stats()["cancelled_streams"] == 0


async def test_token_delay_header_paces_stream(http: httpx.AsyncClient) -> None:
    started = time.monotonic()
    body = {**CHAT, "stream": True, "max_tokens": 5}
    response = await http.post(
        "/v1/chat/completions", json=body, headers={"x-emulator-token-delay": "0.06"}
    )
    assert response.status_code == 200
    assert 0.3 <= time.monotonic() - started < 1.5

    started = time.monotonic()
    delayed = await http.post(
        "/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers={"x-emulator-delay": "0.3"}
    )
    assert delayed.status_code == 200 and time.monotonic() - started >= 0.3


async def test_injected_500(emu: Emulator, http: httpx.AsyncClient) -> None:
    headers = {"x-emulator-fail": "500"}
    async with openai.AsyncOpenAI(
        base_url=emu.url + "/v1", api_key="x", max_retries=0, default_headers=headers
    ) as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model=QWEN, messages=[{"role": "user", "content": PROMPT}]
            )
    response = await http.post("/api/v1/chat", json={"model": QWEN, "input": "x"}, headers=headers)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "internal_error"


async def test_mid_stream_failures(emu: Emulator, http: httpx.AsyncClient) -> None:
    headers = {"x-emulator-fail": "mid-stream", "x-emulator-token-delay": "0"}
    async with openai.AsyncOpenAI(
        base_url=emu.url + "/v1", api_key="x", max_retries=0, default_headers=headers
    ) as client:
        chunks = await client.chat.completions.create(
            model=QWEN, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        received = []
        with pytest.raises(openai.APIError, match="crashed"):
            async for chunk in chunks:
                received.append(chunk)
        assert len(received) == NATURAL_TOKENS // 2
        events = [
            e async for e in await client.responses.create(model=QWEN, input="x", stream=True)
        ]
        assert events[-1].type == "error" and "crashed" in events[-1].message
        assert not any(e.type == "response.completed" for e in events)
    async with anthropic.AsyncAnthropic(
        base_url=emu.url, api_key="x", max_retries=0, default_headers=headers
    ) as claude:
        with pytest.raises(anthropic.APIStatusError):
            async with claude.messages.stream(
                model=QWEN, max_tokens=50, messages=[{"role": "user", "content": PROMPT}]
            ) as stream:
                async for _ in stream.text_stream:
                    pass
    raw = await http.post(
        "/api/v1/chat", json={"model": QWEN, "input": "x", "stream": True}, headers=headers
    )
    assert "event: error" in raw.text and raw.text.rstrip().split("\n")[-2] == "event: chat.end"

    drop = {"x-emulator-fail": "drop", "x-emulator-token-delay": "0"}
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=drop)
    non_stream = await http.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert non_stream.status_code == 500


async def test_request_log_hook(emu: Emulator, http: httpx.AsyncClient) -> None:
    await http.post(
        "/v1/chat/completions?trace=1", json={**CHAT, "max_tokens": 1}, headers={"X-Custom": "yes"}
    )
    await http.get("/nowhere")
    await http.get("/__emulator/stats")
    log = (await http.get("/__emulator/requests")).json()
    assert [(e["method"], e["path"]) for e in log] == [
        ("POST", "/v1/chat/completions"),
        ("GET", "/nowhere"),
    ]
    first = log[0]
    assert first["query"] == "trace=1"
    assert first["headers"]["x-custom"] == "yes"
    assert first["body"]["max_tokens"] == 1 and log[1]["body"] is None
    assert (await http.delete("/__emulator/requests")).json() == {"cleared": 2}
    assert (await http.get("/__emulator/requests")).json() == []


async def test_load_unload_hooks_bypass_the_api(emu: Emulator, http: httpx.AsyncClient) -> None:
    loaded = (await http.post("/__emulator/load", json={"model": GEMMA})).json()
    assert loaded["instance_id"] == GEMMA and loaded["config"]["context_length"] == 4096
    again = (
        await http.post("/__emulator/load", json={"model": GEMMA, "context_length": 1024})
    ).json()
    assert again["instance_id"] == f"{GEMMA}:2"
    row = (await http.get(f"/api/v0/models/{GEMMA}")).json()
    assert row["state"] == "loaded"
    unloaded = await http.post("/__emulator/unload", json={"instance_id": QWEN})
    assert unloaded.json() == {"instance_id": QWEN}
    assert (await http.get(f"/api/v0/models/{QWEN}")).json()["state"] == "not-loaded"
    missing = await http.post("/__emulator/unload", json={"instance_id": QWEN})
    assert missing.status_code == 404
    assert emu.stats()["loads"] == 2 and emu.stats()["unloads"] == 1
    listings = [await http.get(p) for p in ("/v1/models", "/api/v0/models", "/api/v1/models")]
    assert all("__emulator" not in r.text for r in listings)


async def test_an_unload_under_a_running_answer_is_recorded(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """What a gateway's scheduler must never do, seen from the upstream: the busy unload is
    counted and named (model, instance, answers running); an unload of an idle model is not."""

    async def generations() -> dict[str, Any]:
        answer: dict[str, Any] = (await http.get("/__emulator/generations")).json()
        return answer

    slow = {"x-emulator-token-delay": "0.05"}
    async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True},
                           headers=slow) as stream:  # fmt: skip
        lines = stream.aiter_lines()
        assert (await anext(lines)).startswith("data: ")
        assert (await generations())["generating"] == {QWEN: 1}
        gone = await http.post("/api/v1/models/unload", json={"instance_id": QWEN})
        assert gone.status_code == 200
        async for _ in lines:  # the emulator still finishes the answer; the harm is recorded
            pass
    seen = await generations()
    assert seen["generating"] == {QWEN: 0}
    assert seen["busy_unloads"] == 1
    [record] = seen["busy_unloaded"]
    assert record["model"] == QWEN and record["instance_id"] == QWEN
    assert record["generating"] == 1 and record["at"] > 0

    # Loaded again and unloaded once idle: nothing more is recorded.
    loaded = await http.post("/api/v1/models/load", json={"model": QWEN})
    assert loaded.status_code == 200
    done = await http.post("/v1/chat/completions", json=CHAT)
    assert done.status_code == 200
    assert (await http.post("/api/v1/models/unload", json={"instance_id": QWEN})).status_code == 200
    again = await generations()
    assert again["busy_unloads"] == 1 and len(again["busy_unloaded"]) == 1

    await http.post("/__emulator/reset")
    assert (await generations())["busy_unloaded"] == []
