"""The seams the proxy offers, on neutral ground: hooks run before a request goes upstream,
taps watch the answer. The guard, the observers, the scheduler and the shutdown drain
implement them and import this module, never the proxy, which stays a leaf only the app wires.

Hooks run in order on every proxied request (checks that may refuse it, loading a model on
demand, asking the upstream for usage...). A hook may edit the parsed body and return a tap.
Taps see the answer's bytes as they pass. They must hand bytes on unchanged: the one
sanctioned rewrite is removing what lmgate itself asked for (the usage chunk of a stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lmgate.asgi import Scope
from lmgate.exchange import Exchange


@dataclass(slots=True)
class ProxyRequest:
    """A request on its way upstream. `body` is the parsed JSON of inference endpoints."""

    scope: Scope
    method: str
    path: str
    kind: str | None
    body: dict[str, Any] | None
    changed: bool = False
    raw: bytes = b""  # the body as the client sent it
    early: EarlyAnswer | None = None  # streaming inference requests: see `EarlyAnswer`

    def set(self, field: str, value: Any) -> None:
        """Edit the body (inference endpoints only); it is re-serialised once, at the end."""
        if self.body is not None:
            self.body[field] = value
            self.changed = True


class ResponseTap(Protocol):
    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Called once with the status and headers; returns the headers to send."""
        ...

    def feed(self, chunk: bytes) -> bytes:
        """Called for every chunk; returns what to send on (normally `chunk` itself)."""
        ...

    def end(self) -> bytes:
        """Called once when the answer ends or breaks; returns any last bytes to send."""
        ...


class EarlyAnswer(Protocol):
    """A streaming request's answer, for a hook that keeps it waiting (the scheduler's queue)
    to start before the upstream's: status 200 and an event stream at once, comment lines
    while it waits. The relay then sends the upstream's events on the same answer, and any
    refusal as an error event in the endpoint's framing."""

    started: bool

    async def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the answer's start (once): 200, `text/event-stream`, and `headers`."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Send bytes on the started answer."""
        ...


class ProxyHook(Protocol):
    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        """Inspect or edit the request; raise a GatewayError to refuse it."""
        ...
