"""SQLite under the data dir: WAL mode, numbered SQL migrations tracked in `user_version`.

Admin writes are rare and small, so they run in a worker thread behind one lock; the hot path
never touches the database (it reads in-memory state that writes keep current).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from importlib import resources
from pathlib import Path
from typing import Any

DB_NAME = "lmgate.sqlite3"


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("lmgate.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
    return sorted(found)


class Database:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = data_dir / DB_NAME
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self.path.chmod(0o600)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()

    def _migrate(self) -> None:
        current = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        for number, sql in _migrations():
            if number > current:
                self._conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._conn.execute(sql, params)

    def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run `statements` atomically."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                for sql, params in statements:
                    self._conn.execute(sql, params)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    async def atransaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        await asyncio.to_thread(self.transaction, statements)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
