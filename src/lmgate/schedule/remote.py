"""The gateway's one core as a non-primary worker sees it: a client of the primary's socket.

`RemoteScheduler` answers the part of `Scheduler`'s interface that the shell's request path
uses (`submit`, `cancel`, `finish`, `position`, and the configuration calls, which only the
host applies), so the shell runs the same code in front of either. The one difference: a
remote `submit` returns no verdict at once; the shell awaits `arrival(id)`, the host's first
answer — a verdict, or None when the request was queued, after which the verdict comes
through the shell's `_run` like a local one. Such later verdicts are handed over with
`call_soon`, behind the waiting task's wake-up, so the shell has its future in place first.

Failure: the client reconnects with backoff (`BACKOFF_S`). A request that has no answer yet
waits for a connection at most `CONNECT_WAIT_S` and is then sent again; one queued at a host
that went away is answered 503 `scheduler_unavailable` (its place is lost with that host's
core), and the end of one that was admitted there is dropped. Whatever happens, a request
gets its verdict within `queue_timeout` + `MARGIN_S`, or a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from lmgate.schedule import wire
from lmgate.schedule.types import (
    Action,
    Admit,
    LoadRefused,
    ModelPolicy,
    QueueInfo,
    Reject,
    Request,
)

log = structlog.get_logger("lmgate.schedule")

UNAVAILABLE = "scheduler_unavailable"
CONNECT_WAIT_S = 10.0  # a request waits this long for the host to (re)appear
MARGIN_S = 5.0  # beyond the queue timeout before a worker stops waiting for a verdict
BACKOFF_S = (0.05, 1.0)  # first and longest pause between connection attempts
WATCH_S = 0.5  # how often overdue requests are looked for
REFRESH_S = 0.5  # positions are asked again at most this often
SNAPSHOT_TIMEOUT_S = 5.0
POSITIONS_MAX = 2000  # ids per position query
MAX_BUFFER = 4 * 1024 * 1024


def unavailable(request_id: str, why: str) -> Reject:
    return Reject(request_id, 503, UNAVAILABLE, f"{why}; try again", 1.0)


class Pending:
    """A request without its first answer: not sent yet (no host), or sent."""

    __slots__ = ("arrival", "request", "sent", "since")

    def __init__(
        self, request: Request, arrival: asyncio.Future[Admit | Reject | None], now: float
    ):
        self.request = request
        self.arrival = arrival
        self.since = now
        self.sent = False


class RemoteScheduler:
    def __init__(
        self,
        path: Path,
        deliver: Callable[[list[Action]], object],
        *,
        queue_max: int,
        queue_timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.deliver = deliver  # the shell's `_run`
        self.queue_max = max(1, queue_max)
        self.queue_timeout = queue_timeout
        self.clock = clock
        self._pending: dict[str, Pending] = {}
        self._queued: dict[str, float] = {}  # id: when to stop waiting for its verdict
        self._running: set[str] = set()  # admitted through the current connection
        self._places: dict[str, QueueInfo] = {}
        self._snapshots: dict[int, asyncio.Future[dict[str, Any] | None]] = {}
        self._queries = itertools.count(1)
        self._asked = float("-inf")
        self._writer: asyncio.StreamWriter | None = None
        self._stop = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    # -- the core's interface, as the shell's request path uses it ------------------------------

    def submit(self, request: Request, now: float) -> list[Action]:
        rid = request.id
        if not self.connected and len(self._pending) >= self.queue_max:
            return [unavailable(rid, "the scheduler is not reachable")]
        pending = Pending(request, asyncio.get_running_loop().create_future(), now)
        self._pending[rid] = pending
        if self._writer is not None:
            self._send_submit(pending)
        return []

    async def arrival(self, request_id: str) -> Admit | Reject | None:
        """The host's first answer to `submit`: its verdict, or None once it is queued."""
        return await self._pending[request_id].arrival

    def cancel(self, request_id: str, now: float) -> list[Action]:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            sent = pending.sent
        elif self._queued.pop(request_id, None) is not None:
            sent = True
        else:
            sent = request_id in self._running
            self._running.discard(request_id)
        self._places.pop(request_id, None)
        if sent:
            self._send({"t": wire.CANCEL, "id": request_id})
        return []

    finish = cancel

    def position(self, request_id: str, now: float) -> QueueInfo | None:
        """The last place the host gave; asks for fresh ones at most every `REFRESH_S`."""
        if self._queued and now - self._asked >= REFRESH_S and self.connected:
            self._asked = now
            others = (rid for rid in self._queued if rid != request_id)
            ids = [request_id, *itertools.islice(others, POSITIONS_MAX - 1)]
            self._send({"t": wire.POSITIONS, "ids": ids})
        return self._places.get(request_id)

    def set_policy(self, model: str, policy: ModelPolicy | None, now: float) -> list[Action]:
        return []  # the host reads profiles from the shared store itself

    def set_active(self, model: str | None) -> None:
        pass  # likewise the active model

    def request_load(
        self, model: str, now: float, *, upstream: str | None = None, key: str | None = None
    ) -> list[Action]:
        raise LoadRefused(UNAVAILABLE, 503, "only the primary worker starts loads")

    def loaded(self, model: str) -> None:
        """lmgate loaded `model` through this worker: the host's idle TTL applies to it."""
        self._send({"t": wire.LOADED, "model": model})

    async def snapshot(self) -> dict[str, Any] | None:
        """The host's `/debug/queue`, or None when it cannot be asked."""
        if not self.connected:
            return None
        query = next(self._queries)
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._snapshots[query] = future
        self._send({"t": wire.SNAPSHOT, "q": query})
        try:
            return await asyncio.wait_for(future, SNAPSHOT_TIMEOUT_S)
        except TimeoutError:
            return None
        finally:
            self._snapshots.pop(query, None)

    # -- the connection ------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        writer = self._writer
        if writer is None:
            return
        writer.write(wire.frame(message))
        if writer.transport.get_write_buffer_size() > MAX_BUFFER:
            writer.transport.abort()  # the host stopped reading: the read loop ends

    def _send_submit(self, pending: Pending) -> None:
        pending.sent = True
        self._send({"t": wire.SUBMIT, "r": wire.request_out(pending.request)})

    async def run(self) -> None:
        """Connect, reconnect with backoff, read answers; returns once `stop` was called."""
        watch = asyncio.get_running_loop().create_task(self._watch())
        pause = BACKOFF_S[0]
        try:
            while not self._stop.is_set():
                try:
                    reader, writer = await asyncio.open_unix_connection(
                        str(self.path), limit=wire.MAX_REPLY + 4
                    )
                except OSError:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), pause)
                    pause = min(pause * 2, BACKOFF_S[1])
                    continue
                pause = BACKOFF_S[0]
                await self._session(reader, writer)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        log.info("scheduler_connected", socket=str(self.path))
        for pending in list(self._pending.values()):
            self._send_submit(pending)
        try:
            while not self._stop.is_set():
                message = await wire.read(reader, wire.MAX_REPLY)
                if message is None:
                    break
                self._on_message(message)
        except (wire.WireError, KeyError, TypeError, ValueError) as exc:
            log.warning("scheduler_host_refused", error=str(exc))
        except OSError:
            pass
        finally:
            self._lost()
            writer.close()

    def stop(self) -> list[tuple[Request, asyncio.Future[Admit | Reject | None]]]:
        """Stop being a client (this worker now hosts the core): the requests without a first
        answer, for the new host to take."""
        self._stop.set()
        if self._writer is not None:
            self._writer.transport.abort()
        self._lost()
        taken = [(p.request, p.arrival) for p in self._pending.values()]
        self._pending.clear()
        return taken

    def _lost(self) -> None:
        """The host is gone: what it queued is answered 503; admitted ends are dropped."""
        if self._writer is None:
            return
        self._writer = None
        log.warning("scheduler_disconnected", socket=str(self.path))
        for pending in self._pending.values():
            pending.sent = False  # sent again to the next host
        queued = list(self._queued)
        self._queued.clear()
        self._running.clear()
        self._places.clear()
        loop = asyncio.get_running_loop()
        for rid in queued:
            reject: list[Action] = [
                unavailable(rid, "the worker holding the queue went away while this waited")
            ]
            loop.call_soon(self.deliver, reject)
        for future in self._snapshots.values():
            if not future.done():
                future.set_result(None)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == wire.VERDICT:
            self._verdict(message["id"], wire.verdict_in(message["v"]))
        elif kind == wire.QUEUED:
            self._was_queued(message["id"], wire.info_in(message["i"]))
        elif kind == wire.PLACES:
            for rid, value in message["p"].items():
                info = wire.info_in(value)
                if rid in self._queued and info is not None:
                    self._places[rid] = info
        elif kind == wire.SNAPPED:
            future = self._snapshots.get(message["q"])
            if future is not None and not future.done():
                future.set_result(message["s"])
        else:
            raise wire.WireError(f"unknown message {kind!r}")

    def _verdict(self, rid: str, verdict: Admit | Reject) -> None:
        admitted = isinstance(verdict, Admit)
        pending = self._pending.pop(rid, None)
        if pending is not None:
            if pending.arrival.done():  # its client went away meanwhile
                if admitted:
                    self._send({"t": wire.CANCEL, "id": rid})
                return
            if admitted:
                self._running.add(rid)
            pending.arrival.set_result(verdict)
        elif self._queued.pop(rid, None) is not None:
            self._places.pop(rid, None)
            if admitted:
                self._running.add(rid)
            later: list[Action] = [verdict]
            asyncio.get_running_loop().call_soon(self.deliver, later)

    def _was_queued(self, rid: str, info: QueueInfo | None) -> None:
        pending = self._pending.pop(rid, None)
        if pending is None:
            return
        if pending.arrival.done():
            self._send({"t": wire.CANCEL, "id": rid})
            return
        self._queued[rid] = pending.since + self.queue_timeout + MARGIN_S
        if info is not None:
            self._places[rid] = info
        pending.arrival.set_result(None)

    async def _watch(self) -> None:
        """No request waits forever: past its bound it is answered 503 and withdrawn."""
        while True:
            await asyncio.sleep(WATCH_S)
            now = self.clock()
            for rid, pending in list(self._pending.items()):
                bound = self.queue_timeout + MARGIN_S if pending.sent else CONNECT_WAIT_S
                if now - pending.since > bound:
                    self.cancel(rid, now)
                    if not pending.arrival.done():
                        why = "no answer from the worker holding the queue"
                        pending.arrival.set_result(unavailable(rid, why))
            overdue = [rid for rid, deadline in self._queued.items() if now > deadline]
            for rid in overdue:
                self.cancel(rid, now)
                why = "no verdict from the worker holding the queue in time"
                self.deliver([unavailable(rid, why)])
