"""The gateway's own errors, and the one renderer that turns them into OpenAI-shaped bodies.

Upstream errors (LM Studio's own 4xx/5xx) are relayed unchanged and never pass through here.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from lmgate.asgi import Send


class GatewayError(Exception):
    """Base of every error lmgate answers itself. Subclasses fix status, type and code."""

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.param is not None:
            error["param"] = self.param
        return orjson.dumps({"error": error})


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "request_headers_too_large"


class TooManyRequests(GatewayError):
    """A limit was hit; `Retry-After` says when trying again can succeed."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(
            message, code=code, headers={"Retry-After": str(max(1, math.ceil(retry_after)))}
        )


class UpstreamError(GatewayError):
    """The upstream failed in a way that is not its own HTTP answer."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class InsufficientStorage(GatewayError):
    """The disk under the data dir is full (or failing): a change could not be saved."""

    status = 507
    type = "server_error"
    code = "storage_full"


class StorageUnavailable(GatewayError):
    """The state database cannot be used right now (locked, unreadable)."""

    status = 503
    type = "server_error"
    code = "storage_unavailable"


async def send_error(send: Send, error: GatewayError) -> None:
    """Write `error` as a complete ASGI response."""
    body = error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
