"""Who is being served right now, what finished lately, and cancelling a request.

The tracker is an exchange observer. `on_start` runs inside the request's own task, so it
keeps that task: cancelling it unwinds the relay's `async with` around the upstream response,
which closes the upstream connection and stops the generation. The relay sees
`Exchange.cancelled` and answers the client (`RequestCancelled`, or an error frame mid-stream).
`on_start` also marks the task's context with the request id, so events published while
serving it (model loads, denials) carry that id.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmgate.errors import GatewayError
from lmgate.exchange import Exchange
from lmgate.observe.events import CURRENT_REQUEST
from lmgate.observe.windows import is_quiet, ms
from lmgate.pipeline.injection import INJECTED


class RequestCancelled(GatewayError):
    status = 503
    type = "server_error"
    code = "request_cancelled"


# Exchange.attributes: the error an interrupted request is to be answered with (`interrupt`).
INTERRUPTED = "interrupted"


def describe(ex: Exchange, now: float) -> dict[str, Any]:
    return {
        "requestId": ex.request_id,
        "method": ex.method,
        "path": ex.path,
        "endpoint": ex.endpoint,
        "model": ex.model,
        "key": ex.key_name,
        "client": ex.client,
        "streamed": ex.streamed,
        "startedAt": ex.started_at,
        "ageMs": ms(max(0.0, now - ex.started_at) * 1000.0),
        "status": ex.status or None,
        "latencyMs": ms(ex.latency_ms or None),
        "ttftMs": ms(ex.ttft_ms),
        "tokensStreamed": ex.tokens_streamed,
        "tokensIn": ex.tokens_in,
        "tokensOut": ex.tokens_out,
        "tokensEstimated": ex.tokens_estimated,
        "error": ex.error,
        "cancelled": ex.cancelled,
        "injected": ex.attributes.get(INJECTED) or {},
    }


@dataclass(slots=True)
class _Live:
    ex: Exchange
    task: asyncio.Task[Any] | None


class RequestTracker:
    def __init__(
        self, *, keep: int = 100, cancellable: Callable[[Exchange], bool] = lambda ex: True
    ) -> None:
        self.live: dict[int, _Live] = {}
        # finished exchanges and when they finished, described only when someone asks
        self.done: deque[tuple[Exchange, float]] = deque(maxlen=keep)
        self.cancellable = cancellable
        self.cancelled = 0

    def on_start(self, ex: Exchange) -> None:
        CURRENT_REQUEST.set(ex.request_id)
        if not is_quiet(ex):
            self.live[id(ex)] = _Live(ex, asyncio.current_task())

    def on_finish(self, ex: Exchange) -> None:
        if self.live.pop(id(ex), None) is not None:
            self.done.append((ex, time.time()))

    def in_flight(self) -> list[dict[str, Any]]:
        now = time.time()
        return [describe(live.ex, now) for live in self.live.values()]

    def completed(self, limit: int) -> list[dict[str, Any]]:
        recent = list(self.done)[-limit:][::-1] if limit > 0 else []
        return [describe(ex, finished) for ex, finished in recent]

    def cancel(self, request_id: str, reason: str) -> list[Exchange]:
        """Cancel every in-flight request with this id that can be cancelled; return them.

        Nothing is awaited here: the request's task unwinds by itself, on its next step."""
        matches = [live for live in self.live.values() if live.ex.request_id == request_id]
        done = []
        for live in matches:
            if live.task is None or live.task.done() or not self.cancellable(live.ex):
                continue
            if live.ex.cancelled is None:
                live.ex.cancelled = reason
                live.task.cancel()
                self.cancelled += 1
                done.append(live.ex)
        return done

    def interrupt(self, error: GatewayError, which: Callable[[Exchange], bool]) -> list[Exchange]:
        """End every in-flight request `which` picks, as `cancel` does, to be answered with
        `error` (and recorded with its status) rather than as a cancellation."""
        done = []
        for live in list(self.live.values()):
            ex = live.ex
            if live.task is None or live.task.done() or ex.cancelled is not None:
                continue
            if which(ex):
                ex.cancelled = error.message
                ex.attributes[INTERRUPTED] = error
                live.task.cancel()
                done.append(ex)
        return done

    def find(self, request_id: str) -> list[Exchange]:
        return [live.ex for live in self.live.values() if live.ex.request_id == request_id]
