"""Per-key limits shared by every worker of `serve --workers N`, exact across processes.

In memory each worker would admit the full limit itself (N times the limit in all). Here the
windows live in one small SQLite file in the run directory (tmpfs when there is one; it dies
with the run, as in-memory limits do), and each admission is one transaction under an
`flock`: the kernel queues waiting workers and wakes the next as soon as the lock is free,
where SQLite's own busy handler would sleep a millisecond or more on the event loop. Inside
the lock nobody else writes, so durability is off (`synchronous=OFF`). It costs tens of
microseconds per request of a key that HAS limits; keys without limits never get here
(`Principal.limited`), and one worker keeps `RateLimiter`'s in-memory path.

Requests in flight are counted per worker pid, and rows of pids that are gone are dropped
when a worker starts, so a worker that died mid-request does not hold its slots forever.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lmgate.exchange import Exchange
from lmgate.guard.keys import Principal
from lmgate.guard.rate_headers import Headers
from lmgate.guard.ratelimit import (
    _HELD,
    _METERED,
    WINDOW_S,
    RateLimiter,
    refusal,
    window_headers,
    with_headers,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS admitted (key_id TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS admitted_key ON admitted (key_id, at);
CREATE TABLE IF NOT EXISTS tokens (key_id TEXT NOT NULL, at REAL NOT NULL, n INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_key ON tokens (key_id, at);
CREATE TABLE IF NOT EXISTS totals (
    key_id TEXT PRIMARY KEY, admitted INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS held (
    key_id TEXT NOT NULL, pid INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (key_id, pid)
);
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedRateLimiter(RateLimiter):
    """`RateLimiter` with its windows in a file every worker opens (same checks, same 429s)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)  # CLOCK_MONOTONIC is one clock for every process of a host
        self.pid = os.getpid()
        self._lock = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        with self._locked():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.executescript(_SCHEMA)
            pids = [row[0] for row in self._db.execute("SELECT DISTINCT pid FROM held")]
            for pid in pids:
                if not _alive(pid):
                    self._db.execute("DELETE FROM held WHERE pid=?", (pid,))

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            yield self._db
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._locked() as db:
            db.execute("BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def admit(self, principal: Principal, ex: Exchange, *, inference: bool) -> Headers:
        now = self.clock()
        key, horizon = principal.id, now - WINDOW_S
        rpm, tpm, limit = principal.rpm, principal.tpm, principal.max_concurrent
        metered = inference and tpm is not None
        held = inference and limit is not None
        with self._transaction() as db:
            admitted, oldest, tokens, in_flight = self._window(db, key, horizon, metered)
            if held:
                sql = "SELECT COALESCE(SUM(n), 0) FROM held WHERE key_id=?"
                in_flight = db.execute(sql, (key,)).fetchone()[0]
            over = refusal(
                principal,
                now,
                inference=inference,
                admitted=admitted,
                oldest=oldest,
                tokens=tokens,
                tokens_free_at=lambda: self._tokens_free_at(db, key, tpm or 0, tokens),
                in_flight=in_flight,
            )
            if over is None and rpm is not None:
                db.execute("INSERT INTO admitted (key_id, at) VALUES (?, ?)", (key, now))
                db.execute("UPDATE totals SET admitted = admitted + 1 WHERE key_id=?", (key,))
                admitted, oldest = admitted + 1, min(oldest, now)
            headers = window_headers(
                principal,
                now,
                admitted=admitted,
                oldest=oldest if admitted else None,
                tokens=tokens,
                oldest_tokens=self._oldest_tokens(db, key, horizon) if tpm is not None else None,
                tokens_free_at=lambda: self._tokens_free_at(db, key, tpm or 0, tokens),
            )
            if over is not None:
                raise with_headers(over, headers)
            if held:
                db.execute(
                    "INSERT INTO held (key_id, pid, n) VALUES (?, ?, 1)"
                    " ON CONFLICT (key_id, pid) DO UPDATE SET n = n + 1",
                    (key, self.pid),
                )
        if held:
            ex.attributes[_HELD] = key
        if metered:
            ex.attributes[_METERED] = key
        return headers

    @staticmethod
    def _oldest_tokens(db: sqlite3.Connection, key: str, horizon: float) -> float | None:
        sql = "SELECT MIN(at) FROM tokens WHERE key_id=? AND at>?"
        first = db.execute(sql, (key, horizon)).fetchone()[0]
        return float(first) if first is not None else None

    @staticmethod
    def _window(
        db: sqlite3.Connection, key: str, horizon: float, metered: bool
    ) -> tuple[int, float, int, int]:
        """(admitted, oldest admission, tokens) in the window, after dropping what expired.

        Totals are kept up to date rather than counted, so the cost does not grow with the
        limit: expiry deletes only what left the window, in index order.
        """
        db.execute("INSERT OR IGNORE INTO totals (key_id) VALUES (?)", (key,))
        gone = db.execute("DELETE FROM admitted WHERE key_id=? AND at<=?", (key, horizon))
        if gone.rowcount:
            sql = "UPDATE totals SET admitted = admitted - ? WHERE key_id=?"
            db.execute(sql, (gone.rowcount, key))
        if metered:
            sql = "SELECT COALESCE(SUM(n), 0) FROM tokens WHERE key_id=? AND at<=?"
            expired = db.execute(sql, (key, horizon)).fetchone()[0]
            if expired:
                db.execute("DELETE FROM tokens WHERE key_id=? AND at<=?", (key, horizon))
                sql = "UPDATE totals SET tokens = tokens - ? WHERE key_id=?"
                db.execute(sql, (expired, key))
        admitted, tokens = db.execute(
            "SELECT admitted, tokens FROM totals WHERE key_id=?", (key,)
        ).fetchone()
        first = db.execute("SELECT MIN(at) FROM admitted WHERE key_id=?", (key,)).fetchone()[0]
        return admitted, first if first is not None else horizon + WINDOW_S, tokens, 0

    @staticmethod
    def _tokens_free_at(db: sqlite3.Connection, key: str, limit: int, total: int) -> float:
        rows = db.execute("SELECT at, n FROM tokens WHERE key_id=? ORDER BY at", (key,))
        last = 0.0
        for stamp, count in rows:
            total -= count
            last = stamp
            if total < limit:
                return float(stamp) + WINDOW_S
        return last + WINDOW_S if last else 0.0

    def record_tokens(self, key_id: str, tokens: int) -> None:
        if tokens <= 0:
            return
        with self._transaction() as db:
            sql = "INSERT INTO tokens (key_id, at, n) VALUES (?, ?, ?)"
            db.execute(sql, (key_id, self.clock(), tokens))
            db.execute("INSERT OR IGNORE INTO totals (key_id) VALUES (?)", (key_id,))
            sql = "UPDATE totals SET tokens = tokens + ? WHERE key_id=?"
            db.execute(sql, (tokens, key_id))

    def in_flight(self, key_id: str) -> int:
        with self._locked() as db:
            sql = "SELECT COALESCE(SUM(n), 0) FROM held WHERE key_id=?"
            return int(db.execute(sql, (key_id,)).fetchone()[0])

    def on_finish(self, ex: Exchange) -> None:
        held = ex.attributes.pop(_HELD, None)
        if held is not None:
            with self._transaction() as db:
                sql = "UPDATE held SET n = n - 1 WHERE key_id=? AND pid=?"
                db.execute(sql, (held, self.pid))
        metered = ex.attributes.pop(_METERED, None)
        if metered is not None:
            self.record_tokens(metered, (ex.tokens_in or 0) + (ex.tokens_out or 0))

    def close(self) -> None:
        self._db.close()
        os.close(self._lock)
