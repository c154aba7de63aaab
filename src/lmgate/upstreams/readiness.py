"""`/ready` with several upstreams: ready while some upstream that is not draining answers its
model list, and, when a model is active, one of those answering offers it."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse

from lmgate.gateway import Gateway


async def several_ready(gw: Gateway, operator: bool) -> JSONResponse:
    limit = min(gw.settings.connect_timeout, 2.0)
    members = [m for m in gw.upstreams if not m.draining]
    probes = await asyncio.gather(*(m.client.probe("/v1/models", limit_s=limit) for m in members))
    up = [m for m, p in zip(members, probes, strict=True) if p.ok]
    active = gw.state.state.active_model
    ok = bool(up) and (active is None or any(m.offers(active) for m in up))
    gw.prometheus.upstream_up.set(1 if ok else 0)
    body: dict[str, Any] = {"status": "ready" if ok else "unavailable"}
    if operator:
        body["upstreams"] = {m.name: p.ok for m, p in zip(members, probes, strict=True)}
    if not ok:
        why = "no upstream answers" if not up else f"no upstream that answers offers {active}"
        body["error"] = {
            "message": f"the upstreams are not ready: {why}" if operator else "not ready",
            "type": "upstream_error",
            "code": "upstream_unavailable",
        }
    return JSONResponse(body, status_code=200 if ok else 503)
