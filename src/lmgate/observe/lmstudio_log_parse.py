"""LM Studio's server log lines, turned into structured `lmstudio_log` event fields.

An entry starts with `[YYYY-MM-DD HH:MM:SS][LEVEL]` (older builds: `[... .mmm] [LEVEL] `),
then optional tags such as `[LM STUDIO SERVER]`, `[Client=lms-cli]` or a model key, then the
message; lines that do not start that way continue the entry before them (request bodies,
sampling parameter lists). DEBUG entries carry `key = value` lists (sampling parameters),
prompt-processing percentages and prompt-cache reuse counts, extracted as fields.

The log holds prompts and answers in many shapes (request bodies, "Generated prediction: {...}",
"Accumulated 12 tokens: ...", "Last message: {...}", continuation lines), and new LM Studio
builds add more. So what is shown is decided by an allowlist: a line is published as it is only
when it has a shape known to carry neither (status and life-cycle lines, numbers, parameter
lists; for warnings and errors also plain words without quotes or braces). Every other line is
replaced by "[N characters not shown]", after its label when the label is a known one ("Generated
prediction: [812 characters not shown]"). With prompt logging on, that text is shown redacted
and truncated instead. Fields are read from the known-safe lines only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_HEAD = re.compile(
    r"^\[(?P<time>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?)\]\s*\[(?P<level>[A-Za-z]+)\]"
    r"\s?(?P<rest>.*)$"
)
# Tags: `[Client=NAME]`, an upper-case source (`[LM STUDIO SERVER]`), a model key. Anything else
# in brackets stays in the message, where the allowlist below judges it.
_TAG = re.compile(r"^\[(Client=[\w.@:/-]{1,100}|[A-Z0-9][A-Z0-9 _.-]{0,60}|[\w.@:/+-]{1,200})\]\s?")
_PAIR = re.compile(r"\b([A-Za-z_][\w.]*)\s+=\s+(-?[\w.+-]+)")
_PROGRESS = re.compile(r"(?i)prompt processing progress:?\s*(\d+(?:\.\d+)?)\s*%")
_CACHE = re.compile(
    r"(?i)cache reuse summary:\s*(\d+)\s*/\s*(\d+) of prompt\s*\((\d+(?:\.\d+)?)%\)"
    r"(?:,\s*(\d+) prefix)?(?:,\s*(\d+) non-prefix)?"
)
_INT = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?\d*\.\d+(?:[eE][-+]?\d+)?$")

_METHOD = r"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)"
_PATH = r"/[\w./~%-]*"  # no query string: it may carry anything
_ID = r"[\w./@:+-]{1,200}"
_NUM = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_PAIRS = rf"(?:[A-Za-z_][\w.]*\s+=\s+{_NUM}\s*,?\s*)+"
# Lines known to carry no prompt or answer text: matched whole, ignoring case and the
# whitespace around them. Status and life-cycle lines, numbers, parameter lists.
_SAFE_LINE = re.compile(
    "|".join(
        f"(?:{shape})"
        for shape in (
            r"running (?:chat )?completion on conversation(?: with \d+ messages?)?\.?",
            r"streaming response\.{0,3}",
            r"first token generated\.? continuing to stream response\.{0,3}",
            r"finished streaming response\.?",
            r"client disconnected\.? stopping generation\.{0,3}(?: \(if the model is busy "
            r"processing the prompt, it will finish first\.?\))?",
            r"client (?:created|connected|disconnected)\.?",
            r"processing queued request\.{0,3}",
            r"accumulating tokens \.{3} \(stream = (?:true|false)\)",
            r"context overflow policy is:? [a-z ]{1,40}",
            rf"received request:? {_METHOD} (?:request )?to {_PATH}",
            rf"received {_METHOD} request to {_PATH}",
            rf"unexpected endpoint or method\.? \({_METHOD} {_PATH}\)\.?"
            r"(?: returning 200 anyway\.?)?",
            r"returning 200 anyway\.?",
            rf"sampling params:?\s*(?:{_PAIRS})?",
            _PAIRS,
            r"(?:sampler chain|sampler|sampling):? [\w -]+(?: -> [\w -]+)+",
            r"prompt processing progress:? \d+(?:\.\d+)?\s*%",
            r"looking for non-prefix sequences(?: of size >= \d+)? to reuse from cache",
            r"cache reuse summary: \d+\s*/\s*\d+ of prompt \(\d+(?:\.\d+)?%\)"
            r"(?:, \d+ prefix)?(?:, \d+ non-prefix)?",
            r"total prompt tokens: \d+(?: / prompt tokens to decode: \d+)?",
            r"prompt tokens to decode: \d+",
            r"beginprocessingprompt",
            rf"finishedprocessingprompt\.?(?: progress: {_NUM})?",
            r"success! http server listening on port \d+",
            r"(?:http )?server (?:started|stopped|starting|stopping)\.{0,3}",
            r"stopping server\.{0,3}",
            r"verbose server logs are (?:enabled|disabled)",
            r"supported endpoints:",
            rf"->\s*{_METHOD}\s+https?://[\w.:\[\]-]+{_PATH}",
            r"(?:jit )?(?:loading|loaded|unloading|unloaded|ejecting|ejected|evicting|"
            rf"auto-evicting)(?: model)?:? {_ID}(?: \([\w ./@:=,+-]{{0,80}}\))?\.?",
            rf"model (?:loaded|unloaded|ejected)(?: successfully)?(?::? {_ID})?\.?",
            r"num_draft_tokens setting '\d+' ignored, no draft model loaded/activated for "
            r"this generation",
        )
    ),
    re.IGNORECASE,
)
# Warnings and errors in plain words (no quotes, braces or brackets that could hold text
# copied from a request) are shown: they are what an operator watches the log for.
_PLAIN = re.compile(r"[A-Za-z0-9 .,;:!?()%/_=+#-]{1,200}")
_LOUD = frozenset(("WARN", "WARNING", "ERROR", "FATAL", "CRITICAL"))
# Labels LM Studio puts before prompt or answer text: the label is shown, what follows is not.
_CONTENT = re.compile(
    "|".join(
        f"(?:{label})"
        for label in (
            rf"received (?:request:? )?{_METHOD} (?:request )?to {_PATH} with body:?",
            rf"received request for {_PATH} with invalid json:?",
            r"generated prediction:?",
            r"accumulated \d+ tokens?:?",
            r"last message:?",
            r"model generated tool calls:?",
            r"returning(?=\s*[\[{])",
            r"\[server error\]",
            r"(?:formatted |rendered |full )?prompt:",
        )
    ),
    re.IGNORECASE,
)
Clean = Callable[[str], str]


@dataclass(slots=True)
class LogEntry:
    time: str
    level: str | None
    tags: list[str]
    lines: list[str] = field(default_factory=list)


def start_of(line: str) -> LogEntry | None:
    match = _HEAD.match(line)
    if match is None:
        return None
    rest, tags = match["rest"], []
    while (tag := _TAG.match(rest)) is not None:
        tags.append(tag[1].strip())
        rest = rest[tag.end() :]
    return LogEntry(match["time"], match["level"].upper(), tags, [rest])


class EntryAssembler:
    """Groups lines into entries; an entry is finished by the next one, or by `flush`."""

    def __init__(self) -> None:
        self.pending: LogEntry | None = None

    def feed(self, line: str) -> LogEntry | None:
        entry = start_of(line)
        if entry is None:
            if self.pending is None:  # the file began mid-entry
                self.pending = LogEntry("", None, [], [line])
            else:
                self.pending.lines.append(line)
            return None
        done, self.pending = self.pending, entry
        return done

    def flush(self) -> LogEntry | None:
        done, self.pending = self.pending, None
        return done


def _number(text: str) -> int | float | str:
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _hidden(text: str, clean: Clean | None) -> str:
    return f"[{len(text)} characters not shown]" if clean is None else clean(text)


def _shown(message: str, level: str | None, clean: Clean | None) -> tuple[str, str]:
    """The message as published, and the text of its known-safe lines (read for fields)."""
    label = _CONTENT.match(message)
    if label is not None:
        rest = message[label.end() :].strip()
        return (f"{label[0]} {_hidden(rest, clean)}" if rest else label[0]), ""
    loud = level in _LOUD
    shown: list[str] = []
    safe: list[str] = []
    run: list[str] = []
    for line in message.split("\n"):
        bare = line.strip()
        if not bare or _SAFE_LINE.fullmatch(bare) or (loud and _PLAIN.fullmatch(bare)):
            if run:
                shown.append(_hidden("\n".join(run), clean))
                run = []
            shown.append(line)
            safe.append(line)
        else:
            run.append(line)
    if run:
        shown.append(_hidden("\n".join(run), clean))
    return "\n".join(shown), "\n".join(safe)


def fields(entry: LogEntry, clean_body: Clean | None = None) -> dict[str, Any]:
    """Event fields. Text that may be a prompt or an answer is hidden, or with `clean_body`
    (prompt logging on) redacted and truncated; fields are read from known-safe lines only."""
    message, safe = _shown("\n".join(entry.lines).strip(), entry.level, clean_body)
    out: dict[str, Any] = {"level": entry.level, "logTime": entry.time or None}
    out["message"] = message
    out["tags"] = entry.tags
    for tag in entry.tags:
        if tag.startswith("Client="):
            out["client"] = tag[7:]
        elif tag.isupper():
            out.setdefault("source", tag)
        else:
            out.setdefault("model", tag)
    params = {name: _number(value) for name, value in _PAIR.findall(safe)}
    if params:
        out["params"] = params
    if (progress := _PROGRESS.search(safe)) is not None:
        out["progress"] = float(progress[1])
    if (cache := _CACHE.search(safe)) is not None:
        reuse: dict[str, Any] = {"reused": int(cache[1]), "total": int(cache[2])}
        reuse["percent"] = float(cache[3])
        if cache[4] is not None:
            reuse["prefix"] = int(cache[4])
        if cache[5] is not None:
            reuse["nonPrefix"] = int(cache[5])
        out["cacheReuse"] = reuse
    return out
