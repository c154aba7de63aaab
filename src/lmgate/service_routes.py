"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from lmgate.gateway import gateway_of
from lmgate.landing import landing

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
    probe = await gw.upstream.probe("/v1/models", limit_s=min(gw.settings.connect_timeout, 2.0))
    gw.prometheus.upstream_up.set(1 if probe.ok else 0)
    body: dict[str, object] = {
        "status": "ready" if probe.ok else "unavailable",
        "upstream": gw.settings.upstream_url,
        "latencyMs": round(probe.latency_ms, 3),
    }
    if not probe.ok:
        body["error"] = {
            "message": f"upstream {gw.settings.upstream_url} is not ready: {probe.error}",
            "type": "upstream_error",
            "code": "upstream_unavailable",
        }
    return JSONResponse(body, status_code=200 if probe.ok else 503)
