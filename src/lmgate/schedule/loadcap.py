"""How often each key made lmgate load a model in the last hour (`max_loads_per_hour`).

Only loads a key's request caused are counted; the history keeps one hour and forgets keys
with nothing in it, so its size is bounded by the loads an hour can hold.
"""

from __future__ import annotations

from collections import deque

from lmgate.schedule.types import Request

HOUR = 3600.0


class LoadHistory:
    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        while times and times[0] <= now - HOUR:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        return times

    def allows(self, request: Request, now: float) -> tuple[bool, float]:
        """May this request cause a load now? If not, the seconds until it may."""
        if not request.may_load:
            return False, 0.0
        cap = request.max_loads_per_hour
        if cap is None:
            return True, 0.0
        times = self._recent(request.key, now)
        if times is None:
            return cap > 0, HOUR
        return len(times) < cap, times[0] + HOUR - now

    def charge(self, key: str | None, now: float) -> None:
        if key is not None:
            times = self._recent(key, now) or self._times.setdefault(key, deque())
            times.append(now)

    def __len__(self) -> int:
        return len(self._times)
