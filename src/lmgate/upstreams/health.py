"""Whether an upstream takes requests: its watcher's model-list reads (the active probe) and a
circuit breaker fed by the requests themselves (the passive one).

The breaker opens after `THRESHOLD` failures in a row (connections refused or lost before an
answer, 5xx answers); while open the upstream gets no requests. After a cool-down (doubling
from `COOL_S` up to `COOL_MAX_S` while it keeps failing) it lets requests through again
(half-open): the first success closes it, a failure opens it again at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

THRESHOLD = 3
COOL_S = 2.0
COOL_MAX_S = 60.0


class Breaker:
    __slots__ = ("clock", "cool", "failures", "open_until")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures = 0
        self.open_until = 0.0
        self.cool = COOL_S

    @property
    def is_open(self) -> bool:
        return self.open_until > self.clock()

    @property
    def state(self) -> str:
        if self.is_open:
            return "open"
        return "half-open" if self.failures >= THRESHOLD else "closed"

    def failure(self) -> bool:
        """One more failure; True when it opened the breaker."""
        self.failures += 1
        if self.failures < THRESHOLD or self.is_open:
            return False
        if self.failures > THRESHOLD:  # failed again while half-open: a longer cool-down
            self.cool = min(self.cool * 2, COOL_MAX_S)
        self.open_until = self.clock() + self.cool
        return True

    def success(self) -> bool:
        """An answer came; True when it closed a breaker that had opened."""
        tripped = self.failures >= THRESHOLD
        self.failures = 0
        self.cool = COOL_S
        self.open_until = 0.0
        return tripped
