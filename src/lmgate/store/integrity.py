"""Lost or damaged state is refused loudly at start, never papered over with a fresh database.

SQLite makes a fresh, empty database wherever the old one is missing or empty; lmgate would
then start with no managed keys, and on loopback with no key in the settings, with auth off,
without a word. So before the database is opened the data dir is searched for evidence that it
was in use: `keys.issued`, written once the first managed key is stored (and whenever keys are
found without it), and, for the full check `verify` that `serve`, `keys` and `doctor` run,
`keys.secret` (created on first use, after the database) and a leftover `-wal`. With evidence, a
missing or empty database is refused, as is a database that lost its keys. A file that is not a
sound lmgate database is refused always. Each refusal is one message naming the file and the
way out: restore it, or `lmgate reset`, which moves it aside.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import stat
import time
from pathlib import Path

import structlog

DB_FILE = "lmgate.sqlite3"  # `db.DB_NAME`; spelled here so the database can call this module
SECRET_FILE = "keys.secret"  # `keys.SECRET_FILE`
KEYS_MARKER = "keys.issued"
RESET_NOTE = "state.reset"
_MAGIC = b"SQLite format 3\x00"
# Tables each schema version has, and which of them must hold their single row.
_TABLES = {1: ("active_model", "model_profiles"), 2: ("api_keys",), 3: ("usage_minutes",)}
_SINGLE_ROWS = {1: "active_model", 2: "api_keys_generation"}
_SPACE = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}
_ACCESS = {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY}
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}

log = structlog.get_logger("lmgate.state")


class StateError(Exception):
    """The state in the data dir cannot be used as it is; the message says why and what to do."""


def reset_command(data_dir: Path) -> str:
    return f"lmgate reset --data-dir {shlex.quote(str(data_dir))}"


def damaged(path: Path, problem: str) -> StateError:
    path = path.absolute()
    return StateError(
        f"the state database {path} {problem}. Restore it from a backup, or run: "
        f"{reset_command(path.parent)} (moves it aside; its managed keys are then gone)"
    )


def primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def open_failure(path: Path, exc: sqlite3.Error, doing: str = "") -> StateError:
    """Why `path` cannot be used: no space, no access and busy are not damage."""
    path = path.absolute()
    code, what = primary_code(exc), f"{doing}: {exc}" if doing else str(exc)
    if code in _SPACE:
        return StateError(
            f"cannot use the state database {path} ({what}): free some space in {path.parent} "
            "(or repair the disk) and try again"
        )
    if code in _ACCESS:
        return StateError(
            f"cannot open the state database {path} ({what}): this user must own "
            f"{path.parent} and be allowed to write to it"
        )
    if code in _BUSY:
        return StateError(f"the state database {path} is locked by another process ({what})")
    return damaged(path, f"is damaged ({what})")


def evidence(data_dir: Path, *, strict: bool) -> tuple[str, str] | None:
    """What shows that `data_dir` held state before, and what a fresh database would lose;
    None for a fresh data dir."""
    if (data_dir / KEYS_MARKER).exists():
        return "managed keys were created in this data dir", "them, and auth with them"
    if not strict:
        return None
    for name in (SECRET_FILE, f"{DB_FILE}-wal"):
        if (data_dir / name).exists():
            return f"this data dir was in use ({name} is there)", "its keys and model state"
    return None


def before_open(path: Path, *, strict: bool) -> None:
    """Refuse to let SQLite open `path` over lost state, or open what is not a database."""
    try:
        info: os.stat_result | None = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise StateError(f"cannot read the state database {path}: {exc.strerror}") from exc
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise damaged(path, "is not a regular file")
    if info is None or info.st_size == 0:
        found = evidence(path.parent, strict=strict)
        if found is not None:
            state = "is missing" if info is None else "is empty (0 bytes)"
            why, loss = found
            raise damaged(path, f"{state}, but {why}: a fresh database would silently drop {loss}")
        return
    try:
        with path.open("rb") as file:
            header = file.read(len(_MAGIC))
    except OSError as exc:
        raise StateError(f"cannot read the state database {path}: {exc.strerror}") from exc
    if header != _MAGIC:
        raise damaged(path, "is not a SQLite database (its header is wrong)")


def _has_keys(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM api_keys)").fetchone()[0])


def match_keys(conn: sqlite3.Connection, path: Path) -> None:
    """Keys and their evidence must agree: leave the evidence, or refuse a database without
    the keys it had (replaced by an older copy, or emptied)."""
    marker = path.parent.absolute() / KEYS_MARKER
    if _has_keys(conn):
        if not marker.exists():
            remember_keys(path.parent)
    elif marker.exists():
        raise damaged(
            path,
            f"holds no managed keys, but keys were created in this data dir ({marker} says so): "
            "it was replaced or emptied",
        )


def _check_schema(conn: sqlite3.Connection, path: Path, *, strict: bool) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == 0:
        found = evidence(path.parent, strict=strict)
        if found is not None:
            raise damaged(path, f"holds no lmgate state (schema version 0), but {found[0]}")
        return
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for since, names in _TABLES.items():
        missing = [n for n in names if n not in tables] if version >= since else []
        if missing:
            raise damaged(path, f"lacks its table {missing[0]} (schema version {version})")
    for since, name in _SINGLE_ROWS.items():
        if version >= since and conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] != 1:
            raise damaged(path, f"has lost the row of its table {name}")
    if version >= 2:
        match_keys(conn, path)


def _check_secret(data_dir: Path, path: Path) -> None:
    data_dir = data_dir.absolute()
    secret = data_dir / SECRET_FILE
    try:
        size = secret.stat().st_size
    except FileNotFoundError:
        if (data_dir / KEYS_MARKER).exists():
            raise StateError(
                f"{secret} is missing, but managed keys were created in this data dir: without "
                "it none of them can be checked. Restore it from a backup, or run: "
                f"{reset_command(data_dir)} (moves {path.name} aside; its keys are then gone)"
            ) from None
        return
    if size < 32:
        raise StateError(
            f"{secret} is damaged (shorter than 32 bytes). Restore it from a backup, or move "
            f"it aside together with {path.name}: {reset_command(data_dir)}"
        )


def verify(data_dir: Path) -> list[str]:
    """The full check before `serve`, `keys` and `doctor` use the data dir; it changes nothing
    in the database (it may leave the keys marker, see `match_keys`).

    Raises StateError; returns notes worth showing (a reset whose keys are not made again yet).
    """
    if not data_dir.exists():
        return []
    path = data_dir / DB_FILE
    before_open(path, strict=True)
    if path.exists() and path.stat().st_size > 0:
        try:
            conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise open_failure(path, exc) from exc
        try:
            conn.execute("PRAGMA query_only=1")
            found = [" ".join(row[0].split()) for row in conn.execute("PRAGMA quick_check(3)")]
            if found != ["ok"]:
                raise damaged(path, f"fails SQLite's integrity check ({'; '.join(found)})")
            _check_schema(conn, path, strict=True)
        except sqlite3.Error as exc:
            raise open_failure(path, exc) from exc
        finally:
            conn.close()
    _check_secret(data_dir, path)
    return reset_notes(data_dir)


def remember_keys(data_dir: Path) -> None:
    """Leave evidence that managed keys exist. Best effort: a failure is logged, and mended at
    the next open of the database, which writes the marker whenever keys exist without it."""
    marker = data_dir / KEYS_MARKER
    try:
        if not marker.exists():
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(
                    f"Managed API keys were created in this data dir ({time.ctime()}). lmgate "
                    f"refuses to start while {DB_FILE} is missing or has lost them: see "
                    "`lmgate reset --help`.\n"
                )
    except FileExistsError:
        pass
    except OSError as exc:
        log.warning("keys_marker_unwritten", path=str(marker), error=str(exc))
    forget_reset(data_dir)


def forget_reset(data_dir: Path) -> None:
    """The reset was told (at a start) or is moot (keys were made again)."""
    try:
        (data_dir / RESET_NOTE).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("reset_note_kept", error=str(exc))


def reset_notes(data_dir: Path) -> list[str]:
    """What `lmgate reset` left to say at the next start."""
    try:
        text = (data_dir / RESET_NOTE).read_text("utf-8", errors="replace")
    except OSError:
        return []
    first = text.strip().splitlines()[0][:500] if text.strip() else "the state was reset"
    return [
        f"{first}: the managed keys made before are gone; make new ones with: lmgate keys "
        f"create --name NAME --data-dir {shlex.quote(str(data_dir))}"
    ]
