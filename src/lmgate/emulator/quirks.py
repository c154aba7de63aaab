"""LM Studio's surprising-but-real behaviours, in one place so each is easy to find.

* Unknown path or method: HTTP 200 (configurable) with a *string* `error` naming it.
* Unparseable JSON: 400 with the parser's message as a string `error`.
* `response_format.type` other than `json_schema`/`text`: 400 with a string `error`.
* With an API token configured: 401 in the REST v1 envelope, token via Bearer or x-api-key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lmgate.emulator.inference import state_of
from lmgate.emulator.replies import EmulatorError, json_response

_TOKEN_SHAPE = re.compile(r"^sk-lm-[A-Za-z0-9]{8}:[A-Za-z0-9]{20}$")
_AUTH_DOCS = "https://lmstudio.ai/docs/developer/core/authentication"
OPEN_PATHS = ("/lmstudio-greeting",)


async def unexpected_endpoint(request: Request, exc: Exception) -> Response:
    """Handler for Starlette's 404/405: what Express-based LM Studio answers instead."""
    message = f"Unexpected endpoint or method. ({request.method} {request.url.path})"
    return json_response({"error": message}, status=state_of(request).config.unknown_status)


def json_parse_message(raw: bytes, position: int) -> str:
    """A JavaScript `JSON.parse`-style message, which is what LM Studio passes through."""
    text = raw.decode("utf-8", errors="replace")
    if position >= len(text.rstrip()):
        return "Unexpected end of JSON input"
    snippet = text if len(text) <= 32 else text[:29] + "..."
    return f"Unexpected token '{text[position]}', \"{snippet}\" is not valid JSON"


def check_response_format(body: Mapping[str, Any]) -> None:
    """Only `json_schema` and `text` are accepted; `json_object` in particular is rejected."""
    response_format = body.get("response_format")
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in ("json_schema", "text"):
        raise EmulatorError(
            400, "'response_format.type' must be 'json_schema' or 'text'", plain=True
        )


def presented_token(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


def auth_failure(headers: Mapping[str, str], expected: str) -> dict[str, Any] | None:
    """The 401 body for a missing, malformed or wrong token; None when it matches."""
    token = presented_token(headers)
    if token == expected:
        return None
    if token is None:
        message = (
            "An LM Studio API token is required to make requests to this server, but none was "
            "provided using the Authorization header using the 'Bearer' scheme (i.e., "
            f"'Authorization: Bearer $LM_API_TOKEN'). Learn more at: {_AUTH_DOCS}."
        )
    elif not _TOKEN_SHAPE.match(token):
        message = (
            f"Malformed LM Studio API token provided: {token[:10]}... Ensure you are using a "
            "valid token."
        )
    else:
        message = f"The provided LM Studio API token is not valid. Learn more at: {_AUTH_DOCS}."
    return {"error": {"type": "invalid_request", "code": "invalid_api_key", "message": message}}
