"""`lmgate reset`: move a lost or damaged state database aside, so that lmgate starts afresh.

Nothing is deleted. The database and its `-wal`/`-shm` are renamed to
`lmgate.sqlite3.broken-<UTC time>` (restorable by renaming them back), a fresh database is made
in their place, and `keys.secret` stays: the old database, if it comes back, still has working
keys. What lived in the database (managed keys, the active model, profiles, usage) is gone
until then; keys from the settings (`LMGATE_ADMIN_KEY`, `LMGATE_API_KEYS`) work as before.
Stop the gateway first: a running one would keep writing to the file moved aside.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from lmgate.cli.serve import load_settings
from lmgate.store.db import DB_NAME, Database
from lmgate.store.integrity import KEYS_MARKER, RESET_NOTE, StateError, verify

_PARTS = ("", "-wal", "-shm")


def _aside_name(data_dir: Path) -> str:
    """`lmgate.sqlite3.broken-20260101T120000Z`, unused by any part of an earlier reset."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name, n = f"{DB_NAME}.broken-{stamp}", 1
    while any((data_dir / f"{name}{part}").exists() for part in _PARTS):
        n += 1
        name = f"{DB_NAME}.broken-{stamp}-{n}"
    return name


def move_aside(data_dir: Path) -> list[Path]:
    """Rename the database's files out of the way; the moved files, database first."""
    name = _aside_name(data_dir)
    moved = []
    for part in _PARTS:
        source = data_dir / f"{DB_NAME}{part}"
        if source.exists() or source.is_symlink():
            target = data_dir / f"{name}{part}"
            source.rename(target)
            moved.append(target)
    (data_dir / KEYS_MARKER).unlink(missing_ok=True)  # its keys went with the database
    return moved


def reset(
    data_dir: Annotated[
        Path | None, typer.Option(help="State directory [LMGATE_DATA_DIR, config, per-user].")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file (LMGATE_CONFIG).")] = None,
    force: Annotated[
        bool, typer.Option(help="Move the database aside even though it is sound.")
    ] = False,
) -> None:
    """Move a lost or damaged state database aside and start with a fresh one (keys are gone)."""
    data = load_settings(data_dir=data_dir, config=config).data_dir.absolute()
    try:
        verify(data)
    except StateError as exc:
        typer.echo(f"lmgate: {exc}", err=True)
    else:
        if not force:
            state = "is sound" if (data / DB_NAME).exists() else "holds no state yet"
            typer.echo(
                f"lmgate: the state in {data} {state}: nothing to reset. `lmgate reset --force` "
                "moves it aside anyway (managed keys, active model, profiles and usage with it).",
                err=True,
            )
            raise typer.Exit(1)
    try:
        moved = move_aside(data)
        Database(data).close()
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        old = f"kept as {moved[0]}" if moved else "was missing"
        note = data / RESET_NOTE
        note.write_text(f"the state was reset on {when} (the old database {old})\n")
        note.chmod(0o600)
    except (OSError, StateError) as exc:
        typer.echo(f"lmgate: the reset is not complete ({exc}); run it again", err=True)
        raise typer.Exit(1) from exc
    for path in moved:
        typer.echo(f"Moved aside: {path}")
    quoted = shlex.quote(str(data))
    typer.echo(
        f"Created a fresh state database: {data / DB_NAME}.\n"
        "Managed keys are gone, as are the active model, model profiles and usage history; "
        "keys set in LMGATE_ADMIN_KEY / LMGATE_API_KEYS still work.\n"
        f"Create new keys with: lmgate keys create --name NAME --data-dir {quoted}"
    )
    if moved:
        typer.echo(f"To undo, stop lmgate and rename the moved files back to {DB_NAME}[-wal|-shm].")
