"""Which worker this process is: a slot held by an `flock` on a file in the run directory.

Slots are tried in order and the first free one is taken, so indexes stay in 0..N-1 while
uvicorn replaces dead workers (the kernel drops a dead process's lock). Slot 0 is the
primary, the one worker that runs actions that must happen once per gateway (reloading the
active model, hosting the scheduler's core); a worker that started while slot 0 was still held
(a rolling restart, or the primary died) keeps trying to take it, so the gateway never stays
without a primary, and tells `on_primary` when it did.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRIMARY_RETRY_S = 2.0


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@dataclass(slots=True)
class Worker:
    """This process's place among the workers; `count` 1 means single-process mode."""

    index: int = 0
    count: int = 1
    run_dir: Path | None = None
    primary: bool = True
    pid: int = field(default_factory=os.getpid)
    _locks: list[int] = field(default_factory=list, repr=False)
    on_primary: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def shared(self) -> bool:
        return self.count > 1

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "pid": self.pid, "workers": self.count}

    @classmethod
    def claim(cls, run_dir: Path, count: int) -> Worker:
        index = 0
        while True:  # past count only while old workers are still being retired
            fd = _try_lock(run_dir / f"worker-{index}.lock")
            if fd is not None:
                return cls(index, count, run_dir, primary=index == 0, _locks=[fd])
            index += 1

    def try_primary(self) -> bool:
        if not self.primary and self.run_dir is not None:
            fd = _try_lock(self.run_dir / "worker-0.lock")
            if fd is not None:
                self._locks.append(fd)
                self.primary = True
                for listener in self.on_primary:
                    listener()
        return self.primary

    async def contend(self) -> None:
        """Background loop of non-primary workers: take over slot 0 once it is free."""
        while True:  # polling: flock has no async wait, and this is one syscall per 2 s
            if self.try_primary():
                return
            await asyncio.sleep(PRIMARY_RETRY_S)
