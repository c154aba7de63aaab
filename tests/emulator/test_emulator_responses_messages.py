"""`/v1/responses` with the `openai` SDK and `/v1/messages` with the `anthropic` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anthropic
import httpx
import openai
import pytest

from lmgate.emulator.generation import NATURAL_TOKENS, Prompt, complete

if TYPE_CHECKING:
    from tests.emulator.conftest import Emulator

QWEN = "qwen/qwen3-4b"


def expected_text(seed: str, max_tokens: int | None = None) -> str:
    return complete(Prompt(seed, 0), max_tokens=max_tokens).text


@pytest.fixture
async def oai(emu: Emulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=emu.url + "/v1", api_key="lm-studio", max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
async def claude(emu: Emulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=emu.url, api_key="lm-studio", max_retries=0
    ) as sdk:
        yield sdk


async def test_responses_non_streaming(oai: openai.AsyncOpenAI) -> None:
    response = await oai.responses.create(
        model=QWEN, input="What is a gateway?", instructions="Answer briefly please"
    )
    assert response.status == "completed"
    assert response.model == QWEN
    assert response.output_text == expected_text("What is a gateway?")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, NATURAL_TOKENS)

    follow_up = await oai.responses.create(
        model=QWEN, input="and then?", previous_response_id=response.id
    )
    assert follow_up.usage is not None
    assert follow_up.usage.input_tokens == 7 + NATURAL_TOKENS + 2


async def test_responses_stream_helper_parses_everything(oai: openai.AsyncOpenAI) -> None:
    async with oai.responses.stream(model=QWEN, input="stream please") as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds.count("response.output_text.delta") == NATURAL_TOKENS
    assert kinds[-1] == "response.completed"
    assert final.output_text == expected_text("stream please")
    assert final.usage is not None and final.usage.output_tokens == NATURAL_TOKENS


async def test_responses_create_stream_and_max_output_tokens(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.responses.create(
        model=QWEN, input=[{"role": "user", "content": "short"}], stream=True, max_output_tokens=3
    )
    events = [event async for event in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == expected_text("short", max_tokens=3)
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.usage is not None and last.response.usage.output_tokens == 3


async def test_raw_responses_frames_are_named(http: httpx.AsyncClient) -> None:
    body = {"model": QWEN, "input": "x", "stream": True}
    async with http.stream("POST", "/v1/responses", json=body) as response:
        raw = (await response.aread()).decode()
    frames = [f for f in raw.split("\n\n") if f]
    assert all(f.startswith("event: response.") for f in frames)
    assert "[DONE]" not in raw


async def test_messages_create(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(
        model=QWEN,
        max_tokens=100,
        system="You are terse.",
        messages=[{"role": "user", "content": "Hello Claude-ish model"}],
    )
    assert message.model == QWEN
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text == expected_text("Hello Claude-ish model")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, NATURAL_TOKENS)

    limited = await claude.messages.create(
        model=QWEN, max_tokens=2, messages=[{"role": "user", "content": "x"}]
    )
    assert limited.stop_reason == "max_tokens" and limited.usage.output_tokens == 2


async def test_messages_stream_and_stop_sequence(claude: anthropic.AsyncAnthropic) -> None:
    natural = expected_text("stream it")
    stop = natural.split()[3]
    async with claude.messages.stream(
        model=QWEN,
        max_tokens=1000,
        stop_sequences=[stop],
        messages=[{"role": "user", "content": [{"type": "text", "text": "stream it"}]}],
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    block = final.content[0]
    assert block.type == "text" and block.text == "".join(pieces)
    assert natural.startswith("".join(pieces)) and stop not in "".join(pieces)
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop
    assert final.usage.input_tokens == 2 and final.usage.output_tokens == len(pieces)

    raw = await claude.messages.create(
        model=QWEN, max_tokens=5, messages=[{"role": "user", "content": "x"}], stream=True
    )
    kinds = [event.type async for event in raw]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == 5


async def test_messages_errors_use_anthropic_envelope(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(
            model="claude-nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert 'Invalid model identifier "claude-nope"' in body["error"]["message"]
