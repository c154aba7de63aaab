"""`GET /admin/usage`: token usage per key and model, as the upstream counted it.

    /admin/usage?key=NAME&model=KEY&since=2026-11-01&until=2026-12-01&groupBy=day,model

`since` (inclusive) and `until` (exclusive) take a date, an ISO 8601 time (UTC unless it says
otherwise) or unix seconds, from 1970 to the year 9999, and apply at minute resolution.
`groupBy` is any of `day`, `hour` (UTC), `key`, `model`, `endpoint`, comma-separated. `key=-`
selects requests made without a key. `unreported` counts answers that carried no usage. A
stream that ended without one (cancelled, cut off) still counts its relayed output frames into
`tokensOut`, and into `tokensOutEstimated`, which says how much of `tokensOut` lmgate counted
itself. Every parameter is checked: a bad one is a 400 naming it.
`pendingRows` counts finished requests whose usage is not written yet (while the disk is full
they wait, up to a bound, and are written once it is not), `droppedRows` those lost past that
bound, and `lastWriteError` says when and why a write last failed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from lmgate import params
from lmgate.gateway import gateway_of
from lmgate.store.usage import GROUPS, UsageQuery, totals

router = APIRouter(prefix="/admin", tags=["usage"])


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
    key = params.text(key, "key")
    query = UsageQuery(
        key="" if key == "-" else key,
        model=params.text(model, "model"),
        since=params.timestamp(since, "since"),
        until=params.timestamp(until, "until"),
        group_by=params.names(groupBy, "groupBy", GROUPS),
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
