"""The in-process event bus behind `/debug/stream`.

Publishing never blocks and never awaits: it appends to one bounded ring, whatever the number
of subscribers. Each subscriber is a cursor into that ring and copies what it has not seen, in
its own task; one that falls too far behind (a stalled client) skips to the newest events and
is told how many it lost, so it can never slow the proxy or hold memory. The same ring lets a
reconnecting subscriber resume after its `Last-Event-ID`. Every event carries an id, a
timestamp and the id of the request it belongs to (taken from the running request when the
publisher gives none).
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
        """The SSE frame, encoded once however many subscribers receive it. The id, type and
        timestamp are written in front of the encoded data: the same JSON as `as_json()`,
        without building that dict (unless the data has a field of the same name). The
        pieces around them are made once per event type."""
        if self._frame is None:
            data = self.data
            if not data or "id" in data or "type" in data or "timestamp" in data:
                self._frame = _frame_of(self.type.encode(), orjson.dumps(self.as_json()), self.id)
            else:
                event_line, type_field = _pieces(self.type)
                id_ = b"%d" % self.id
                self._frame = b"".join(
                    (
                        b"id: ",
                        id_,
                        event_line,
                        id_,
                        type_field,
                        orjson.dumps(self.timestamp),
                        b",",
                        orjson.dumps(data)[1:],
                        b"\n\n",
                    )
                )
        return self._frame


_PIECES: dict[str, tuple[bytes, bytes]] = {}


def _pieces(type_: str) -> tuple[bytes, bytes]:
    """What comes between the id and the data in a bus frame of this type: its `event:` line
    and the JSON's start, then the type field. Type names are lmgate's own: no escapes."""
    pieces = _PIECES.get(type_)
    if pieces is None:
        name = type_.encode()
        pieces = _PIECES[type_] = (
            b"\nevent: " + name + b'\ndata: {"id":',
            b',"type":"' + name + b'","timestamp":',
        )
    return pieces


def sse_frame(type_: str, data: dict[str, Any], id_: int | None = None) -> bytes:
    return _frame_of(type_.encode(), orjson.dumps(data), id_)


def _frame_of(type_: bytes, body: bytes, id_: int | None) -> bytes:
    head = b"id: %d\n" % id_ if id_ is not None else b""
    return head + b"event: " + type_ + b"\ndata: " + body + b"\n\n"


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
    """A reader of the bus: a cursor into the shared ring, at most `limit` events behind."""

    __slots__ = ("bus", "cursor", "limit", "lost", "wants")

    def __init__(self, bus: EventBus, wants: EventFilter, cursor: int, limit: int) -> None:
        self.bus = bus
        self.wants = wants
        self.cursor = cursor  # the id of the last event this subscriber has seen
        self.limit = limit
        self.lost = 0  # known lost, not reported yet

    @property
    def behind(self) -> int:
        """Events published since the cursor that no longer fit its lag limit."""
        return max(0, self.bus.last_id - self.cursor - self.limit)

    async def take(self, linger: float = 0.0) -> tuple[list[Event], int]:
        """The events since the last take that pass the filter (at least one, or a loss),
        and how many were lost.

        `linger` waits a little longer once something came, so a burst goes out as one write:
        under load that turns a send per event per subscriber into a few per second. It
        applies also when events are already waiting (they came during the last send), or a
        busy bus would keep every subscriber sending tiny batches back to back. The wait ends
        on the loop clock's next multiple of `linger`, the same instant for every subscriber,
        so those that keep up take the same run of events and share its encoding."""
        while True:
            if self.cursor >= self.bus.last_id and not self.lost:
                await self.bus.wait()
            if linger:
                await asyncio.sleep(linger - asyncio.get_running_loop().time() % linger)
            batch, skipped = self.bus.since(self.cursor, self.limit)
            self.cursor = self.bus.last_id
            self.bus.reported_lost += skipped
            lost, self.lost = self.lost + skipped, 0
            if self.wants.types is not None or self.wants.model is not None:
                batch = [event for event in batch if self.wants(event)]
            if batch or lost:
                return batch, lost


class EventBus:
    """One ring of recent events, shared by every subscriber and by resumption.

    Publishing appends to the ring and wakes waiting subscribers with one call, whatever their
    number; each subscriber then copies what it has not seen yet, in its own task. The ring
    holds `max(history, queue_size)` events; a subscriber more than `queue_size` behind skips
    to the newest ones and is told how many it lost."""

    def __init__(self, *, history: int = 1000, queue_size: int = 1000) -> None:
        self._ids = itertools.count(1)
        self._ring: deque[Event] = deque(maxlen=max(history, queue_size, 1))
        self._history = history
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size
        self._signal: asyncio.Event | None = None
        self.published = 0
        self.reported_lost = 0
        self.by_type: dict[str, int] = {}
        self._joined: tuple[int, int, bytes] = (0, 0, b"")  # the last batch's ids and bytes

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def last_id(self) -> int:
        return self._ring[-1].id if self._ring else 0

    @property
    def dropped(self) -> int:
        """Events subscribers lost: reported to them, or certain to be when they next read."""
        return self.reported_lost + sum(sub.behind for sub in self._subscribers)

    def publish(self, type_: str, **data: Any) -> Event:
        return self.emit(type_, data)

    def emit(self, type_: str, data: dict[str, Any]) -> Event:
        """`publish` with the data as a dict, which the event then owns (no copy)."""
        if "requestId" not in data:
            data["requestId"] = CURRENT_REQUEST.get()
        event = Event(next(self._ids), type_, time.time(), data)
        self._ring.append(event)
        self.published += 1
        self.by_type[type_] = self.by_type.get(type_, 0) + 1
        if self._signal is not None:
            self._signal.set()
            self._signal = None
        return event

    async def wait(self) -> None:
        """Until the next event is published."""
        if self._signal is None:
            self._signal = asyncio.Event()
        await self._signal.wait()

    def since(self, cursor: int, limit: int) -> tuple[list[Event], int]:
        """Events after id `cursor`, at most the `limit` newest, and how many were skipped."""
        ring = self._ring
        if not ring or cursor >= ring[-1].id:
            return [], 0
        first, last = ring[0].id, ring[-1].id
        start = max(cursor + 1, first, last - limit + 1)
        skipped = start - (cursor + 1)
        # From the newest end: the cost is the batch's length, not the ring's.
        batch = list(itertools.islice(reversed(ring), last - start + 1))
        batch.reverse()
        return batch, skipped

    def encode(self, batch: list[Event]) -> bytes:
        """The SSE bytes of a batch. Subscribers that woke together take the same run of
        events and share one join; a filtered batch with gaps is joined on its own."""
        if not batch:
            return b""
        first, last = batch[0].id, batch[-1].id
        if len(batch) != last - first + 1:
            return b"".join([event.frame() for event in batch])
        seen_first, seen_last, data = self._joined
        if (seen_first, seen_last) != (first, last):
            data = b"".join([event.frame() for event in batch])
            self._joined = (first, last, data)
        return data

    def subscribe(
        self,
        *,
        types: Iterable[str] | None = None,
        model: str | None = None,
        after_id: int | None = None,
    ) -> Subscription:
        """A new subscription from now on; with `after_id`, from just after that id.

        An id newer than the newest event comes from before a restart: everything buffered is
        newer than what that client saw. Resuming reaches back at most `history` events."""
        cursor = self.last_id
        lost = 0
        if after_id is not None and self._ring:
            if after_id > self.last_id:
                after_id = 0
            oldest = max(self._ring[0].id, self.last_id - self._history + 1)
            lost = max(0, oldest - after_id - 1)
            cursor = max(after_id, oldest - 1)
        sub = Subscription(self, EventFilter(types, model), cursor, self._queue_size)
        sub.lost = lost
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """A counter never goes down: what the subscriber was about to lose stays counted."""
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            self.reported_lost += sub.behind

    def recent(self, limit: int) -> list[Event]:
        return list(self._ring)[-limit:] if limit > 0 else []


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


def address_blocked(bus: EventBus, address: str, seconds: float) -> Event:
    """Too many bad keys from one address (IPv6: its /64): every keyed request from it is
    refused for `seconds`, until then or until an admin lifts it (`DELETE /admin/blocks/...`)."""
    return bus.publish("address_blocked", address=address, seconds=round(seconds, 1))


def address_unblocked(bus: EventBus, addresses: list[str], by: str | None) -> Event:
    """An admin lifted blocks before they ran out."""
    return bus.publish("address_unblocked", addresses=addresses, key=by)
