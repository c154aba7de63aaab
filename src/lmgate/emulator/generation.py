"""Deterministic fake generation: the same prompt always yields the same reply.

A "token" is one word piece. The natural reply is `NATURAL_TOKENS` consecutive words of a fixed
passage, starting at an offset picked by a hash of the seed text (the last user message), so
output reads like prose yet is predictable, and a reply cut short by `max_tokens` or a stop
string is always a prefix of the natural one.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

NATURAL_TOKENS = 24
EMBEDDING_DIMS = 8

PASSAGE = (
    "Local models answer quietly on your own machine, so every token you read was computed "
    "right here. This reply is shaped by your prompt, kept short on purpose, and streamed one "
    "word at a time until the model decides it has said enough. Ask again with different "
    "words and the answer changes, ask the same way and it repeats exactly, which keeps "
    "things predictable."
)
WORDS = tuple(PASSAGE.split())

FinishKind = Literal["eos", "stop_string", "max_tokens"]


@dataclass(frozen=True)
class Prompt:
    """What generation needs from a request: the seed text and the prompt's token count."""

    seed: str
    tokens: int


@dataclass(frozen=True)
class Completion:
    """A planned reply: the pieces to emit and why generation ended."""

    pieces: tuple[str, ...]
    finish: FinishKind
    stop_sequence: str | None
    prompt_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces)

    @property
    def openai_finish(self) -> str:
        return "length" if self.finish == "max_tokens" else "stop"

    @property
    def anthropic_stop(self) -> str:
        return {"eos": "end_turn", "stop_string": "stop_sequence", "max_tokens": "max_tokens"}[
            self.finish
        ]

    @property
    def sdk_stop_reason(self) -> str:
        """LM Studio's native stop reason names, as reported in v0 `stats`."""
        return {
            "eos": "eosFound",
            "stop_string": "stopStringFound",
            "max_tokens": "maxPredictedTokensReached",
        }[self.finish]


def text_of(content: Any) -> str:
    """Flatten message content (string, part list, or part object) into plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(t for t in (text_of(part) for part in content) if t)
    if isinstance(content, dict):
        for key in ("text", "content"):
            if key in content:
                return text_of(content[key])
    return ""


def word_count(text: str) -> int:
    return len(text.split())


def prompt_from_turns(turns: Iterable[tuple[str, Any]]) -> Prompt:
    """Seed from the last user turn (else the last turn); count words over all turns."""
    texts = [(role, text_of(content)) for role, content in turns]
    users = [text for role, text in texts if role == "user"]
    seed = users[-1] if users else (texts[-1][1] if texts else "")
    return Prompt(seed=seed, tokens=sum(word_count(text) for _, text in texts))


def reply_pieces(seed: str) -> list[str]:
    """The natural reply for `seed`: a run of the passage starting at a hashed offset."""
    offset = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % len(WORDS)
    words = [WORDS[(offset + i) % len(WORDS)] for i in range(NATURAL_TOKENS)]
    words[0] = words[0][0].upper() + words[0][1:]
    words[-1] = words[-1].rstrip(",.") + "."
    return [words[0], *(" " + word for word in words[1:])]


def complete(prompt: Prompt, *, max_tokens: int | None, stop: Sequence[str] = ()) -> Completion:
    """Plan the reply; `max_tokens` None or negative means no limit (LM Studio's -1)."""
    limited = max_tokens is not None and 0 <= max_tokens < NATURAL_TOKENS
    pieces = reply_pieces(prompt.seed)[: max_tokens if limited else NATURAL_TOKENS]
    text = "".join(pieces)
    hit: tuple[int, int, str] | None = None  # (end, start, stop string)
    for candidate in (s for s in stop if s):
        start = text.find(candidate)
        if start >= 0 and (hit is None or (start + len(candidate), start) < hit[:2]):
            hit = (start + len(candidate), start, candidate)
    if hit is None:
        finish: FinishKind = "max_tokens" if limited else "eos"
        return Completion(tuple(pieces), finish, None, prompt.tokens)
    kept: list[str] = []
    remaining = hit[1]
    for piece in pieces:
        if remaining <= 0:
            break
        kept.append(piece[:remaining])
        remaining -= len(piece)
    return Completion(tuple(kept), "stop_string", hit[2], prompt.tokens)


def stop_strings(value: Any) -> list[str]:
    """OpenAI's `stop` is a string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def max_tokens_of(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def embedding_vector(text: str) -> list[float]:
    """A unit-length vector derived from a hash of the text."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [byte / 127.5 - 1.0 for byte in digest[:EMBEDDING_DIMS]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def timing(tokens: int, token_delay: float) -> dict[str, float]:
    """Plausible speed figures for native stats, consistent with the configured pace."""
    per_token = token_delay if token_delay > 0 else 0.005
    generation = round(per_token * max(tokens, 1), 3)
    return {
        "tokens_per_second": round(1 / per_token, 2),
        "time_to_first_token": round(per_token, 3),
        "generation_time": generation,
    }


def new_id(prefix: str, length: int = 21) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def new_hex_id(prefix: str, length: int = 48) -> str:
    return prefix + secrets.token_hex(length // 2)
