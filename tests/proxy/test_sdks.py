"""The official OpenAI and Anthropic SDKs, pointed at the gateway, work unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.servers import API_KEY, ServerProcess

MODEL = "qwen/qwen3-4b"


@pytest.fixture
def oai(gateway: ServerProcess) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=API_KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def claude(gateway: ServerProcess) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=API_KEY, max_retries=0)
    yield client
    client.close()


def test_openai_models_and_chat(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert MODEL in ids
    done = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=5
    )
    assert done.choices[0].message.content
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 5


def test_openai_streaming_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "count for me"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
    assert len(pieces) == 6
    assert usage is not None and usage.completion_tokens == 6


def test_openai_completions_embeddings_responses(oai: openai.OpenAI) -> None:
    text = oai.completions.create(model=MODEL, prompt="Once upon", max_tokens=4)
    assert text.choices[0].text
    emb = oai.embeddings.create(
        model="text-embedding-nomic-embed-text-v1.5", input=["a", "b"], encoding_format="float"
    )
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    resp = oai.responses.create(model=MODEL, input="hi there", max_output_tokens=5)
    assert resp.output_text
    with oai.responses.stream(model=MODEL, input="stream please", max_output_tokens=64) as events:
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        final = events.get_final_response()
    assert deltas and final.output_text == "".join(deltas)


def test_openai_sees_gateway_errors(gateway: ServerProcess) -> None:
    bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    bad.close()


def test_anthropic_messages(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content and msg.content[0].type == "text"
    assert msg.stop_reason == "max_tokens"
    with claude.messages.stream(
        model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "stream it"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens == 4
