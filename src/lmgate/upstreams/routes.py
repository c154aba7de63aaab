"""`/admin/upstreams`: every upstream (its kind and capabilities, health and models), and
adding, draining and removing them at runtime, each change stored, then applied and published
as an event by every worker (`Upstreams.take`).

Tokens are never shown (only whether one is set), URLs with their credentials masked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from lmgate.errors import BadRequest, GatewayError, NotFound
from lmgate.exchange import clip
from lmgate.gateway import Gateway, gateway_of
from lmgate.upstreams.config import MAX_UPSTREAMS, UpstreamConfig, parse_upstreams
from lmgate.upstreams.members import Member, Upstreams
from lmgate.upstreams.registry import ACTIVE, DRAINING, REMOVED, UpstreamRegistry, problems
from lmgate.upstreams.waking import power, wake_upstream

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
        "upstreams": [describe(m, primary=m is primary) | power(gw, m) for m in gw.upstreams],
    }


class UpstreamConflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "upstream_conflict"


def _registry(gw: Gateway) -> tuple[Upstreams, UpstreamRegistry]:
    ups = gw.upstreams
    if ups.parts is None or ups.parts.registry is None:  # pragma: no cover - always built so
        raise UpstreamConflict("this gateway's upstreams cannot be changed at runtime")
    return ups, ups.parts.registry


async def _follow(ups: Upstreams, registry: UpstreamRegistry) -> None:
    """Make this worker's list the stored one now (another worker's last change included),
    publishing what changed: the same path every other worker takes when it sees the table
    move, so each applies a change exactly alike."""
    look = ups.look()
    ups.take(await asyncio.to_thread(registry.raw), look)


def _member(ups: Upstreams, name: str) -> Member:
    member = ups.get(name)
    if member is None:
        raise NotFound(f"no upstream is named '{clip(name)}'", code="upstream_not_found")
    return member


@router.post("/upstreams", status_code=201)
async def add(body: dict[str, Any], request: Request) -> dict[str, Any]:
    """Add an upstream (its table as in the config file); kept across restarts."""
    gw = gateway_of(request)
    ups, registry = _registry(gw)
    try:
        (config,) = [UpstreamConfig.model_validate(t) for t in parse_upstreams([body])]
    except ValidationError as exc:
        raise BadRequest(f"invalid upstream: {problems(exc)}", code="invalid_upstream") from None
    await _follow(ups, registry)  # one another worker added a moment ago is known here too
    if ups.get(config.name) is not None:
        raise UpstreamConflict(f"an upstream is already named '{config.name}'")
    if len(ups) >= MAX_UPSTREAMS:
        raise UpstreamConflict(
            f"there are {len(ups)} upstreams, the most one gateway serves; remove one first",
            code="too_many_upstreams",
        )
    await asyncio.to_thread(registry.save, config, ACTIVE)
    await _follow(ups, registry)
    return {"upstream": describe(_member(ups, config.name), primary=False)}


async def _set_state(request: Request, name: str, state: str) -> dict[str, Any]:
    """Drain or resume: the state is saved first (kept across restarts), then applied."""
    gw = gateway_of(request)
    ups, registry = _registry(gw)
    await _follow(ups, registry)
    member = _member(ups, name)
    await asyncio.to_thread(registry.save, member.config, state)
    await _follow(ups, registry)
    return {"upstream": describe(member, primary=member is ups.primary)}


@router.post("/upstreams/{name}/drain")
async def drain(name: str, request: Request) -> dict[str, Any]:
    """Take no new requests there; what runs ends normally. Kept across restarts."""
    return await _set_state(request, name, DRAINING)


@router.post("/upstreams/{name}/resume")
async def resume(name: str, request: Request) -> dict[str, Any]:
    """A drained upstream takes new requests again. Kept across restarts."""
    return await _set_state(request, name, ACTIVE)


@router.delete("/upstreams/{name}")
async def remove(name: str, request: Request) -> dict[str, Any]:
    """Remove an upstream (never the primary); its running answers end normally first."""
    gw = gateway_of(request)
    ups, registry = _registry(gw)
    await _follow(ups, registry)
    member = _member(ups, name)
    if member is ups.primary:
        raise UpstreamConflict(f"'{name}' is the primary upstream; drain it instead")
    configured = {c.name for c in gw.settings.upstream_configs()}
    if name in configured:  # the row keeps it removed over the configuration
        await asyncio.to_thread(registry.save, member.config, REMOVED)
    else:  # added at runtime: nothing is left of it
        await asyncio.to_thread(registry.forget, name)
    await _follow(ups, registry)
    return {"removed": name}


@router.post("/upstreams/{name}/wake", status_code=202)
async def wake(name: str, request: Request) -> dict[str, Any]:
    """Send its Wake-on-LAN packet now and watch for it to answer (`upstreams.waking`)."""
    gw = gateway_of(request)
    return wake_upstream(gw, _member(gw.upstreams, name))
