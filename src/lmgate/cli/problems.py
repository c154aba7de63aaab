"""Configuration problems in the words the person used: one line each, naming the flag, env var
or TOML key that holds the bad value, the value, and what would be accepted.

pydantic's own report names internal fields and links to its website; a person who typed
`LMGATE_PORT=abc` or `--allow 192.168.1.0/33` needs to read those back instead.
"""

from __future__ import annotations

import shlex
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from lmgate.settings import DURATIONS, NO_LIMIT_ZERO, Origin, Origins
from lmgate.settings_values import DURATION_HINT, UPSTREAM_HINT

PREFIX = "lmgate: invalid configuration:"
SECRET_FIELDS = frozenset({"admin_key", "metrics_key", "api_keys", "upstream_token"})
_NETWORKS = (
    "IP addresses or networks (CIDR) such as 192.168.1.0/24, 10.0.0.5 or fd00::/8, comma-separated"
)
ACCEPTED: dict[str, str] = {
    "port": "a whole number from 0 to 65535",
    "upstream": UPSTREAM_HINT,
    "allow": _NETWORKS + ", or * for everyone",
    "admin_allow": _NETWORKS + ", or * for everyone",
    "metrics_allow": _NETWORKS + ", or * for everyone",
    "trusted_proxies": _NETWORKS,
    "log_level": "error, warn, info or debug (also warning, critical)",
    "workers": "a whole number from 1 to 64",
    "debug_stream_batch_ms": "milliseconds, or a duration such as 50ms or 0.1s",
    "key_loads_default": "allow or deny",
}
# The TypeScript edition's timeouts count milliseconds.
EDITION_MS = frozenset({"PROXY_TIMEOUT", "PROXY_STREAM_TIMEOUT"})


_BOUNDS = {
    "greater_than": "greater than {gt}",
    "greater_than_equal": "{ge} or more",
    "less_than": "less than {lt}",
    "less_than_equal": "{le} or less",
}


def _accepted(field: str, origin: Origin | None, error: ErrorDetails) -> str:
    kind = error["type"]
    bound = _BOUNDS[kind].format(**(error.get("ctx") or {})) if kind in _BOUNDS else None
    if field in DURATIONS:
        if origin is not None and origin.label.split(" ")[0] in EDITION_MS:
            hint = "milliseconds (0 = no limit), or a duration such as 30s or 10m"
        else:
            hint = DURATION_HINT + ("; 0 = no limit" if field in NO_LIMIT_ZERO else "")
        return f"a duration {bound}: {hint}" if bound else hint
    if field in ACCEPTED:
        return ACCEPTED[field]
    if bound:
        return f"a number {bound}"
    if kind.startswith("bool"):
        return "true or false"
    if kind.startswith("int"):
        return "a whole number"
    if kind.startswith(("float", "decimal")):
        return "a number"
    return str(error["msg"]).removeprefix("Value error, ")


def _shown(field: str, value: Any) -> str:
    if field in SECRET_FIELDS:
        return "(hidden)"
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    if len(text) > 120:
        text = text[:117] + "..."
    return shlex.quote(text) if text.isprintable() else repr(text)


def _where(field: str, origin: Origin | None, value: str) -> str:
    if origin is None:
        return f"{field}={value}"
    if origin.kind == "flag":
        return f"{origin.label} {value}"
    if origin.kind == "file":
        key, _, path = origin.label.partition(" in ")
        return f"{key} = {value} in {path}"
    if origin.kind == "derived":  # reported through the setting it was derived from
        return f"{origin.label} {value}"
    name, _, rest = origin.label.partition(" ")
    return f"{name}={value}{' ' + rest if rest else ''}"


def _line(error: ErrorDetails, origins: Origins) -> str:
    loc = error.get("loc") or ()
    if not loc:  # a check across settings: its message says it all
        return f"{PREFIX} {str(error['msg']).removeprefix('Value error, ')}"
    field = str(loc[0])
    origin = origins.get(field)
    ctx = error.get("ctx") or {}
    bad = ctx.get("value", origin.raw if origin is not None else error.get("input"))
    where = _where(field, origin, _shown(field, bad))
    if error["type"] == "lmgate":
        problem = str(ctx.get("problem", "not valid"))
    elif error["type"] == "value_error":
        return f"{PREFIX} {where}: {str(error['msg']).removeprefix('Value error, ')}"
    else:
        problem = "not valid"
    return f"{PREFIX} {where}: {problem}; expected {_accepted(field, origin, error)}"


def describe(exc: Exception, origins: Origins) -> list[str]:
    """One line per problem in `exc`, raised while building settings under `recording()`."""
    if not isinstance(exc, ValidationError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [f"{PREFIX} {first}"]
    errors = exc.errors(include_url=False)
    failed = {str(e["loc"][0]) for e in errors if e.get("loc")}
    lines: list[str] = []
    for error in errors:
        loc = error.get("loc") or ()
        origin = origins.get(str(loc[0])) if loc else None
        if origin is not None and origin.kind == "derived" and "allow" in failed:
            continue  # the edition's admin access copies the allowlist: one report is enough
        line = _line(error, origins)
        if line not in lines:
            lines.append(line)
    return lines
