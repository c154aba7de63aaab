"""Responses that look like they came from LM Studio's Express server.

Clients and gateways key off these details: the exact JSON content type with charset, an
ETag on JSON bodies and `X-Powered-By: Express` everywhere (added by the front-door
middleware, so streams and error pages get it too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from lmgate.emulator.errors import EmulatorError, surface_of

JSON_TYPE = "application/json; charset=utf-8"
BODY_SCOPE_KEY = "lmgate.emulator.body"


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    payload = orjson.dumps(body)
    digest = hashlib.sha1(payload, usedforsecurity=False).hexdigest()[:27]
    all_headers = {"etag": f'W/"{len(payload):x}-{digest}"', **(headers or {})}
    return Response(payload, status_code=status, headers=all_headers, media_type=JSON_TYPE)


def error_response(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for `EmulatorError`, picking the envelope by path."""
    if not isinstance(exc, EmulatorError):  # pragma: no cover - registered for that type only
        raise exc
    return json_response(exc.body(surface_of(request.url.path)), status=exc.status)


def request_json(request: Request) -> dict[str, Any]:
    """The JSON object the front door already parsed; an empty body reads as `{}`."""
    body = request.scope.get(BODY_SCOPE_KEY)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise EmulatorError(400, "Request body must be a JSON object", plain=True)
    return body
