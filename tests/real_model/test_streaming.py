"""A stream through lmgate is the server's stream: the same tokens in the same chunks.

Greedy decoding from a fresh prompt is deterministic, so the same request made directly and
through the gateway must yield the same pieces one for one. A proxy that buffered and
re-split the stream, or dropped or merged events, would change the count or the pieces; one
that rewrote chunks would change the fields they carry (llama.cpp adds its own, `timings`).
"""

from __future__ import annotations

from dataclasses import dataclass

import openai
import pytest

from tests.real_model.conftest import Activate
from tests.real_model.engine import ALIAS
from tests.real_model.shared import EXACT_LENGTH, FROM_SCRATCH, MESSAGES

TOKENS = 24


@dataclass(frozen=True, slots=True)
class Streamed:
    pieces: list[str]  # delta content per chunk, "" where a chunk carried none
    fields: list[list[str]]  # the top-level fields of each chunk, as sent
    finish_reason: str | None
    completion_tokens: int | None


def _stream(oai: openai.OpenAI, *, with_usage: bool = True) -> Streamed:
    pieces: list[str] = []
    fields: list[list[str]] = []
    finish: str | None = None
    tokens: int | None = None
    stream = oai.chat.completions.create(
        model=ALIAS,
        messages=MESSAGES,
        temperature=0,
        max_tokens=TOKENS,
        stream=True,
        stream_options={"include_usage": True} if with_usage else openai.omit,
        extra_body={**EXACT_LENGTH, **FROM_SCRATCH},
    )
    for chunk in stream:
        fields.append(sorted(chunk.to_dict()))
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return Streamed(pieces, fields, finish, tokens)


# lmgate asks for usage on the client's behalf and drops the usage chunk again; llama.cpp
# then sends its `timings` in that chunk instead of the last one, so they are lost.
_TIMINGS_LOST = pytest.mark.xfail(
    strict=True,
    reason="lmgate's usage tap drops the chunk llama.cpp moved `timings` into "
    "(known bug; remove this mark once fixed)",
)


@pytest.mark.parametrize(
    "with_usage",
    [pytest.param(True, id="usage-asked"), pytest.param(False, id="plain", marks=_TIMINGS_LOST)],
)
def test_stream_through_lmgate_matches_direct_chunk_for_chunk(
    activate: Activate,
    direct_openai: openai.OpenAI,
    gate_openai: openai.OpenAI,
    with_usage: bool,
) -> None:
    activate()
    direct = _stream(direct_openai, with_usage=with_usage)
    via = _stream(gate_openai, with_usage=with_usage)
    assert via.pieces == direct.pieces
    assert len(via.fields) == len(direct.fields)
    assert via.fields == direct.fields
    assert via.finish_reason == direct.finish_reason == "length"
    assert via.completion_tokens == direct.completion_tokens == (TOKENS if with_usage else None)


def test_greedy_stream_repeats_the_non_streamed_answer(
    activate: Activate, gate_openai: openai.OpenAI
) -> None:
    """Defaults lmgate injects into a plain request give what the explicit stream gives."""
    activate(temperature=0, maxTokens=TOKENS)
    whole = gate_openai.chat.completions.create(
        model=ALIAS, messages=MESSAGES, extra_body={**EXACT_LENGTH, **FROM_SCRATCH}
    )
    assert "".join(_stream(gate_openai).pieces) == whole.choices[0].message.content
