"""The C heap under large request bodies: allocated so that their memory goes back to the
system once they are gone, where the C library is glibc (elsewhere there is nothing to do).

A body of megabytes arrives in pieces of up to 64 KiB (uvicorn's reads), which come from the
heap, and glibc hands freed heap memory back to the system only from the heap's top: after
abandoned uploads of 20 MiB the gateway sometimes stayed 35 MiB larger for good. So after a
large body `release_soon` asks glibc to return the heap's free pages (`malloc_trim`), at
most once a second, in a worker thread. And one-piece allocations of a MiB or more come from
the system directly: left alone, glibc raises that threshold to the largest block freed so
far (up to 32 MiB), so after the first large body, bodies came from the heap too.
"""

from __future__ import annotations

import asyncio
import ctypes
from typing import Any

LARGE_BODY = 1024 * 1024
TRIM_DELAY_S = 1.0
_M_MMAP_THRESHOLD = -3


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


class _Heap:
    def __init__(self) -> None:
        self.libc = _libc()
        self.pending = False

    def settle(self) -> None:
        if self.libc is not None:
            self.libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BODY)

    def release_soon(self) -> None:
        if self.pending or self.libc is None:
            return
        self.pending = True
        loop = asyncio.get_running_loop()
        loop.call_later(TRIM_DELAY_S, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_in_executor(None, self._trim)  # it walks the heap: not on the event loop

    def _trim(self) -> None:
        self.pending = False
        self.libc.malloc_trim(0)


_HEAP = _Heap()
settle_allocator = _HEAP.settle
release_soon = _HEAP.release_soon
