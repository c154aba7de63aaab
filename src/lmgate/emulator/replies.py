"""Replies written the way LM Studio's Express server writes them: JSON framing and the
error envelope each surface uses.

Clients and gateways key off the details: the exact JSON content type with charset and an
ETag on JSON bodies (`X-Powered-By: Express` is added by the front door, so streams get it
too). Errors are inconsistent across surfaces: OpenAI-compatible routes send either a bare
string or an OpenAI error object, REST v1 has its own `{type, code, message, param}` object
and `/v1/messages` speaks Anthropic. Handlers raise one exception type; the envelope is
chosen by the request path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


class Surface(Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    REST_V1 = "rest_v1"


def surface_of(path: str) -> Surface:
    if path.startswith("/v1/messages"):
        return Surface.ANTHROPIC
    if path.startswith("/api/v1/"):
        return Surface.REST_V1
    return Surface.OPENAI


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


@dataclass(eq=False)
class EmulatorError(Exception):
    """A request failure; `plain` selects LM Studio's bare-string `{"error": "..."}` form."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None
    v1_type: str = "invalid_request"
    plain: bool = False

    def __str__(self) -> str:
        return self.message

    def body(self, surface: Surface) -> dict[str, Any]:
        if surface is Surface.ANTHROPIC:
            kind = _ANTHROPIC_TYPES.get(self.status, "api_error")
            return {"type": "error", "error": {"type": kind, "message": self.message}}
        if surface is Surface.REST_V1:
            error: dict[str, Any] = {"type": self.v1_type, "message": self.message}
            if self.code is not None:
                error["code"] = self.code
            if self.param is not None:
                error["param"] = self.param
            return {"error": error}
        if self.plain:
            return {"error": self.message}
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


JSON_TYPE = "application/json; charset=utf-8"


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


def model_not_found(name: str, choices: list[str]) -> EmulatorError:
    listed = ", ".join(choices) if choices else "none"
    return EmulatorError(
        400,
        f'Invalid model identifier "{name}". Please specify a valid downloaded model '
        f"(e.g., {listed}).",
        code="model_not_found",
        param="model",
        v1_type="model_not_found",
    )


def no_models_loaded() -> EmulatorError:
    return EmulatorError(
        400,
        "No models loaded. Please load a model in the developer page or use the 'lms load' "
        "command.",
        plain=True,
    )


def missing_field(name: str) -> EmulatorError:
    return EmulatorError(
        400, f'"{name}" is required', code="missing_required_parameter", param=name
    )


def injected_failure() -> EmulatorError:
    """What `x-emulator-fail: 500` produces."""
    return EmulatorError(
        500,
        "The model has crashed without additional information. (Exit code: 11)",
        code="internal_error",
        v1_type="internal_error",
    )


def midstream_error_payload(surface: Surface) -> dict[str, Any]:
    """The error object carried by a failing stream's last frame."""
    message = "The model has crashed without additional information. (Exit code: 11)"
    if surface is Surface.ANTHROPIC:
        return {"type": "error", "error": {"type": "api_error", "message": message}}
    if surface is Surface.REST_V1:
        return {"type": "error", "error": {"type": "internal_error", "message": message}}
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
