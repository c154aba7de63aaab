"""Values as people type them: durations with units, upstream URLs as LM Studio displays them.

Pure functions, used by the settings validators: a person writes `10m` for a timeout and
pastes `http://host:1234/v1` (what LM Studio shows) or `127.0.0.1:1234` for the upstream;
lmgate understands the first and corrects the others, saying what it changed.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_UNIT_NAMES = {
    0.001: ("ms", "msec", "millisecond", "milliseconds"),
    1.0: ("s", "sec", "secs", "second", "seconds"),
    60.0: ("m", "min", "mins", "minute", "minutes"),
    3600.0: ("h", "hr", "hrs", "hour", "hours"),
}
_UNITS = {name: factor for factor, names in _UNIT_NAMES.items() for name in names}
_UNIT = "|".join(sorted(_UNITS, key=len, reverse=True))  # longest first: `ms` before `m`
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})\s*({_UNIT})", re.IGNORECASE)
_DURATION = re.compile(rf"(?:{_NUMBER}\s*(?:{_UNIT})\s*)+", re.IGNORECASE)
_PLAIN = re.compile(rf"[-+]?{_NUMBER}")  # the sign is for validation to judge

DURATION_HINT = "seconds, or a duration such as 30s, 10m, 1h, 1.5s or 500ms"


def parse_duration(text: str, *, unit: float = 1.0) -> float | None:
    """Seconds in `text` (`30`, `30s`, `10m`, `1h30m`, `500ms`); a plain number counts in
    `unit` seconds (1 for the seconds settings, 0.001 for the TypeScript edition's ms names).
    None when `text` is not a duration."""
    value = text.strip()
    if _PLAIN.fullmatch(value):
        return float(value) * unit
    if not _DURATION.fullmatch(value):
        return None
    return sum(float(n) * _UNITS[u.lower()] for n, u in _PART.findall(value))


UPSTREAM_HINT = "an http:// or https:// URL such as http://127.0.0.1:1234"
# API roots people paste as the server's address (LM Studio shows `.../v1`).
API_SUFFIXES = ("/api/v0", "/api/v1", "/v1")


def normalize_upstream(raw: str) -> tuple[str, list[str]]:
    """(the URL lmgate uses, what it corrected). Raises ValueError when it cannot be used.

    A URL without a scheme gets `http://`; a trailing `/v1` (or `/api/v0`, `/api/v1`) is
    dropped, since lmgate forwards those paths as they come and would otherwise call
    `/v1/v1/...`."""
    text = raw.strip()
    notes: list[str] = []
    if not text:
        raise ValueError("the upstream URL is empty")
    if "://" not in text:
        text = "http://" + text
        notes.append(f"upstream {raw.strip()!r} has no scheme: using {text}")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"the upstream must use http:// or https://, not {parts.scheme}://")
    if not parts.hostname or any(c.isspace() for c in text):
        raise ValueError("the upstream URL names no host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("the upstream URL's port is not a number from 1 to 65535") from None
    if parts.query or parts.fragment:
        raise ValueError("the upstream URL must not have a query (?...) or fragment (#...)")
    path = parts.path.rstrip("/")
    suffix = next((s for s in API_SUFFIXES if path.lower().endswith(s)), None)
    if suffix is not None:
        path = path[: -len(suffix)]
        fixed = urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))
        notes.append(
            f"upstream {raw.strip()!r} ends in {suffix}, which is part of the paths lmgate "
            f"forwards (it would call {suffix}{suffix}/...): using {fixed}"
        )
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, "", "")), notes
