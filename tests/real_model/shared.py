"""Prompts and request options the tier's modules share."""

from __future__ import annotations

from typing import Any

import anthropic
import openai

# The SDKs type `model` (and Anthropic's `max_tokens`) as required, but the wire does not:
# their `omit` leaves the field out of the body, which is what lmgate is there to fill in.
OPENAI_ABSENT: Any = openai.omit
ANTHROPIC_ABSENT: Any = anthropic.omit

PROMPT = "Write a few sentences about the sea."
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]

# llama.cpp options: `ignore_eos` makes the model produce exactly the tokens asked for,
# whatever it would say; `cache_prompt: False` evaluates every prompt from scratch, so two
# greedy requests that are compared start from the same state instead of one reusing the
# other's cached prefix.
EXACT_LENGTH: dict[str, Any] = {"ignore_eos": True}
FROM_SCRATCH: dict[str, Any] = {"cache_prompt": False}


def stop_word(text: str) -> str:
    """A word from the middle of `text` whose first occurrence is not at its start: as a stop
    string it cuts the same greedy answer short, leaving a non-empty prefix."""
    candidates = [word for word in text.split() if text.index(word) > 0]
    assert candidates, f"too little output to pick a stop string from: {text!r}"
    return candidates[len(candidates) // 2]
