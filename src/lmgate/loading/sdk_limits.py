"""A bound on what LM Studio's SDK websocket can make the gateway hold.

The SDK reads through httpx-ws, which gathers a fragmented message without limit (its
`max_message_size_bytes` is only a read size) and queues what it received. Every SDK
connection lmgate opens serves one operation (a load, an unload, a check), so a budget on
the bytes one connection may receive bounds the memory a broken or hostile upstream can fill,
whatever its frames look like; past it the connection is cut and the operation fails with a
clear error. A load's messages are a few kilobytes, a library listing well under a megabyte
per thousand models.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import httpcore
import httpx_ws
import lmstudio._ws_impl
from httpx_ws import AsyncWebSocketSession

RECEIVE_LIMIT = 8 * 1024 * 1024  # bytes one SDK connection may receive


@dataclass(slots=True)
class Budget:
    """The receive limit of the connections an operation opens, and whether one hit it."""

    limit: int = RECEIVE_LIMIT
    exceeded: bool = False


_BUDGET: ContextVar[Budget | None] = ContextVar("lmgate_sdk_budget", default=None)


@contextmanager
def watched() -> Iterator[Budget]:
    """The budget that connections the SDK opens inside this block obey."""
    budget = Budget()
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


class _CappedSession(AsyncWebSocketSession):
    """httpx-ws's session, counting what it reads and cutting the link past the budget."""

    _lmgate_received = 0

    async def _read_stream(self, max_bytes: int) -> bytes:
        data = await super()._read_stream(max_bytes)
        budget = _BUDGET.get() or Budget()
        self._lmgate_received += len(data)
        if self._lmgate_received > budget.limit:
            budget.exceeded = True
            # what httpx-ws treats as a broken link: it closes, the SDK sees the link fail
            raise httpcore.ReadError("LM Studio sent more than the SDK receive limit")
        return data


def install() -> None:
    """Make the SDK open its websockets through the capped session (once, idempotent)."""
    lmstudio._ws_impl.aconnect_ws = functools.partial(  # type: ignore[assignment,attr-defined]
        httpx_ws.aconnect_ws, session_class=_CappedSession
    )
