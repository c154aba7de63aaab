"""OpenAI-compatible surface, driven with httpx and the official `openai` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import openai
import pytest

from lmgate.emulator.generation import NATURAL_TOKENS, Prompt, complete

if TYPE_CHECKING:
    from tests.emulator.conftest import Emulator

QWEN, GEMMA, NOMIC = "qwen/qwen3-4b", "google/gemma-3-1b", "text-embedding-nomic-embed-text-v1.5"


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=emu.url + "/v1", api_key="lm-studio", max_retries=0
    ) as sdk:
        yield sdk


def expected_text(seed: str, prompt_tokens: int = 0, max_tokens: int | None = None) -> str:
    return complete(Prompt(seed, prompt_tokens), max_tokens=max_tokens).text


async def test_models_lists_all_downloaded_under_jit(client: openai.AsyncOpenAI) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == [QWEN, GEMMA, NOMIC]
    assert page.data[0].owned_by == "organization_owner"


def test_models_lists_only_loaded_without_jit(emu_nojit: Emulator) -> None:
    emu_nojit.post("/__emulator/reset", {})
    assert emu_nojit.get("/v1/models")["data"] == []
    emu_nojit.post("/__emulator/load", {"model": GEMMA})
    data = emu_nojit.get("/v1/models")["data"]
    assert data == [{"id": GEMMA, "object": "model", "owned_by": "organization_owner"}]


async def test_chat_non_streaming(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=QWEN,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me about local models"},
        ],
    )
    assert reply.model == QWEN
    assert reply.id.startswith("chatcmpl-")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == expected_text("Tell me about local models")
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, NATURAL_TOKENS)
    assert reply.usage.total_tokens == 7 + NATURAL_TOKENS


async def test_chat_streaming_without_and_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == expected_text("hi")
    assert len(chunks) == NATURAL_TOKENS + 1

    stream = await client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 5)


async def test_raw_chat_stream_framing(http: httpx.AsyncClient) -> None:
    body = {"model": QWEN, "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-powered-by"] == "Express"
        raw = (await response.aread()).decode()
    frames = [f for f in raw.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert "event:" not in raw
    assert frames[-1] == "data: [DONE]"


async def test_max_tokens_and_stop(client: openai.AsyncOpenAI) -> None:
    natural = expected_text("count")
    limited = await client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "count"}], max_tokens=4
    )
    assert limited.choices[0].finish_reason == "length"
    assert limited.choices[0].message.content == expected_text("count", max_tokens=4)
    assert natural.startswith(limited.choices[0].message.content or "-")
    assert limited.usage is not None and limited.usage.completion_tokens == 4

    unlimited = await client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "count"}], max_tokens=-1
    )
    assert unlimited.choices[0].message.content == natural

    stop_word = natural.split()[5]
    stopped = await client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "count"}], stop=[stop_word]
    )
    content = stopped.choices[0].message.content or ""
    assert stopped.choices[0].finish_reason == "stop"
    assert stop_word not in content
    assert natural.startswith(content)
    assert len(content.split()) == 5


async def test_completions_both_modes(client: openai.AsyncOpenAI) -> None:
    reply = await client.completions.create(model=QWEN, prompt="Once upon a time", max_tokens=3)
    assert reply.object == "text_completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].text == expected_text("Once upon a time", max_tokens=3)
    assert reply.usage is not None and reply.usage.prompt_tokens == 4
    stream = await client.completions.create(model=QWEN, prompt="Once", stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks) == expected_text("Once")
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_embeddings(client: openai.AsyncOpenAI, emu: Emulator) -> None:
    result = await client.embeddings.create(model=NOMIC, input=["alpha", "beta"])
    assert result.model == NOMIC
    assert [d.index for d in result.data] == [0, 1]
    vectors = [d.embedding for d in result.data]
    assert all(len(v) == 8 for v in vectors) and vectors[0] != vectors[1]
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3
    again = await client.embeddings.create(model=NOMIC, input="alpha", encoding_format="float")
    assert again.data[0].embedding == vectors[0]
    assert result.usage.prompt_tokens == 0 and result.usage.total_tokens == 0
    loaded = [m for m in emu.get("/api/v1/models")["models"] if m["key"] == NOMIC]
    assert loaded[0]["loaded_instances"][0]["id"] == NOMIC  # JIT-loaded by the call
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model=QWEN, input="alpha")
    assert "Model is not embedding" in str(info.value)


async def test_unknown_model_and_bad_response_format(http: httpx.AsyncClient) -> None:
    body: dict[str, object] = {"model": "o4-mini", "messages": [{"role": "user", "content": "x"}]}
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert error["type"] == "invalid_request_error"
    assert 'Invalid model identifier "o4-mini"' in error["message"]

    body = {**body, "model": QWEN, "response_format": {"type": "json_object"}}
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": "'response_format.type' must be 'json_schema' or 'text'"}


async def test_missing_model_uses_loaded_instance(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 200
    assert response.json()["model"] == QWEN


def test_jit_off_errors(emu_nojit: Emulator) -> None:
    emu_nojit.post("/__emulator/reset", {})
    body = {"model": QWEN, "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(emu_nojit.url + "/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("No models loaded.")
    emu_nojit.post("/__emulator/load", {"model": GEMMA})
    response = httpx.post(emu_nojit.url + "/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_found"
    response = httpx.post(emu_nojit.url + "/v1/chat/completions", json={**body, "model": GEMMA})
    assert response.status_code == 200 and response.json()["model"] == GEMMA
