"""Brute-force damping: an address that keeps presenting bad keys is shut out for a while.

Per address, failures inside a sliding window are counted; reaching the limit blocks that
address (every request that needs a key gets 429 and the key is not even looked at, so
guessing learns nothing), for a time that doubles with each repeat offence up to a cap.
Other addresses are unaffected. IPv6 clients are counted per /64, the block a single host
usually owns, so rotating through its addresses does not reset the count. Memory is bounded:
the least recently seen addresses are forgotten first.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from lmgate.guard.allowlist import IPAddress

WINDOW_S = 60.0
MAX_BLOCK_S = 3600.0


@dataclass(slots=True)
class _Record:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    offences: int = 0


def bucket(addr: IPAddress | None) -> str:
    """The unit that is counted: the IPv4 address, or the IPv6 /64."""
    if addr is None:
        return "unknown"
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class Damper:
    def __init__(
        self, *, limit: int, block_s: float, window_s: float = WINDOW_S, capacity: int = 10_000
    ) -> None:
        self.limit = limit
        self.block_s = block_s
        self.window_s = window_s
        self.capacity = capacity
        self._records: OrderedDict[str, _Record] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def blocked_for(self, who: str, now: float | None = None) -> float:
        """Seconds until `who` may try again; 0 when it is not blocked."""
        record = self._records.get(who)
        if record is None:
            return 0.0
        remaining = record.blocked_until - (time.monotonic() if now is None else now)
        return remaining if remaining > 0 else 0.0

    def failed(self, who: str, now: float | None = None) -> float:
        """Count one failure; returns the block it triggered, in seconds (0 for none)."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        record = self._records.get(who)
        if record is None:
            record = self._records[who] = _Record()
            if len(self._records) > self.capacity:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(who)
            if record.offences and now - record.blocked_until > MAX_BLOCK_S:
                record.offences = 0  # an hour of good behaviour wipes the slate
        failures = record.failures
        failures.append(now)
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if len(failures) < self.limit:
            return 0.0
        failures.clear()
        block: float = min(self.block_s * 2.0**record.offences, MAX_BLOCK_S)
        record.offences += 1
        record.blocked_until = now + block
        return block

    def tracked(self) -> int:
        return len(self._records)
