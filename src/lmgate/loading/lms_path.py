"""Where LM Studio's `lms` command is, if this machine has one.

LM Studio installs `lms` into `~/.lmstudio/bin` and (after `lms bootstrap`) puts that folder on
PATH; a service started without the user's shell profile sees no such PATH, hence the second
place to look. `LMGATE_LMS_PATH` names it outright (`off`: never use it).
"""

from __future__ import annotations

from pathlib import Path

from lmgate.loading.lms import locate
from lmgate.settings import Settings


def find_lms(settings: Settings) -> Path | None:
    """The `lms` executable to run, or None when there is none (or it is turned off)."""
    return locate(settings.lms_path)
