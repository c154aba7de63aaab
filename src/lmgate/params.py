"""Query parameters of the control plane, checked into 400 errors that name them.

FastAPI checks typed parameters (`int` with bounds, `bool`) itself; the string ones an admin or
debug route interprets (times, names, lists, event ids) come through here, so a NaN, an
infinity, a number past any date, a negative time, a control character or a megabyte of text
is an OpenAI-style 400 with `param`, never an exception deep in a store or a formatter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from datetime import UTC, datetime

from lmgate.errors import BadRequest

MAX_TEXT = 512  # longer than any model key, key name or glob a person types
MAX_SECONDS = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last time datetime can show
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EVENT_ID = re.compile(r"[0-9]{1,18}")


def invalid(param: str, message: str) -> BadRequest:
    return BadRequest(f"{param} {message}", code="invalid_value", param=param)


def text(value: str | None, param: str, *, limit: int = MAX_TEXT) -> str | None:
    """A free-form name (model, key): None when absent or empty; bounded, printable."""
    if value is None or value == "":
        return None
    if len(value) > limit:
        raise invalid(param, f"is longer than {limit} characters")
    if _CONTROL.search(value):
        raise invalid(param, "contains control characters")
    return value


def timestamp(value: str | None, param: str) -> float | None:
    """Unix seconds from unix seconds, a date or an ISO 8601 time (UTC unless it says
    otherwise); between 1970 and the year 9999, finite."""
    if value is None or not value.strip():
        return None
    raw = value.strip()
    if len(raw) > 64:
        raise invalid(param, "is longer than 64 characters")
    if _NUMBER.fullmatch(raw):
        seconds = float(raw)
    else:
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = when.timestamp()
        except (ValueError, OverflowError, OSError):
            raise invalid(
                param, f"must be a date, an ISO 8601 time or unix seconds, not {raw!r}"
            ) from None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise invalid(param, f"must be a time between 1970 and the year 9999, not {raw!r}")
    return seconds


def names(value: str | None, param: str, allowed: Collection[str]) -> tuple[str, ...]:
    """A comma-separated list of known names, each once, in the order given."""
    if value is not None and len(value) > MAX_TEXT:
        raise invalid(param, f"is longer than {MAX_TEXT} characters")
    given = tuple(n.strip() for n in (value or "").split(",") if n.strip())
    unknown = [n for n in given if n not in allowed]
    if unknown:
        shown = ", ".join(repr(n[:40]) for n in unknown[:5])
        raise invalid(param, f"accepts {', '.join(allowed)}; not {shown}")
    return tuple(dict.fromkeys(given))


def patterns(value: str | None, param: str, *, most: int = 64) -> list[str] | None:
    """A comma-separated list of names or `prefix*` globs (event types): None when absent."""
    if value is None:
        return None
    text(value, param, limit=4096)
    found = [p.strip() for p in value.split(",") if p.strip()]
    if len(found) > most:
        raise invalid(param, f"lists more than {most} entries")
    return found or None


def event_id(value: str | None, param: str) -> int | None:
    """A resumption point: the decimal id of an event lmgate sent."""
    if value is None or not value.strip():
        return None
    raw = value.strip()
    if not _EVENT_ID.fullmatch(raw):
        raise invalid(param, f"must be an event id (decimal digits), not {raw[:40]!r}")
    return int(raw)
