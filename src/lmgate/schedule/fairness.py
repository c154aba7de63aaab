"""Waiting requests in weighted fair order between keys (start-time fair queueing).

Each waiting request carries a start tag: `max(V, F[key])`, and the key's finish tag moves on by
`1 / weight`. V is the smallest start tag still waiting, so a key that floods the queue only
pushes its *own* later requests back. Among keys that stay backlogged, service follows their
weights. A key's finish tag is forgotten as soon as it has nothing queued, so memory is bounded
by the queue, and credit cannot be hoarded; only the finish tag of its last request *served*
from the queue is kept while it is ahead of V (all are dropped when the queue empties).

A key that arrives with nothing queued and no served tag ahead of V is light: it gets tag V and
goes before the requests of backlogged keys tied at V, so a single request waits only for a
slot to free (one service time), never behind another key's flood. A key that sends again as
soon as it is answered keeps a served tag ahead of V, so it takes its turn like a backlogged key
and gets no more than its weighted share.

Order is `(-priority, start, rank, seq)`, rank 0 for a light key's request: a higher priority
class always goes first.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass

from lmgate.schedule.types import Request

Order = tuple[int, float, int, int]


@dataclass(slots=True)
class Waiting:
    request: Request
    arrival: float
    order: Order
    position: int  # 1-based place for its model when it was queued


def _order(w: Waiting) -> Order:
    return w.order


class FairQueue:
    def __init__(self) -> None:
        self.by_model: dict[str, list[Waiting]] = {}
        self.entries: dict[str, Waiting] = {}
        self._seq = 0
        self._finish: dict[str, float] = {}
        self._served: dict[str, float] = {}  # finish tags of served requests still ahead of V
        self._per_key: dict[str, int] = {}
        self.restricted: dict[str, int] = {}  # model: waiting requests bound to upstreams or keys
        self.keyed: dict[str, int] = {}  # an upstream's key: waiting requests under another name
        self._starts: list[tuple[float, int, str]] = []  # min-heap, stale entries skipped
        self._arrivals: list[tuple[float, int, str]] = []  # min-heap for timeouts

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self.entries

    def _live(self, entry: tuple[float, int, str]) -> bool:
        waiting = self.entries.get(entry[2])
        return waiting is not None and waiting.order[3] == entry[1]

    def virtual_time(self) -> float:
        """The smallest start tag still waiting (0 when nothing waits)."""
        starts = self._starts
        while starts and not self._live(starts[0]):
            heapq.heappop(starts)
        return starts[0][0] if starts else 0.0

    def push(self, request: Request, arrival: float) -> Waiting:
        vtime = start = self.virtual_time()
        key = request.key
        if key in self._per_key:
            start = max(start, self._finish[key])
        else:
            start = max(start, self._served.get(key, start))
        rank = 0 if start == vtime and key not in self._per_key else 1
        self._finish[key] = start + 1.0 / max(request.weight, 1e-6)
        self._per_key[key] = self._per_key.get(key, 0) + 1
        self._seq += 1
        order: Order = (-request.priority, start, rank, self._seq)
        lst = self.by_model.setdefault(request.model, [])
        index = bisect_left(lst, order, key=_order)
        waiting = Waiting(request, arrival, order, index + 1)
        insort(lst, waiting, key=_order)
        self.entries[request.id] = waiting
        if request.upstreams is not None or request.keys is not None:
            self.restricted[request.model] = self.restricted.get(request.model, 0) + 1
        if request.keys is not None:
            for key in set(request.keys.values()):
                self.keyed[key] = self.keyed.get(key, 0) + 1
        heapq.heappush(self._starts, (start, self._seq, request.id))
        heapq.heappush(self._arrivals, (arrival, self._seq, request.id))
        return waiting

    def served(self, request_id: str) -> Waiting | None:
        """Remove a request that is admitted: its key's finish tag is kept while ahead of V, so
        a key that sends again at once is not light (a cancelled request leaves no tag)."""
        waiting = self.remove(request_id)
        if waiting is not None and self.entries:
            req = waiting.request
            finish = waiting.order[1] + 1.0 / max(req.weight, 1e-6)
            self._served[req.key] = max(finish, self._served.get(req.key, finish))
            if len(self._served) > 2 * len(self._per_key) + 64:
                vtime = self.virtual_time()
                self._served = {k: f for k, f in self._served.items() if f > vtime}
        return waiting

    def remove(self, request_id: str) -> Waiting | None:
        waiting = self.entries.pop(request_id, None)
        if waiting is None:
            return None
        model = waiting.request.model
        lst = self.by_model[model]
        del lst[bisect_left(lst, waiting.order, key=_order)]
        if not lst:
            del self.by_model[model]
            if not self.entries:
                self._served.clear()  # V starts again from 0
        if waiting.request.upstreams is not None or waiting.request.keys is not None:
            if self.restricted[model] > 1:
                self.restricted[model] -= 1
            else:
                del self.restricted[model]
        if waiting.request.keys is not None:
            for other in set(waiting.request.keys.values()):
                if self.keyed[other] > 1:
                    self.keyed[other] -= 1
                else:
                    del self.keyed[other]
        key = waiting.request.key
        left = self._per_key[key] - 1
        if left:
            self._per_key[key] = left
        else:
            del self._per_key[key]
            del self._finish[key]
        if len(self._starts) > 2 * len(self.entries) + 64:  # drop entries removed mid-heap
            self._starts = [e for e in self._starts if self._live(e)]
            self._arrivals = [e for e in self._arrivals if self._live(e)]
            heapq.heapify(self._starts)
            heapq.heapify(self._arrivals)
        return waiting

    def position(self, waiting: Waiting) -> int:
        """1-based place among the requests waiting for the same model."""
        return bisect_left(self.by_model[waiting.request.model], waiting.order, key=_order) + 1

    def oldest(self) -> Waiting | None:
        arrivals = self._arrivals
        while arrivals and not self._live(arrivals[0]):
            heapq.heappop(arrivals)
        return self.entries[arrivals[0][2]] if arrivals else None

    def wanted(self, key: str) -> bool:
        """Whether a waiting request may run on this model key (by its name or an alias)."""
        return key in self.by_model or key in self.keyed

    def waiting_of(self, key: str) -> int:
        return self._per_key.get(key, 0)

    def in_order(self) -> Iterator[Waiting]:
        """Every waiting request, in fair order across models."""
        yield from heapq.merge(*self.by_model.values(), key=_order)

    def crowding_victim(self, newcomer: Request) -> Waiting | None:
        """When the queue is full: the request to turn away so `newcomer` can wait instead, or
        None if the newcomer's key already has its fair share of the queue. The victim is the
        last request of the key holding the largest weighted share (lower priority first)."""
        new_share = (self.waiting_of(newcomer.key) + 1) / max(newcomer.weight, 1e-6)
        worst: tuple[int, float, Waiting] | None = None
        for waiting in self.entries.values():
            req = waiting.request
            if req.key == newcomer.key or req.priority > newcomer.priority:
                continue
            share = self._per_key[req.key] / max(req.weight, 1e-6)
            rank = (-req.priority, share, waiting)
            if (
                worst is None
                or rank[:2] > worst[:2]
                or (rank[:2] == worst[:2] and waiting.order > worst[2].order)
            ):
                worst = rank
        if worst is None:
            return None
        victim = worst[2]
        if victim.request.priority < newcomer.priority or worst[1] > new_share:
            return victim
        return None
