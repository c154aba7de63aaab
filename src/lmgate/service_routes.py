"""Liveness and readiness.

`/ready` answers any valid key (a load balancer's, a scraper's), so it says where the upstream
is and why it failed only to whoever may see the upstream anyway: an admin key, or the local
operator of a gateway without keys. Others learn "ready" or "unavailable", never an internal
address; the URL shown never carries the credentials it may hold.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from lmgate.gateway import gateway_of
from lmgate.landing import landing
from lmgate.redaction import operator_view
from lmgate.upstreams.readiness import several_ready

router = APIRouter(tags=["service"])
router.add_api_route("/", landing, methods=["GET"], include_in_schema=False)


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the gateway answers. Says nothing about the upstream."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 only when the upstream answers its model list (within 2 s at most)."""
    gw = gateway_of(request)
    if gw.upstreams.routed:
        return await several_ready(gw, operator_view.get())
    probe = await gw.upstream.probe("/v1/models", limit_s=min(gw.settings.connect_timeout, 2.0))
    gw.prometheus.upstream_up.set(1 if probe.ok else 0)
    operator = operator_view.get()  # an admin key, or no keys at all (auth off, loopback)
    body: dict[str, object] = {"status": "ready" if probe.ok else "unavailable"}
    if operator:
        body["upstream"] = gw.settings.upstream_shown
    body["latencyMs"] = round(probe.latency_ms, 3)
    if not probe.ok:
        reason = f": {probe.error}" if operator and probe.error else ""
        body["error"] = {
            "message": f"the upstream is not ready{reason}",
            "type": "upstream_error",
            "code": "upstream_unavailable",
        }
    return JSONResponse(body, status_code=200 if probe.ok else 503)
