"""`GET /admin/upstreams`: every upstream, its kind and capabilities, health and models.

Tokens are never shown (only whether one is set), URLs with their credentials masked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lmgate.gateway import gateway_of
from lmgate.upstreams.members import Member

router = APIRouter(prefix="/admin", tags=["admin"])


def describe(member: Member, *, primary: bool) -> dict[str, Any]:
    watcher = member.watcher
    return {
        **member.config.public(),
        "primary": primary,
        "state": "draining" if member.draining else ("up" if member.up else "down"),
        **watcher.caps.as_json(),
        "lastSync": watcher.synced_at,
        "syncError": watcher.last_error,
        "models": sorted(k for k in watcher.models if member.config.allows(k)),
        "loaded": sorted({i.model_key for i in watcher.instances.values()}),
    }


@router.get("/upstreams")
async def upstreams(request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    primary = gw.upstreams.primary
    return {
        "upstreams": [describe(m, primary=m is primary) for m in gw.upstreams],
    }
