"""The Anthropic surface (`/v1/messages`) through lmgate, driven by the Anthropic SDK."""

from __future__ import annotations

import anthropic
import openai

from tests.real_model.conftest import Activate
from tests.real_model.engine import ALIAS
from tests.real_model.shared import (
    ANTHROPIC_ABSENT,
    EXACT_LENGTH,
    FROM_SCRATCH,
    MESSAGES,
    stop_word,
)

GREEDY = {**EXACT_LENGTH, **FROM_SCRATCH}


def _text(message: anthropic.types.Message) -> str:
    """The answer's one block, which must be text."""
    [block] = message.content
    assert isinstance(block, anthropic.types.TextBlock)
    return block.text


def test_message_round_trip(activate: Activate, gate_anthropic: anthropic.Anthropic) -> None:
    activate()
    message = gate_anthropic.messages.create(
        model=ALIAS, max_tokens=6, messages=MESSAGES, extra_body=EXACT_LENGTH
    )
    assert (message.type, message.role) == ("message", "assistant")
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 6


def test_message_stream_matches_the_plain_answer(
    activate: Activate, gate_anthropic: anthropic.Anthropic
) -> None:
    """Greedy answers agree streamed and not, both on lmgate's defaults; the SDK rebuilds the
    message from the events."""
    activate(temperature=0, maxTokens=16)
    plain = gate_anthropic.messages.create(
        model=ANTHROPIC_ABSENT, max_tokens=ANTHROPIC_ABSENT, messages=MESSAGES, extra_body=GREEDY
    )
    with gate_anthropic.messages.stream(
        model=ANTHROPIC_ABSENT, max_tokens=ANTHROPIC_ABSENT, messages=MESSAGES, extra_body=GREEDY
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == _text(plain) == _text(final)
    assert final.usage.output_tokens == plain.usage.output_tokens == 16
    assert final.stop_reason == plain.stop_reason == "max_tokens"


def test_stop_strings_default_becomes_stop_sequences(
    activate: Activate, gate_anthropic: anthropic.Anthropic, direct_openai: openai.OpenAI
) -> None:
    whole = direct_openai.chat.completions.create(
        model=ALIAS, messages=MESSAGES, temperature=0, max_tokens=24, extra_body=GREEDY
    )
    text = whole.choices[0].message.content or ""
    stop = stop_word(text)
    activate(temperature=0, maxTokens=24, stopStrings=[stop])
    cut = gate_anthropic.messages.create(
        model=ANTHROPIC_ABSENT, max_tokens=ANTHROPIC_ABSENT, messages=MESSAGES, extra_body=GREEDY
    )
    assert cut.stop_sequence == stop
    assert cut.stop_reason != "max_tokens"  # this llama.cpp build says "end_turn"
    assert _text(cut) == text[: text.index(stop)]
