"""`/admin/keys`: managed API keys over HTTP (admin scope), the same operations as `lmgate keys`.

A new or rotated key is in the response body once and nowhere else: not in logs, not in
events, not in the database (which keeps only its HMAC).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.responses import JSONResponse

from lmgate.errors import BadRequest, GatewayError, NotFound
from lmgate.gateway import Gateway, gateway_of
from lmgate.pairing.codes import PairingStore
from lmgate.store.keys import (
    KEEP,
    MAX_DAILY_TOKENS,
    MAX_LOADS_PER_HOUR,
    MAX_WEIGHT,
    PRIORITIES,
    KeyProblem,
    KeyRow,
    KeyUpdate,
    NameTaken,
    NewKey,
    UnknownKey,
    parse_expiry,
)

router = APIRouter(prefix="/admin/keys", tags=["keys"])

_ONCE = "Store this key now: it is shown only once and cannot be recovered."


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "key_name_taken"


class Scheduling(BaseModel):
    """How the scheduler treats the key's requests (the same bounds as `lmgate keys`)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    weight: float | None = Field(
        None,
        gt=0,
        le=MAX_WEIGHT,
        allow_inf_nan=False,
        description="Share among waiting requests of the same priority (default 1).",
    )
    priority: int | None = Field(
        None,
        ge=PRIORITIES[0],
        le=PRIORITIES[-1],
        description="Higher classes are served first (default 0; above 0: admin keys only).",
    )
    loads: Literal["allow", "deny"] | None = Field(
        None,
        description="Whether requests may make lmgate load a model; null or absent: the "
        "default (admin keys allow, others LMGATE_KEY_LOADS_DEFAULT).",
    )
    max_loads_per_hour: int | None = Field(
        None, ge=1, le=MAX_LOADS_PER_HOUR, description="Model loads it may cause per hour."
    )
    tools: Literal["allow", "deny"] | None = Field(
        None,
        description="Whether requests may have LM Studio use tools (MCP servers, plugins); "
        "by default allow for admin keys, deny for others.",
    )
    hours: str | None = Field(
        None, max_length=20, description="Allowed hours, HH:MM-HH:MM (e.g. 07:00-21:00)."
    )
    days: str | None = Field(None, max_length=60, description="Allowed days, e.g. mon-fri.")
    time_zone: str | None = Field(
        None, max_length=64, description="IANA zone of hours and days (default: the gateway's)."
    )
    daily_tokens: int | None = Field(
        None, ge=1, le=MAX_DAILY_TOKENS, description="Prompt + completion tokens a local day."
    )


class UpdateKey(Scheduling):
    """`PATCH /admin/keys/{key}`: only the fields sent change; `loads: null` goes back to the
    default, `maxLoadsPerHour: null` lifts the cap."""

    def change(self) -> KeyUpdate:
        given = self.model_fields_set
        nulls = {"weight", "priority", "tools"} & {f for f in given if getattr(self, f) is None}
        if nulls:
            raise BadRequest(
                f"{', '.join(sorted(nulls))}: give a value; null is not one", code="invalid_value"
            )
        return KeyUpdate(
            weight=self.weight if self.weight is not None else KEEP,
            priority=self.priority if self.priority is not None else KEEP,
            loads=self.loads if "loads" in given else KEEP,
            max_loads_per_hour=self.max_loads_per_hour if "max_loads_per_hour" in given else KEEP,
            tools=self.tools if self.tools is not None else KEEP,
            hours=self.hours if "hours" in given else KEEP,
            days=self.days if "days" in given else KEEP,
            tz=self.time_zone if "time_zone" in given else KEEP,
            daily_tokens=self.daily_tokens if "daily_tokens" in given else KEEP,
        )


class CreateKey(Scheduling):
    name: str = Field(min_length=1, max_length=64, description="Unique among active keys.")
    scope: Literal["inference", "metrics", "admin"] = "inference"
    models: list[str] | None = Field(
        None, max_length=100, description="Glob patterns of the models this key may use."
    )
    rpm: int | None = Field(None, ge=1, le=1_000_000, description="Requests per minute.")
    tpm: int | None = Field(None, ge=1, le=1_000_000_000, description="Tokens per minute.")
    max_concurrent: int | None = Field(
        None, ge=1, le=10_000, description="Inference requests in progress at once."
    )
    expires: str | None = Field(
        None, max_length=40, description="Lifetime (30d, 12h, 90m) or an ISO date."
    )


def _problem(exc: KeyProblem) -> GatewayError:
    if isinstance(exc, UnknownKey):
        return NotFound(str(exc), code="key_not_found")
    if isinstance(exc, NameTaken):
        return Conflict(str(exc))
    return BadRequest(str(exc), code="invalid_value")


async def _run(gw: Gateway, fn: Any, *args: Any) -> Any:
    """A key-store call in a worker thread; the registry reloads at once after a change."""
    try:
        result = await asyncio.to_thread(fn, *args)
    except KeyProblem as exc:
        raise _problem(exc) from exc
    gw.security.keys.refresh()
    return result


def _json(gw: Gateway, row: KeyRow) -> dict[str, Any]:
    """A key as listed: `loads` is what applies now, its default included."""
    return row.as_json(gw.settings.key_loads_default == "allow")


@router.get("")
async def list_keys(
    request: Request, include_revoked: bool = Query(False, alias="includeRevoked")
) -> dict[str, Any]:
    """Every key (never the secret): scope, model patterns, limits, expiry, status; and the
    keys from settings (name and scope), read-only."""
    gw = gateway_of(request)
    rows = await _run(gw, lambda: gw.security.store.list(include_revoked=include_revoked))
    from_settings = [
        {
            "name": p.name,
            "scope": p.scope.value,
            "source": "settings",
            "tools": "allow" if p.tools else "deny",
            "weight": p.weight,
            "priority": p.priority,
            "loads": "allow" if p.may_load else "deny",
            "loadsDefault": True,
            "maxLoadsPerHour": p.max_loads_per_hour,
        }
        for p in gw.security.keys.settings_keys
    ]
    devices = await asyncio.to_thread(PairingStore(gw.db, gw.security.store).devices)
    listed = [{**_json(gw, row), "device": devices.get(row.id)} for row in rows]
    return {"keys": listed, "settingsKeys": from_settings}


@router.post("", status_code=201)
async def create_key(body: CreateKey, request: Request) -> JSONResponse:
    """Make a key. The response is the only place the key ever appears."""
    gw = gateway_of(request)
    try:
        expires_at = parse_expiry(body.expires, time.time()) if body.expires else None
    except KeyProblem as exc:
        raise _problem(exc) from exc
    spec = NewKey(
        name=body.name,
        scope=body.scope,
        models=tuple(body.models or ()),
        rpm=body.rpm,
        tpm=body.tpm,
        max_concurrent=body.max_concurrent,
        expires_at=expires_at,
        tools=body.tools,
        weight=body.weight if body.weight is not None else 1.0,
        priority=body.priority if body.priority is not None else 0,
        loads=body.loads,
        max_loads_per_hour=body.max_loads_per_hour,
        hours=body.hours,
        days=body.days,
        tz=body.time_zone,
        daily_tokens=body.daily_tokens,
    )
    row, key = await _run(gw, gw.security.store.create, spec)
    shown = _json(gw, row)
    gw.bus.publish(
        "key_created", keyId=row.id, name=row.name, scope=row.scope, tools=shown["tools"]
    )
    return JSONResponse({"key": key, "message": _ONCE, **shown}, status_code=201)


@router.get("/{key_ref}")
async def get_key(key_ref: str, request: Request) -> dict[str, Any]:
    """One key by id, or by name (the active key of that name)."""
    gw = gateway_of(request)
    row = await _run(gw, gw.security.store.find, key_ref)
    if row is None:
        raise NotFound(f"no key named or with id '{key_ref}'", code="key_not_found")
    return _json(gw, row)


@router.patch("/{key_ref}")
async def update_key(key_ref: str, body: UpdateKey, request: Request) -> dict[str, Any]:
    """Change an active key's weight, priority, loads, loads per hour or tools in place; the
    gateway applies them from the next request on."""
    gw = gateway_of(request)
    row = await _run(gw, gw.security.store.update, key_ref, body.change())
    shown = _json(gw, row)
    changed = {k: shown[k] for k in body.model_dump(by_alias=True, exclude_unset=True)}
    gw.bus.publish("key_updated", keyId=row.id, name=row.name, changes=changed)
    return shown


@router.delete("/{key_ref}")
async def revoke_key(key_ref: str, request: Request) -> dict[str, Any]:
    """Revoke a key; it is refused from the next request on."""
    gw = gateway_of(request)
    row = await _run(gw, gw.security.store.revoke, key_ref)
    gw.bus.publish("key_revoked", keyId=row.id, name=row.name)
    return _json(gw, row)


@router.post("/{key_ref}/rotate")
async def rotate_key(key_ref: str, request: Request) -> dict[str, Any]:
    """A new secret for the same key (name, scope, limits); the old secret stops working."""
    gw = gateway_of(request)
    row, key = await _run(gw, gw.security.store.rotate, key_ref)
    gw.bus.publish("key_rotated", keyId=row.id, name=row.name)
    return {"key": key, "message": _ONCE, **_json(gw, row)}
