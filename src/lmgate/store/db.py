"""SQLite under the data dir: WAL mode, numbered SQL migrations tracked in `user_version`.

Admin writes are rare and small, so they run in a worker thread behind one lock; the hot path
never touches the database (it reads in-memory state that writes keep current). Opening it
refuses lost or damaged state (`integrity`) instead of starting afresh over it; a write that
fails leaves no transaction open, and `storage_error` says what the failure means to a client.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from lmgate.errors import GatewayError, InsufficientStorage, StorageUnavailable
from lmgate.store import integrity
from lmgate.store.integrity import DB_FILE, open_failure, primary_code

DB_NAME = DB_FILE
PATH_NOTE = "state database: "


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
        integrity.before_open(self.path, strict=False)
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise open_failure(self.path, exc) from exc
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        try:
            self.path.chmod(0o600)
            with self._lock:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA busy_timeout=5000")
                self._migrate()
                integrity.match_keys(self._conn, self.path)
        except sqlite3.Error as exc:
            self._conn.close()
            raise open_failure(self.path, exc) from exc
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        current = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        for number, sql in _migrations():
            if number > current:
                try:
                    self._conn.executescript(
                        f"BEGIN;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;"
                    )
                except sqlite3.Error as exc:
                    self._rollback()
                    raise open_failure(self.path, exc, f"migration {number} failed") from exc

    def _rollback(self) -> None:
        """Leave no transaction open after a failure (a full disk may fail the COMMIT itself)."""
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back on its own

    def _failed(self, exc: BaseException) -> None:
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            exc.add_note(f"{PATH_NOTE}{self.path}")  # for a command line's one-line message

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, params).fetchall())
            except BaseException as exc:
                self._failed(exc)
                raise

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self._lock:
            try:
                self._conn.execute(sql, params)
            except BaseException as exc:
                self._failed(exc)
                raise

    def transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run `statements` atomically: all of them are written, or none."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                for sql, params in statements:
                    self._conn.execute(sql, params)
                self._conn.execute("COMMIT")
            except BaseException as exc:
                self._failed(exc)
                raise

    async def atransaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        await asyncio.to_thread(self.transaction, statements)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_FULL = {sqlite3.SQLITE_FULL: "storage_full", sqlite3.SQLITE_IOERR: "storage_io_error"}
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def failed_path(exc: sqlite3.Error) -> Path | None:
    """The database a failed call of `Database` was about."""
    notes = [n for n in getattr(exc, "__notes__", ()) if n.startswith(PATH_NOTE)]
    return Path(notes[0].removeprefix(PATH_NOTE)) if notes else None


def storage_error(exc: sqlite3.Error, path: Path) -> GatewayError:
    """What a failed read or write of the database at `path` answers: 507 when the disk is full
    or failing, 503 when the database cannot be used now; a plain 500 is for lmgate's bugs."""
    code = primary_code(exc)
    if code in _FULL:
        return InsufficientStorage(
            f"lmgate could not save this change: the disk holding its data dir {path.parent} is "
            f"full or failing ({exc}). Nothing was saved; free some space there and try again.",
            code=_FULL[code],
        )
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError
    ):
        retry = {"Retry-After": "1"} if code in _BUSY else None
        return StorageUnavailable(
            f"lmgate cannot use its state database {path} right now ({exc}); nothing was saved.",
            headers=retry,
        )
    return GatewayError(f"internal error in the state database: {exc}")
