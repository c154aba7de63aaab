"""Where LM Studio's `lms` command is, if this machine has one.

LM Studio installs `lms` into `~/.lmstudio/bin` and (after `lms bootstrap`) puts that folder on
PATH; a service started without the user's shell profile sees no such PATH, hence the second
place to look. `LMGATE_LMS_PATH` names it outright (`off`: never use it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lmgate.settings import Settings

OFF = frozenset({"off", "none", "false", "no"})


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_lms(settings: Settings) -> Path | None:
    """The `lms` executable to run, or None when there is none (or it is turned off)."""
    given = settings.lms_path
    if given is not None:
        if str(given).strip().lower() in OFF:
            return None
        path = given.expanduser()
        if _runnable(path):
            return path
        found = shutil.which(str(given))  # a bare name, looked up on PATH
        return Path(found) if found else None
    found = shutil.which("lms")
    if found:
        return Path(found)
    home = Path.home() / ".lmstudio" / "bin"
    for name in ("lms", "lms.exe"):
        if _runnable(home / name):
            return home / name
    return None
