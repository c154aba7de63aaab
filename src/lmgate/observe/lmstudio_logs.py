"""Follows LM Studio's server log and publishes each entry as an `lmstudio_log` event.

LM Studio writes `<dir>/YYYY-MM/YYYY-MM-DD.N.log` and starts a new file for a new day, month
or session; the newest name is the one being written. The follower keeps its file open and
checks on every poll: a newer file appears (finish the old one, then read the new one from
its start), the name now points at another file (rotated: same), or the file shrank
(truncated: read again from the start). At startup it begins at the end of the newest file:
history is not replayed. File reads run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from lmgate.observe.events import EventBus
from lmgate.observe.lmstudio_log_parse import EntryAssembler, LogEntry, fields

log: Any = structlog.get_logger("lmgate.lmstudio_logs")
_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(\d+)\.log$")


def newest_log(directory: Path) -> Path | None:
    """The file LM Studio writes to: the latest date, then the highest session number."""
    best: tuple[str, int, float] | None = None
    found: Path | None = None
    for path in [*directory.glob("*.log"), *directory.glob("*/*.log")]:
        match = _NAME.match(path.name)
        try:
            key = (match[1], int(match[2]), 0.0) if match else ("", 0, path.stat().st_mtime)
        except OSError:
            continue
        if best is None or key > best:
            best, found = key, path
    return found


class FileFollower:
    """Lines appended to the newest log file since the last call (blocking I/O)."""

    def __init__(self, directory: Path, *, max_read: int = 1 << 20) -> None:
        self.directory = directory
        self.max_read = max_read
        self.path: Path | None = None
        self._fh: BinaryIO | None = None
        self._inode = 0
        self._partial = b""
        self._first = True

    def _open(self, path: Path, *, at_end: bool) -> None:
        self.close()
        self._fh = open(path, "rb")  # kept open across polls
        self._inode = os.fstat(self._fh.fileno()).st_ino
        self.path = path
        if at_end:
            self._fh.seek(0, os.SEEK_END)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh, self._partial = None, b""

    def _lines(self, *, final: bool = False) -> list[str]:
        assert self._fh is not None
        data = self._fh.read() if final else self._fh.read(self.max_read)
        *complete, self._partial = (self._partial + data).split(b"\n")
        if final and self._partial:
            complete.append(self._partial)
            self._partial = b""
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in complete]

    def read(self) -> list[str]:
        newest = newest_log(self.directory) if self.directory.is_dir() else None
        first, self._first = self._first, False
        lines: list[str] = []
        if self._fh is None or self.path is None:
            if newest is None:
                return []
            self._open(newest, at_end=first)
        elif newest is not None and newest != self.path:
            lines += self._lines(final=True)
            self._open(newest, at_end=False)
        else:
            try:
                stat = os.stat(self.path)
            except FileNotFoundError:
                return self._lines()  # removed: finish what is open, wait for a new file
            if stat.st_ino != self._inode:
                lines += self._lines(final=True)
                self._open(self.path, at_end=False)
            elif stat.st_size < self._fh.tell():
                self._fh.seek(0)
                self._partial = b""
        return lines + self._lines()


class LmStudioLogTailer:
    def __init__(
        self,
        directory: Path,
        bus: EventBus,
        *,
        poll_seconds: float = 0.5,
        clean_body: Callable[[str], str] | None = None,
    ) -> None:
        self.follower = FileFollower(directory)
        self.bus = bus
        self.poll_seconds = poll_seconds
        self.clean_body = clean_body
        self.entries = 0
        self._assembler = EntryAssembler()

    def _publish(self, entry: LogEntry | None) -> None:
        if entry is None:
            return
        self.entries += 1
        file = self.follower.path.name if self.follower.path else None
        self.bus.publish(
            "lmstudio_log", **fields(entry, self.clean_body), file=file, requestId=None
        )

    async def step(self) -> None:
        """One poll: new lines become entries; an entry idle for a whole poll is finished."""
        lines = await asyncio.to_thread(self.follower.read)
        for line in lines:
            self._publish(self._assembler.feed(line))
        if not lines:
            self._publish(self._assembler.flush())

    async def run(self) -> None:
        warned = False
        try:
            while True:
                try:
                    await self.step()
                    warned = False
                except OSError as exc:
                    if not warned:
                        log.warning("lmstudio_log_unreadable", error=str(exc))
                    warned = True
                await asyncio.sleep(self.poll_seconds)
        finally:
            self.follower.close()
