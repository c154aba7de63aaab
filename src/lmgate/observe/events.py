"""The in-process event bus behind `/debug/stream`.

Publishing never blocks and never awaits: each subscriber has a bounded queue, and a full
queue drops the event and counts it, so a stalled subscriber cannot slow the proxy. A bounded
ring of recent events lets a reconnecting subscriber resume with `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    timestamp: float
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "timestamp": self.timestamp, **self.data}


@dataclass(eq=False, slots=True)
class Subscription:
    queue: asyncio.Queue[Event]
    dropped: int = 0
    types: frozenset[str] | None = field(default=None)

    def wants(self, event: Event) -> bool:
        return self.types is None or event.type in self.types


class EventBus:
    def __init__(self, *, history: int = 1000, queue_size: int = 1000) -> None:
        self._ids = itertools.count(1)
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, type_: str, **data: Any) -> Event:
        event = Event(next(self._ids), type_, time.time(), data)
        self._history.append(event)
        for sub in self._subscribers:
            if not sub.wants(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped += 1
        return event

    def subscribe(
        self, *, types: Iterable[str] | None = None, after_id: int | None = None
    ) -> Subscription:
        sub = Subscription(
            asyncio.Queue(self._queue_size), types=frozenset(types) if types else None
        )
        if after_id is not None:
            for event in self._history:
                if event.id > after_id and sub.wants(event) and not sub.queue.full():
                    sub.queue.put_nowait(event)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def recent(self, limit: int) -> list[Event]:
        return list(self._history)[-limit:]
