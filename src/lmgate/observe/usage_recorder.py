"""Usage accounting: every finished inference request becomes part of a per-minute row.

The request path adds the request to its row in memory (one dict lookup and a few additions).
A background task writes the rows that piled up as a few upserts in one transaction, in a
worker thread, every `flush_seconds`; readers of `/admin/usage` flush first, so they see every
request that finished before they asked. Pending rows are bounded: past `max_pending` of them
(the disk stalled for a long time, with traffic of ever new keys and models) further requests
are dropped and counted rather than growing memory. Models are recorded under the name the
gateway's `ModelNames` gives them (`other` past its cap), so made-up names add no rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from lmgate.exchange import Exchange
from lmgate.observe.cardinality import ModelNames
from lmgate.store.db import Database
from lmgate.store.usage import UsageRow, upserts

log: Any = structlog.get_logger("lmgate.usage")
RowKey = tuple[int, str, str, str]  # minute, key, model, endpoint


def _merge(into: UsageRow, row: UsageRow) -> None:
    into.requests += row.requests
    into.errors += row.errors
    into.unreported += row.unreported
    into.tokens_in += row.tokens_in
    into.tokens_out += row.tokens_out
    into.tokens_out_estimated += row.tokens_out_estimated


class UsageRecorder:
    def __init__(
        self,
        db: Database,
        *,
        flush_seconds: float = 1.0,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
        models: ModelNames | None = None,
    ) -> None:
        self.db = db
        self.models = models or ModelNames()
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending  # rows, i.e. minute x key x model x endpoint
        self.clock = clock
        self.pending: dict[RowKey, UsageRow] = {}
        self.pending_requests = 0
        self.written = 0  # requests
        self.dropped = 0
        self.failures = 0
        self.last_error: tuple[float, str] | None = None  # when, and what the disk said
        self.writing = 0  # requests taken out of `pending` by the write under way
        self._lock = asyncio.Lock()

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        if ex.endpoint is None:
            return
        model = self.models(ex.model) or ""
        key = (int(self.clock()) // 60 * 60, ex.key_name or "", model, ex.endpoint)
        row = self.pending.get(key)
        if row is None:
            if len(self.pending) >= self.max_pending:
                self.dropped += 1
                return
            row = self.pending[key] = UsageRow(*key)
        self.pending_requests += 1
        row.requests += 1
        row.errors += ex.failed
        tokens_in, tokens_out, estimated = ex.tokens_in, ex.tokens_out, ex.tokens_estimated
        if tokens_in is None and (tokens_out is None or estimated):
            row.unreported += 1  # the upstream said nothing: estimated counts are not reports
        if tokens_in:
            row.tokens_in += tokens_in
        if tokens_out:
            row.tokens_out += tokens_out
            if estimated:
                row.tokens_out_estimated += tokens_out

    def _take(self) -> tuple[dict[RowKey, UsageRow], int]:
        rows, requests = self.pending, self.pending_requests
        self.pending, self.pending_requests = {}, 0
        return rows, requests

    def _put_back(self, rows: Iterable[UsageRow], requests: int) -> None:
        """A failed write: its rows wait for the next flush, merged with what came since."""
        for row in rows:
            key = (row.minute, row.key, row.model, row.endpoint)
            mine = self.pending.get(key)
            if mine is not None:
                _merge(mine, row)
            elif len(self.pending) < self.max_pending:
                self.pending[key] = row
            else:
                self.dropped += row.requests
                requests -= row.requests
        self.pending_requests += requests

    async def flush(self) -> None:
        async with self._lock:
            rows, requests = self._take()
            if not rows:
                return
            self.writing = requests
            try:
                await self.db.atransaction(upserts(rows.values()))
            except sqlite3.Error as exc:
                self.failures += 1
                self.last_error = (self.clock(), str(exc))
                log.error("usage_write_failed", error=str(exc), rows=len(rows))
                self._put_back(rows.values(), requests)
                return
            finally:
                self.writing = 0
            self.written += requests

    async def run(self) -> None:
        """The background writer; what is still pending at shutdown is written on the way out."""
        try:
            while True:
                await asyncio.sleep(self.flush_seconds)
                await self.flush()
        finally:
            rows, requests = self._take()
            if rows:
                try:
                    self.db.transaction(upserts(rows.values()))
                    self.written += requests
                except sqlite3.Error as exc:  # a full disk must not make shutdown crash
                    self.dropped += requests
                    log.error("usage_lost_at_shutdown", error=str(exc), requests=requests)

    def backlog(self) -> dict[str, Any]:
        """What is not written yet, what was lost, and why (for `/admin/usage`)."""
        when, error = self.last_error or (None, None)
        return {
            "pendingRows": self.pending_requests + self.writing,
            "droppedRows": self.dropped,
            "writeFailures": self.failures,
            "lastWriteError": None if error is None else {"message": error, "at": when},
        }
