"""`lmgate models profile policy MODEL`: a model's scheduling policy through a running gateway.

Slots, idle TTL and pin are changed one by one (`PATCH`), so a stored load config and defaults
stay as they are; with no option the profile is shown.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer

from lmgate.cli.models import Key, Url, call_gateway
from lmgate.cli.tables import pairs, text
from lmgate.settings_values import DURATION_HINT, parse_duration

_CLEAR = ("none", "default")


def _slots(value: str) -> int | None:
    if value.strip().lower() in _CLEAR:
        return None
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter("a whole number of at least 1, or none") from None


def _ttl(value: str) -> float | None:
    if value.strip().lower() in _CLEAR:
        return None
    seconds = parse_duration(value)
    if seconds is None:
        raise typer.BadParameter(f"{DURATION_HINT}; 0 = never, none = the default")
    return seconds


def policy(
    model: Annotated[str, typer.Argument(help="Model key.")],
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    slots: Annotated[
        str | None,
        typer.Option(help="Answers at once for this model, or none (what the upstream reports)."),
    ] = None,
    ttl: Annotated[
        str | None,
        typer.Option(
            help="Unload it after this long idle (30s, 10m; 0 = never; none = LMGATE_MODEL_TTL)."
        ),
    ] = None,
    pinned: Annotated[
        bool | None,
        typer.Option("--pinned/--no-pinned", help="Never evict it nor unload it for idleness."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show MODEL's profile, or change its scheduling policy: --slots, --ttl, --pinned."""
    path = f"/admin/models/{quote(model, safe='/@')}/profile"
    body: dict[str, Any] = {}
    if slots is not None:
        body["slots"] = _slots(slots)
    if ttl is not None:
        body["ttl"] = _ttl(ttl)
    if pinned is not None:
        body["pinned"] = pinned
    data = call_gateway(url, admin_key, "PATCH" if body else "GET", path, body or None)
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    ttl_shown = data.get("ttl")
    typer.echo(
        f"{data['modelKey']}: slots {text(data.get('slots'))}, "
        f"ttl {'never' if ttl_shown == 0 else text(ttl_shown)}, "
        f"pinned {text(bool(data.get('pinned')))}"
    )
    typer.echo(f"load config: {pairs(data.get('loadConfig') or {})}")
    typer.echo(f"default inference: {pairs(data.get('defaultInference') or {})}")
