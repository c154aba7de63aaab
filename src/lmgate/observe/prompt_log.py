"""Prompt and answer logging: off by default, and redacted and truncated when turned on.

Useful for debugging a client's requests, dangerous everywhere else, hence the switch
(`LMGATE_LOG_PROMPTS`). Redaction removes the gateway's own secrets, bearer tokens, `sk-...`
keys, credentials in URLs, long opaque strings (tokens, base64 images) and e-mail addresses
before anything is written; truncation keeps each line to `limit` characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import structlog

from lmgate.exchange import Exchange

_PATTERNS = (
    re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s/?#@]*@"),  # credentials in a URL
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=:-]+"),
    re.compile(r"\bsk-[A-Za-z0-9_:-]{8,}"),
    re.compile(r"[A-Za-z0-9+/_=-]{32,}"),
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
)
MARK = "[redacted]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MARK)
    for pattern in _PATTERNS:
        text = pattern.sub(MARK, text)
    return text


def clean(text: str, limit: int, secrets: Iterable[str] = ()) -> str:
    """Redacted, then cut to `limit` characters (only a margin past it is ever scanned)."""
    shown = redact(text[: limit + 512], secrets)
    if len(shown) <= limit and len(text) <= limit + 512:
        return shown
    return f"{shown[:limit]}... [{len(text) - limit} more characters]"


def _text(value: Any) -> str:
    """Content in any of the shapes clients send: a string, or a list of typed parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text(part) for part in value)
    if isinstance(value, dict):
        for name in ("text", "content", "input_text", "output"):
            if name in value:
                return _text(value[name])
        return f"[{value.get('type', 'part')}]"
    return "" if value is None else str(value)


def prompt_text(kind: str, body: dict[str, Any]) -> str:
    lines = []
    for name in ("system", "instructions", "system_prompt"):
        if body.get(name):
            lines.append(f"system: {_text(body[name])}")
    turns = body.get("messages") if kind in ("chat", "messages") else None
    if isinstance(turns, list):
        for turn in turns:
            if isinstance(turn, dict):
                lines.append(f"{turn.get('role', '?')}: {_text(turn.get('content'))}")
    else:
        field = {"completions": "prompt", "embeddings": "input"}.get(kind, "input")
        lines.append(_text(body.get(field)))
    return "\n".join(lines)


class PromptLog:
    """Logs one `prompt` line before forwarding and one `answer` line when the answer ends."""

    def __init__(self, *, limit: int, secrets: Iterable[str] = ()) -> None:
        self.limit = limit
        self.secrets = tuple(s for s in secrets if s)
        self.log: Any = structlog.get_logger("lmgate.prompts")

    def _clean(self, text: str) -> str:
        return clean(text, self.limit, self.secrets)

    def request(self, ex: Exchange, kind: str, body: dict[str, Any]) -> None:
        self.log.info(
            "prompt",
            request_id=ex.request_id,
            key=ex.key_name,
            model=ex.model,
            endpoint=kind,
            prompt=self._clean(prompt_text(kind, body)),
        )

    def response(self, ex: Exchange, text: str) -> None:
        self.log.info("answer", request_id=ex.request_id, answer=self._clean(text))
