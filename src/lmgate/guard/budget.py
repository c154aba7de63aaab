"""A cap on the bytes of request bodies this process holds in memory at once.

The size cap per body (`LMGATE_MAX_BODY_BYTES`) bounds one request; many authorised clients
uploading large bodies at the same time could still add up to more memory than the machine
has. Each body reserves its bytes here before they are read: the declared `Content-Length` at
once, a chunked body chunk by chunk as it arrives. A body that does not fit is refused with 503
and `Retry-After` (the gateway is busy, the request itself is fine). A reservation lasts until
its request has been answered, since the body (raw, parsed, re-encoded) may live that long,
and is given back on every path out: answer, error, timeout, disconnect, cancellation.
"""

from __future__ import annotations

from types import TracebackType

from lmgate.errors import GatewayError


class BodyMemoryFull(GatewayError):
    status = 503
    type = "server_error"
    code = "server_busy"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the gateway holds as many request bodies as it may at once ({limit} bytes); "
            "try again shortly",
            headers={"Retry-After": "1"},
        )


class BodyBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def hold(self) -> Hold:
        """One request's reservation; use it as a context manager so it is always given back."""
        return Hold(self)


class Hold:
    __slots__ = ("budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow_to(self, size: int) -> None:
        """Reserve up to `size` bytes in all; raises `BodyMemoryFull` when they do not fit."""
        more = size - self.size
        if more <= 0:
            return
        budget = self.budget
        if budget.held + more > budget.limit:
            raise BodyMemoryFull(budget.limit)
        budget.held += more
        self.size = size

    def release(self) -> None:
        self.budget.held -= self.size
        self.size = 0

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
