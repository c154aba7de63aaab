"""A tool's output made fit for an error message: short, plain text, and without secrets.

The message reaches admin clients and logs, so known secrets (the upstream token, keys) are
masked wherever they appear, as are credentials in URLs and token-looking words."""

from __future__ import annotations

import re

from lmgate.redaction import MARK, scrub_urls

SUMMARY_CHARS = 300
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_LABELLED = re.compile(
    r"(?i)\b(bearer|token|api[_-]?key|passkey|password|secret|authorization)(\s*[:=]\s*|\s+)"
    r"(\"?)[^\s\"',;]+"
)
_TOKEN_LIKE = re.compile(r"\b(?:sk|lm|lmg)[-_][A-Za-z0-9_\-]{12,}\b")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MARK)
    text = _LABELLED.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MARK}", text)
    return scrub_urls(_TOKEN_LIKE.sub(MARK, text))


def summarize(text: str, secrets: tuple[str, ...] = ()) -> str:
    """The output's meaningful lines, one line, at most `SUMMARY_CHARS` characters; the lines
    that speak of an error first (a tool's last words are usually the reason)."""
    plain = _ANSI.sub("", text).replace("\r", "\n")
    lines = [" ".join(line.split()) for line in plain.splitlines()]
    lines = [line for line in lines if line and not set(line) <= set("-=*#|.")]
    errors = [line for line in lines if re.search(r"(?i)error|fail|not found|cannot", line)]
    chosen = (errors or lines)[-4:]
    summary = redact(" | ".join(chosen), secrets)
    if len(summary) > SUMMARY_CHARS:
        summary = summary[: SUMMARY_CHARS - 1] + "…"
    return summary
