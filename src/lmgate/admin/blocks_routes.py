"""`/admin/blocks`: addresses shut out for bad keys, listed and lifted by an admin.

A block otherwise lasts until it runs out (up to an hour); an operator who knows the cause
(a script with a stale key) should not have to wait or restart. Blocks are kept per worker,
like the damping that makes them: with several workers each call reaches one of them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lmgate.errors import BadRequest, NotFound
from lmgate.gateway import gateway_of
from lmgate.guard.auth import principal_of
from lmgate.guard.damping import bucket_of_text
from lmgate.observe.events import address_unblocked

router = APIRouter(prefix="/admin/blocks", tags=["security"])


def _answer(request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    damper = gw.security.damper
    return {
        "blocks": damper.blocks(),
        "limit": damper.limit,
        "exempt": gw.settings.auth_fail_exempt,
        "worker": gw.worker.as_json(),
    }


@router.get("")
async def list_blocks(request: Request) -> dict[str, Any]:
    """Every address (IPv6: /64) refused now for too many bad keys, and for how long."""
    return _answer(request)


@router.delete("")
async def clear_blocks(request: Request) -> dict[str, Any]:
    """Lift every block."""
    return _lift(request, None)


@router.delete("/{address:path}")
async def clear_block(address: str, request: Request) -> dict[str, Any]:
    """Lift the block on one address (an IPv6 address lifts its /64)."""
    who = bucket_of_text(address)
    if who is None:
        raise BadRequest(f"'{address[:64]}' is not an IP address", code="invalid_address")
    return _lift(request, who)


def _lift(request: Request, who: str | None) -> dict[str, Any]:
    gw = gateway_of(request)
    lifted = gw.security.damper.clear(who)
    if who is not None and not lifted:
        raise NotFound(f"address {who} is not blocked", code="block_not_found")
    if lifted:
        principal = principal_of(request.scope)
        address_unblocked(gw.bus, lifted, principal.name if principal else None)
    return {"lifted": lifted} | _answer(request)
