"""One code lookup at a time per address, so parallel guesses cannot outrun the damper.

A wrong code is counted only once its lookup (a database read in a thread) has answered. Sent
in parallel, every guess would pass the block check before the first failure was counted, and
a client with N connections would get N tries per block instead of the limit. Lookups from
one address (IPv6: its /64) therefore run one after another: each sees the failures of the one
before, and a flood from one address holds one database thread, not all of them. Another
address never waits for it. Entries exist only while someone holds or waits, so memory follows
the open connections, not the addresses ever seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class OneAtATime:
    def __init__(self) -> None:
        self._held: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def turn(self, who: str) -> AsyncIterator[None]:
        entry = self._held.get(who)
        if entry is None:
            entry = self._held[who] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._held[who]

    def waiting(self) -> int:
        """Addresses with a lookup running or waiting (for tests and status)."""
        return len(self._held)
