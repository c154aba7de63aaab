"""Stopping: answers in progress get a grace period, and the ones still running after it are
ended with an error that says why, and recorded as interrupted rather than as successes.

On SIGTERM or SIGINT uvicorn closes its listeners at once (new connections are refused), asks
every open connection to shut down, and waits for the requests in progress. Its call on the
connections (`DrainingProtocol.shutdown`) is where the grace starts. When it is over,
`Drain.end` cancels every request that reached the upstream, through the request tracker:
the relay answers a request with no answer yet with a 503 `gateway_shutting_down`, and ends a
stream with an error frame in its endpoint's framing; the exchange records status 503 and the
reason, so the request line, the events, the metrics and usage count it as failed. A request
still arriving then is refused the same way. uvicorn's own limit is set past the grace
(`SHUTDOWN_MARGIN`), so it is lmgate, not uvicorn, that ends the answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from lmgate.errors import GatewayError
from lmgate.exchange import Exchange
from lmgate.guard.protocol import GuardedHttpProtocol
from lmgate.hooks import ProxyRequest, ResponseTap
from lmgate.observe.requests import RequestTracker
from lmgate.settings import Settings

# Time past the grace for the interrupted requests to write their error and finish, and for
# anything else still running (an admin call) before uvicorn cancels it.
SHUTDOWN_MARGIN = 5.0
RELAYING = "relaying"  # Exchange.attributes: the request has passed the guard and its checks

log: Any = structlog.get_logger("lmgate")


class GatewayShuttingDown(GatewayError):
    status = 503
    type = "server_error"
    code = "gateway_shutting_down"


class Drain:
    """The grace period of one gateway; a proxy hook, first in line, that marks the requests
    it may end and refuses new ones once it is over."""

    def __init__(self, tracker: RequestTracker, grace: float) -> None:
        self.tracker = tracker
        self.grace = grace
        self.began: float | None = None  # loop time
        self.over = False
        self._timer: asyncio.TimerHandle | None = None

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        if self.over:
            raise GatewayShuttingDown("the gateway is shutting down")
        ex.attributes[RELAYING] = True
        return None

    def begin(self) -> None:
        """Start the grace (once): its end is scheduled on the running loop."""
        if self.began is not None:
            return
        loop = asyncio.get_running_loop()
        self.began = loop.time()
        self._timer = loop.call_later(self.grace, self.end)
        log.info("shutdown_started", grace_s=self.grace, in_flight=len(self.tracker.live))

    def end(self) -> None:
        self.over = True
        error = GatewayShuttingDown(
            f"the gateway shut down: the answer was cut off after the {self.grace:g} s "
            "grace period (LMGATE_SHUTDOWN_GRACE)"
        )
        ended = self.tracker.interrupt(error, lambda ex: ex.attributes.get(RELAYING) is True)
        if ended:
            log.warning(
                "shutdown_interrupted",
                requests=len(ended),
                request_ids=[ex.request_id for ex in ended],
            )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def drain_of(app: object) -> Drain | None:
    """The drain of the gateway behind `app`, looking through uvicorn's wrappers, if any."""
    for _ in range(8):
        gateway = getattr(app, "gateway", None)
        if gateway is not None:
            drain = getattr(gateway, "drain", None)
            return drain if isinstance(drain, Drain) else None
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


class DrainingProtocol(GuardedHttpProtocol):
    """The guarded HTTP protocol, starting the grace when uvicorn begins its shutdown."""

    __slots__ = ()

    def shutdown(self) -> None:
        super().shutdown()
        drain = drain_of(self.app)
        if drain is not None:
            drain.begin()


def draining_protocol(settings: Settings) -> type[GuardedHttpProtocol]:
    """The protocol class for `uvicorn.Config(http=...)` in one process, with the limits of
    `settings` (uvicorn makes the instances; they read the class)."""
    protocol: type[GuardedHttpProtocol] = type(
        "DrainingProtocol", (DrainingProtocol,), {"__slots__": ()}
    )
    protocol.configure(settings)
    return protocol
