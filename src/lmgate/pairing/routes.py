"""Pairing over HTTP: `/admin/pairing` for the admin who makes a code, `/pair/*` for the device.

`/pair/*` is public: the code in the path is the only credential. Opening the link shows a page
and uses nothing up (link previews and prefetchers open links too); the page's button sends
`POST /pair/CODE`, which redeems the code once and answers the new key. An unknown code counts
against the address as a bad key does, so guessing is blocked like key guessing.
"""

from __future__ import annotations

import asyncio
import base64
import html
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Literal, TypeVar

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.responses import JSONResponse, Response

from lmgate.errors import BadRequest, GatewayError, NotFound, TooManyRequests
from lmgate.exchange import exchange_of
from lmgate.gateway import Gateway, gateway_of
from lmgate.guard.allowlist import parse_address
from lmgate.guard.damping import bucket
from lmgate.guard.origin import refuse_cross_site
from lmgate.observe.events import address_blocked
from lmgate.pairing.attempts import OneAtATime
from lmgate.pairing.codes import (
    VALID_FOR_S,
    CodeRefused,
    NewPairing,
    PairingProblem,
    PairingStore,
)
from lmgate.pairing.links import base_url, lan_ca, pairing_link, qr_png
from lmgate.settings_values import parse_duration
from lmgate.store.keys import KeyProblem, parse_expiry

log = structlog.get_logger("lmgate.pairing")
_T = TypeVar("_T")
_TURNS = OneAtATime()
admin_router = APIRouter(prefix="/admin/pairing", tags=["pairing"])
public_router = APIRouter(prefix="/pair", include_in_schema=False)

PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}
# HEAD as well as GET: link previews and some phone browsers look before they load.
_READ = ["GET", "HEAD"]
_DOWNLOAD_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-cache"}
_REFUSED = {
    "unknown": (404, "this pairing code is not valid"),
    "used": (410, "this pairing code was already used; ask for a new one"),
    "expired": (410, "this pairing code has expired; ask for a new one"),
    "cancelled": (410, "this pairing code was cancelled; ask for a new one"),
}


class CodeGone(GatewayError):
    status = 410
    type = "invalid_request_error"
    code = "pairing_code_gone"


class CodeInvalid(NotFound):
    code = "pairing_code_invalid"


class NewPairingBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="The device, e.g. Anna's phone.")
    scope: Literal["inference", "metrics"] = "inference"
    models: list[str] | None = Field(None, max_length=100)
    rpm: int | None = Field(None, ge=1, le=1_000_000)
    tpm: int | None = Field(None, ge=1, le=1_000_000_000)
    expires: str | None = Field(None, max_length=40, description="The key's lifetime (30d...).")
    valid_for: str | None = Field(
        None, max_length=20, description="How long the code works (default 10m, at most 7d)."
    )


def _store(gw: Gateway) -> PairingStore:
    return PairingStore(gw.db, gw.security.store)


def new_pairing(
    name: str,
    *,
    scope: str = "inference",
    models: list[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    expires: str | None = None,
    valid_for: str | None = None,
    created_by: str = "admin",
) -> NewPairing:
    """What the API and the command line ask for, in the store's terms (`PairingProblem`)."""
    now = time.time()
    try:
        key_expires = parse_expiry(expires, now) if expires else None
        lifetime = parse_duration(valid_for) if valid_for else VALID_FOR_S
    except KeyProblem as exc:
        raise PairingProblem(str(exc)) from exc
    if lifetime is None:
        raise PairingProblem(f"valid for '{valid_for}': use e.g. 10m, 1h or 600")
    return NewPairing(name, scope, tuple(models or ()), rpm, tpm, key_expires, lifetime, created_by)


def _problem(exc: KeyProblem) -> GatewayError:
    return BadRequest(str(exc), code="invalid_value")


@admin_router.post("", status_code=201)
async def create_pairing(body: NewPairingBody, request: Request) -> JSONResponse:
    """A one-time code for a new device, with its link and QR code (shown once)."""
    gw = gateway_of(request)
    ex = exchange_of(request.scope)
    try:
        spec = new_pairing(
            body.name,
            scope=body.scope,
            models=body.models,
            rpm=body.rpm,
            tpm=body.tpm,
            expires=body.expires,
            valid_for=body.valid_for,
            created_by=ex.key_name or "admin",
        )
        pairing, code = await asyncio.to_thread(_store(gw).create, spec)
    except KeyProblem as exc:
        raise _problem(exc) from exc
    ca = lan_ca(gw.settings)
    link = pairing_link(base_url(gw.settings, request.headers.get("host")), code, ca)
    gw.bus.publish(
        "pairing_created",
        pairingId=pairing.id,
        device=pairing.device,
        scope=pairing.scope,
        createdBy=pairing.created_by,
        expiresAt=pairing.expires_at,
    )
    return JSONResponse(
        {
            **pairing.as_json(),
            "code": code,
            "url": link,
            "qrImage": "data:image/png;base64," + base64.b64encode(qr_png(link)).decode(),
            "caFingerprint": ca.fingerprint if ca else None,
            "message": "Scan the QR code with the device; the code works once.",
        },
        status_code=201,
    )


@admin_router.get("")
async def list_pairings(request: Request) -> dict[str, Any]:
    """Every pairing, newest first: pending, redeemed (by which address, as which key) or not."""
    gw = gateway_of(request)
    rows = await asyncio.to_thread(_store(gw).list)
    return {"pairings": [p.as_json() for p in rows]}


@admin_router.delete("/{pairing_id}")
async def cancel_pairing(pairing_id: str, request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    try:
        pairing = await asyncio.to_thread(_store(gw).cancel, pairing_id)
    except PairingProblem as exc:
        raise NotFound(str(exc), code="pairing_not_found") from exc
    gw.bus.publish("pairing_cancelled", pairingId=pairing.id, device=pairing.device)
    result: dict[str, Any] = pairing.as_json()
    return result


# -- the device's side ------------------------------------------------------------------------


def _asset(name: str) -> bytes:
    return (resources.files("lmgate.pairing") / "static" / name).read_bytes()


_ASSETS = {
    "pair.js": "text/javascript; charset=utf-8",
    "pair.css": "text/css; charset=utf-8",
}


def _who(request: Request) -> tuple[str, Any]:
    client = exchange_of(request.scope).client
    addr = parse_address(client) if client else None
    return bucket(addr), addr


def _guard(gw: Gateway, request: Request) -> None:
    """Addresses blocked for guessing keys or codes get nothing."""
    who, _ = _who(request)
    wait = gw.security.damper.blocked_for(who)
    if wait:
        raise TooManyRequests(
            "too many invalid codes or keys from this address; try again later",
            retry_after=wait,
            code="too_many_failed_attempts",
        )


def _refused(gw: Gateway, request: Request, refusal: CodeRefused) -> GatewayError:
    who, addr = _who(request)
    if refusal.reason == "unknown" and gw.security.damper.counts(addr):
        block = gw.security.damper.failed(who)
        if block:  # announced as a block for bad keys is: the same damper, the same record
            log.warning("address_blocked", address=who, seconds=block)
            address_blocked(gw.bus, who, block)
    gw.bus.publish("pairing_refused", reason=refusal.reason, address=who)
    status, message = _REFUSED[refusal.reason]
    return CodeInvalid(message) if status == 404 else CodeGone(message)


async def _use_code(gw: Gateway, request: Request, lookup: Callable[[], _T]) -> _T:
    """Run one code lookup for the asking address, its turn (`OneAtATime`) held from the
    block check to the counting of a wrong code; a refused code raises `CodeInvalid` or
    `CodeGone`, a blocked address `TooManyRequests`."""
    who, _ = _who(request)
    async with _TURNS.turn(who):
        _guard(gw, request)
        try:
            return await asyncio.to_thread(lookup)
        except CodeRefused as refusal:
            raise _refused(gw, request, refusal) from None


@public_router.api_route("/static/{name}", methods=_READ)
async def asset(name: str) -> Response:
    if name not in _ASSETS:
        raise NotFound(f"no file {name}")
    return Response(_asset(name), media_type=_ASSETS[name], headers=_DOWNLOAD_HEADERS)


def _ca_or_404(gw: Gateway) -> Any:
    ca = lan_ca(gw.settings)
    if ca is None:
        raise NotFound("this gateway serves no certificate of its own LAN CA", code="no_lan_ca")
    return ca


def _ca_download(body: bytes, media_type: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={
            **_DOWNLOAD_HEADERS,
            "content-disposition": f'attachment; filename="{filename}"',
        },
    )


@public_router.api_route("/ca.pem", methods=_READ)
async def ca_pem(request: Request) -> Response:
    ca = _ca_or_404(gateway_of(request))
    return _ca_download(ca.pem, "application/x-pem-file", "lmgate-ca.pem")


@public_router.api_route("/ca.crt", methods=_READ)
async def ca_der(request: Request) -> Response:
    """DER, the form Android and Windows install from a download."""
    ca = _ca_or_404(gateway_of(request))
    return _ca_download(ca.der, "application/x-x509-ca-cert", "lmgate-ca.crt")


@public_router.api_route("/ca.mobileconfig", methods=_READ)
async def ca_profile(request: Request) -> Response:
    ca = _ca_or_404(gateway_of(request))
    return _ca_download(
        ca.mobileconfig(), "application/x-apple-aspen-config", "lmgate-ca.mobileconfig"
    )


def _page(title: str, body: str, status: int = 200) -> Response:
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{html.escape(title)} · lmgate</title>
<link rel="stylesheet" href="/pair/static/pair.css">
</head><body><main>
{body}
</main><script src="/pair/static/pair.js"></script></body></html>
"""
    return Response(text, status_code=status, media_type="text/html", headers=PAGE_HEADERS)


def _code_in(rest: str) -> str:
    """The code in what follows `/pair/`. Every spelling under `/pair/` is answered here, never
    redirected or left to the router (whose answers would repeat the path, code included): a
    trailing slash is forgiven, anything else is a wrong code and counts as a guess."""
    return rest.removesuffix("/")


@public_router.api_route("/{code:path}", methods=_READ)
async def pairing_page(code: str, request: Request) -> Response:
    """The page the QR code opens: who it is for, and a button that redeems it."""
    gw = gateway_of(request)
    store = _store(gw)
    try:
        pairing = await _use_code(gw, request, lambda: store.peek(_code_in(code)))
    except (CodeInvalid, CodeGone) as error:
        body = (
            f'<h1>Pairing failed</h1><p class="error" id="refused">{html.escape(error.message)}</p>'
        )
        return _page("Pairing failed", body, error.status)
    ca = lan_ca(gw.settings)
    left = max(0, round((pairing.expires_at - time.time()) / 60))
    ca_block = (
        f'<section id="ca" data-fingerprint="{ca.fingerprint}" hidden></section>' if ca else ""
    )
    body = f"""<h1>Add this device to lmgate</h1>
<p>This link makes one API key for <strong id="device">{html.escape(pairing.device)}</strong>.
It works once, for about {left} more minute{"s" if left != 1 else ""}.</p>
<button id="redeem" type="button">Get my key</button>
<p class="error" id="error" hidden></p>
<section id="result" hidden></section>
{ca_block}"""
    return _page("Add a device", body)


@public_router.post("/{code:path}")
async def redeem(code: str, request: Request) -> JSONResponse:
    """Use the code up and answer the new key (the only place it ever appears)."""
    gw = gateway_of(request)
    refuse_cross_site(request.scope)
    who, _ = _who(request)
    store = _store(gw)
    try:
        pairing, row, key = await _use_code(gw, request, lambda: store.redeem(_code_in(code), who))
    except KeyProblem as exc:
        raise _problem(exc) from exc
    gw.security.keys.refresh()
    gw.bus.publish(
        "pairing_redeemed",
        pairingId=pairing.id,
        device=pairing.device,
        keyId=row.id,
        keyName=row.name,
        address=who,
    )
    base = base_url(gw.settings, request.headers.get("host"))
    ca = lan_ca(gw.settings)
    return JSONResponse(
        {
            "key": key,
            "keyName": row.name,
            "device": pairing.device,
            "scope": row.scope,
            "models": list(row.models) or None,
            "expiresAt": row.expires_at,
            "baseUrl": base + "/v1",
            "model": gw.state.state.active_model,
            "caFingerprint": ca.fingerprint if ca else None,
            "message": "Store this key now: it is shown only once and cannot be recovered.",
        },
        headers={"cache-control": "no-store"},
    )
