"""`GET /admin/usage`: token usage per key and model, as the upstream counted it.

    /admin/usage?key=NAME&model=KEY&since=2026-11-01&until=2026-12-01&groupBy=day,model

`since` (inclusive) and `until` (exclusive) take a date, an ISO 8601 time (UTC unless it says
otherwise) or unix seconds, and apply at minute resolution. `groupBy` is any of `day`, `hour`
(UTC), `key`, `model`, `endpoint`, comma-separated. `key=-` selects requests made without a
key. `unreported` counts answers that carried no usage. A stream that ended without one
(cancelled, cut off) still counts its relayed output frames into `tokensOut`, and into
`tokensOutEstimated`, which says how much of `tokensOut` lmgate counted itself.
`pendingRows` counts finished requests whose usage is not written yet (while the disk is full
they wait, up to a bound, and are written once it is not), `droppedRows` those lost past that
bound, and `lastWriteError` says when and why a write last failed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from lmgate.errors import BadRequest
from lmgate.gateway import gateway_of
from lmgate.store.usage import GROUPS, UsageQuery, totals

router = APIRouter(prefix="/admin", tags=["usage"])


def parse_time(value: str | None, param: str) -> float | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(
            f"{param} must be a date, an ISO 8601 time or unix seconds, got {text!r}",
            code="invalid_value",
            param=param,
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_groups(value: str | None) -> tuple[str, ...]:
    names = tuple(n.strip() for n in (value or "").split(",") if n.strip())
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise BadRequest(
            f"groupBy accepts {', '.join(GROUPS)}; not {', '.join(unknown)}",
            code="invalid_value",
            param="groupBy",
        )
    return tuple(dict.fromkeys(names))


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@router.get("/usage")
async def usage(
    request: Request,
    key: str | None = None,
    model: str | None = None,
    since: str | None = None,
    until: str | None = None,
    groupBy: str | None = None,  # the documented query name
) -> dict[str, Any]:
    gw = gateway_of(request)
    query = UsageQuery(
        key="" if key == "-" else key or None,
        model=model or None,
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
        group_by=parse_groups(groupBy),
    )
    if gw.obs.usage is not None:
        await gw.obs.usage.flush()
    found = await asyncio.to_thread(totals, gw.db, query)
    return {
        "enabled": gw.obs.usage is not None,
        "filters": {
            "key": key or None,
            "model": query.model,
            "since": _iso(query.since),
            "until": _iso(query.until),
        },
        "groupBy": list(query.group_by),
        **found,
        **(gw.obs.usage.backlog() if gw.obs.usage is not None else {}),  # unwritten, lost
    }
