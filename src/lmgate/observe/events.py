"""The in-process event bus behind `/debug/stream`.

Publishing never blocks and never awaits: each subscriber has a bounded queue, and a full
queue drops the event and counts it, so a stalled subscriber cannot slow the proxy; it is told
how many it lost when it reads again. A bounded ring of recent events lets a reconnecting
subscriber resume after its `Last-Event-ID`. Every event carries an id, a timestamp and the
id of the request it belongs to (taken from the running request when the publisher gives none).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import orjson

from lmgate.errors import GatewayError
from lmgate.exchange import Exchange

# The request the running task serves; set when an exchange starts (see `requests.py`).
CURRENT_REQUEST: ContextVar[str | None] = ContextVar("lmgate_request_id", default=None)


class Event:
    __slots__ = ("_frame", "data", "id", "timestamp", "type")

    def __init__(self, id_: int, type_: str, timestamp: float, data: dict[str, Any]) -> None:
        self.id = id_
        self.type = type_
        self.timestamp = timestamp
        self.data = data
        self._frame: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "timestamp": self.timestamp, **self.data}

    @property
    def model(self) -> str | None:
        model = self.data.get("model") or self.data.get("modelKey")
        return model if isinstance(model, str) else None

    def frame(self) -> bytes:
        """The SSE frame, encoded once however many subscribers receive it."""
        if self._frame is None:
            self._frame = sse_frame(self.type, self.as_json(), self.id)
        return self._frame


def sse_frame(type_: str, data: dict[str, Any], id_: int | None = None) -> bytes:
    head = b"id: %d\n" % id_ if id_ is not None else b""
    return head + b"event: " + type_.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class EventFilter:
    """Which events a subscriber wants: exact types or `prefix*` globs, and optionally one model
    (then events that name no model are left out). Decisions per type are cached."""

    def __init__(self, types: Iterable[str] | None = None, model: str | None = None) -> None:
        names = [t.strip() for t in types or () if t.strip()]
        self.types = tuple(names) or None
        self.model = model or None
        self._exact = frozenset(n for n in names if not n.endswith("*"))
        self._prefixes = tuple(n[:-1] for n in names if n.endswith("*"))
        self._by_type: dict[str, bool] = {}

    def _type_ok(self, type_: str) -> bool:
        if self.types is None:
            return True
        ok = self._by_type.get(type_)
        if ok is None:
            ok = type_ in self._exact or type_.startswith(self._prefixes)
            self._by_type[type_] = ok
        return ok

    def __call__(self, event: Event) -> bool:
        return self._type_ok(event.type) and (self.model is None or event.model == self.model)


class Subscription:
    """One subscriber's bounded queue. `offer` never blocks; `take` waits for a batch."""

    __slots__ = ("_items", "_limit", "_ready", "lost", "wants")

    def __init__(self, wants: EventFilter, limit: int) -> None:
        self.wants = wants
        self.lost = 0  # dropped since the last `take`
        self._items: deque[Event] = deque()
        self._limit = limit
        self._ready = asyncio.Event()

    def offer(self, event: Event) -> bool:
        if len(self._items) >= self._limit:
            self.lost += 1
            return False
        self._items.append(event)
        if not self._ready.is_set():
            self._ready.set()
        return True

    async def take(self) -> tuple[list[Event], int]:
        """Everything queued (waiting for at least one event or loss), and the loss count."""
        while not self._items and not self.lost:
            self._ready.clear()
            await self._ready.wait()
        batch = list(self._items)
        self._items.clear()
        lost, self.lost = self.lost, 0
        return batch, lost


class EventBus:
    def __init__(self, *, history: int = 1000, queue_size: int = 1000) -> None:
        self._ids = itertools.count(1)
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size
        self.published = 0
        self.dropped = 0
        self.by_type: dict[str, int] = {}

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def last_id(self) -> int:
        return self._history[-1].id if self._history else 0

    def publish(self, type_: str, **data: Any) -> Event:
        if "requestId" not in data:
            data["requestId"] = CURRENT_REQUEST.get()
        event = Event(next(self._ids), type_, time.time(), data)
        self._history.append(event)
        self.published += 1
        self.by_type[type_] = self.by_type.get(type_, 0) + 1
        for sub in self._subscribers:
            if sub.wants(event) and not sub.offer(event):
                self.dropped += 1
        return event

    def subscribe(
        self,
        *,
        types: Iterable[str] | None = None,
        model: str | None = None,
        after_id: int | None = None,
    ) -> Subscription:
        """A new subscription; with `after_id`, first the buffered events after that id.

        An id newer than the newest event comes from before a restart: everything buffered is
        newer than what that client saw. Events that fell out of the buffer, or that do not fit
        the queue, are reported as lost."""
        sub = Subscription(EventFilter(types, model), self._queue_size)
        if after_id is not None and self._history:
            if after_id > self.last_id:
                after_id = 0
            missed = self._history[0].id - after_id - 1
            backlog = [e for e in self._history if e.id > after_id and sub.wants(e)]
            overflow = max(0, len(backlog) - self._queue_size)
            for event in backlog[overflow:]:
                sub.offer(event)
            sub.lost = max(0, missed) + overflow
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def recent(self, limit: int) -> list[Event]:
        return list(self._history)[-limit:]


def auth_denied(bus: EventBus, ex: Exchange, error: GatewayError) -> Event:
    """The guard refused a request: from where, for what, and why. Never the key itself; the
    key's name only when the key was valid but lacked the scope."""
    return bus.publish(
        "auth_denied",
        requestId=ex.request_id,
        address=ex.client,
        method=ex.method,
        path=ex.path,
        reason=error.code,
        status=error.status,
        key=ex.key_name,
    )
