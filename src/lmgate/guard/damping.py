"""Brute-force damping: an address that keeps presenting bad keys is shut out for a while.

Per address, failures inside a sliding window are counted; reaching the limit blocks that
address (every request that needs a key gets 429 and the key is not even looked at, so
guessing learns nothing), for a time that doubles with each repeat offence up to a cap.
Other addresses are unaffected. IPv6 clients are counted per /64, the block a single host
usually owns, so rotating through its addresses does not reset the count. Memory is bounded:
the least recently seen addresses are forgotten first.

Addresses in the exempt set (by default this machine's own loopback addresses) are never
counted: a local script with a stale key must not lock the operator out of the admin API and
the dashboard on the same machine. A block is listed by `blocks` and lifted by `clear`, so an
operator can see and undo one without restarting.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from lmgate.guard.allowlist import IPAddress, NetworkSet, parse_address

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


def bucket_of_text(text: str) -> str | None:
    """The bucket an operator names: an address (IPv6: its /64 is meant) or a bucket as
    `blocks` lists it; None when it is neither."""
    text = text.strip()
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return None
        return bucket(net.network_address) if net.version == 6 else str(net.network_address)
    addr = parse_address(text)
    return None if addr is None else bucket(addr)


class Damper:
    def __init__(
        self,
        *,
        limit: int,
        block_s: float,
        window_s: float = WINDOW_S,
        capacity: int = 10_000,
        exempt: NetworkSet | None = None,
    ) -> None:
        self.limit = limit
        self.block_s = block_s
        self.window_s = window_s
        self.capacity = capacity
        self.exempt = exempt if exempt is not None else NetworkSet([])
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def counts(self, addr: IPAddress | None) -> bool:
        """Whether bad keys from `addr` are counted at all."""
        return self.enabled and addr not in self.exempt

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

    def blocks(self, now: float | None = None) -> list[dict[str, object]]:
        """The addresses blocked now, longest wait first: what `/admin/blocks` lists."""
        now = time.monotonic() if now is None else now
        wall = time.time()
        held = sorted(
            ((w, r) for w, r in self._records.items() if r.blocked_until > now),
            key=lambda item: -item[1].blocked_until,
        )
        return [
            {
                "address": who,
                "retryAfter": round(record.blocked_until - now, 1),
                "until": round(wall + record.blocked_until - now, 3),
                "offences": record.offences,
            }
            for who, record in held
        ]

    def clear(self, who: str | None = None, now: float | None = None) -> list[str]:
        """Lift the block on `who` (every block when None) and forget its failures; returns
        the buckets that were blocked."""
        now = time.monotonic() if now is None else now
        if who is None:
            lifted = [w for w, r in self._records.items() if r.blocked_until > now]
            self._records.clear()
            return lifted
        record = self._records.pop(who, None)
        return [who] if record is not None and record.blocked_until > now else []
