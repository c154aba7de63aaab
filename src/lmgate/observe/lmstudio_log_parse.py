"""LM Studio's server log lines, turned into structured `lmstudio_log` event fields.

An entry starts with `[YYYY-MM-DD HH:MM:SS][LEVEL]` (older builds: `[... .mmm] [LEVEL] `),
then optional tags such as `[LM STUDIO SERVER]`, `[Client=lms-cli]` or a model key, then the
message; lines that do not start that way continue the entry before them (request bodies,
sampling parameter lists). DEBUG entries carry `key = value` lists (sampling parameters),
prompt-processing percentages and prompt-cache reuse counts, extracted as fields. Request
bodies hold prompts, so they are replaced by their size unless prompt logging is on.
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
_TAG = re.compile(r"^\[([^\[\]]{1,200})\]\s?")
_PAIR = re.compile(r"\b([A-Za-z_][\w.]*)\s+=\s+(-?[\w.+-]+)")
_PROGRESS = re.compile(r"(?i)prompt processing progress:?\s*(\d+(?:\.\d+)?)\s*%")
_CACHE = re.compile(
    r"(?i)cache reuse summary:\s*(\d+)\s*/\s*(\d+) of prompt\s*\((\d+(?:\.\d+)?)%\)"
    r"(?:,\s*(\d+) prefix)?(?:,\s*(\d+) non-prefix)?"
)
_BODY = re.compile(r"(?s)^(.*? with body)\s*(\{.*)$")
_INT = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?\d*\.\d+(?:[eE][-+]?\d+)?$")


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


def _hide_body(message: str, clean: Callable[[str], str] | None) -> str:
    match = _BODY.match(message)
    if match is None:
        return message
    if clean is None:
        return f"{match[1]} [{len(match[2])} characters not shown]"
    return f"{match[1]} {clean(match[2])}"


def fields(entry: LogEntry, clean_body: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Event fields. `clean_body` redacts request bodies; None hides them entirely."""
    message = _hide_body("\n".join(entry.lines).strip(), clean_body)
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
    params = {name: _number(value) for name, value in _PAIR.findall(message)}
    if params:
        out["params"] = params
    if (progress := _PROGRESS.search(message)) is not None:
        out["progress"] = float(progress[1])
    if (cache := _CACHE.search(message)) is not None:
        reuse: dict[str, Any] = {"reused": int(cache[1]), "total": int(cache[2])}
        reuse["percent"] = float(cache[3])
        if cache[4] is not None:
            reuse["prefix"] = int(cache[4])
        if cache[5] is not None:
            reuse["nonPrefix"] = int(cache[5])
        out["cacheReuse"] = reuse
    return out
