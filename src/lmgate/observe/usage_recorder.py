"""Usage accounting: every finished inference request becomes part of a per-minute row.

The request path pays one list append. A background task folds what piled up into a few
upserts and writes them in one transaction, in a worker thread, every `flush_seconds`; readers
of `/admin/usage` flush first, so they see every request that finished before they asked.
The pending list is bounded: past `max_pending` rows (the disk stalled for a long time)
further rows are dropped and counted rather than growing memory.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import structlog

from lmgate.exchange import Exchange
from lmgate.store.db import Database
from lmgate.store.usage import UsageRow, upserts

log: Any = structlog.get_logger("lmgate.usage")
# minute, key, model, endpoint, failed, tokens in, tokens out, tokens out estimated
Pending = tuple[int, str, str, str, bool, int | None, int | None, bool]


def fold(rows: list[Pending]) -> list[UsageRow]:
    merged: dict[tuple[int, str, str, str], UsageRow] = {}
    for minute, key, model, endpoint, failed, tokens_in, tokens_out, estimated in rows:
        row = merged.get((minute, key, model, endpoint))
        if row is None:
            row = merged[minute, key, model, endpoint] = UsageRow(minute, key, model, endpoint)
        row.requests += 1
        row.errors += failed
        if tokens_in is None and (tokens_out is None or estimated):
            row.unreported += 1  # the upstream said nothing: estimated counts are not reports
        row.tokens_in += tokens_in or 0
        row.tokens_out += tokens_out or 0
        if estimated:
            row.tokens_out_estimated += tokens_out or 0
    return list(merged.values())


class UsageRecorder:
    def __init__(
        self,
        db: Database,
        *,
        flush_seconds: float = 1.0,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.clock = clock
        self.pending: list[Pending] = []
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._lock = asyncio.Lock()

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        if ex.endpoint is None:
            return
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        minute = int(self.clock()) // 60 * 60
        self.pending.append(
            (
                minute,
                ex.key_name or "",
                ex.model or "",
                ex.endpoint,
                ex.failed,
                ex.tokens_in,
                ex.tokens_out,
                ex.tokens_estimated,
            )
        )

    async def flush(self) -> None:
        async with self._lock:
            rows, self.pending = self.pending, []
            if not rows:
                return
            try:
                await self.db.atransaction(upserts(fold(rows)))
            except sqlite3.Error as exc:
                self.failures += 1
                log.error("usage_write_failed", error=str(exc), rows=len(rows))
                room = self.max_pending - len(self.pending)
                self.dropped += max(0, len(rows) - room)
                self.pending[:0] = rows[:room]  # tried again on the next flush
                return
            self.written += len(rows)

    async def run(self) -> None:
        """The background writer; what is still pending at shutdown is written on the way out."""
        try:
            while True:
                await asyncio.sleep(self.flush_seconds)
                await self.flush()
        finally:
            rows, self.pending = self.pending, []
            if rows:
                self.db.transaction(upserts(fold(rows)))
                self.written += len(rows)
