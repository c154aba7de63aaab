"""Running a command-line tool on the gateway's behalf: no shell, bounded output, a deadline.

The tool runs in its own process group, so a deadline ends it and anything it started, and
only those. Output is read as it comes (a full pipe would stall the tool) and only the last
`OUTPUT_LIMIT` bytes of each stream are kept, whatever the tool prints.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass

OUTPUT_LIMIT = 64 * 1024
_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    stdout: str
    stderr: str


class TimedOut(Exception):
    """The deadline passed; the process group was killed."""


async def _drain(
    stream: asyncio.StreamReader | None, kept: bytearray, on_text: Callable[[str], None] | None
) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_CHUNK):
        kept += chunk
        if len(kept) > OUTPUT_LIMIT:
            del kept[: len(kept) - OUTPUT_LIMIT]
        if on_text is not None:
            on_text(chunk.decode("utf-8", "replace"))


def _kill(proc: asyncio.subprocess.Process) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group started for it: it and its children
    with suppress(ProcessLookupError):
        proc.kill()


async def run(
    argv: Sequence[str],
    *,
    limit_s: float,
    env: dict[str, str] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Ran:
    """Run `argv` to its end within `limit_s` seconds. Raises `OSError` when it cannot be
    started (missing, not executable) and `TimedOut` when the deadline passed."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    out, err = bytearray(), bytearray()
    work = asyncio.gather(
        _drain(proc.stdout, out, on_text), _drain(proc.stderr, err, on_text), proc.wait()
    )
    try:
        await asyncio.wait_for(work, limit_s)
    except TimeoutError:
        _kill(proc)
        with suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        raise TimedOut(f"{os.path.basename(argv[0])} did not finish in {limit_s:g} s") from None
    except BaseException:  # cancelled (the client went away, the gateway stops): no orphan
        _kill(proc)
        raise
    return Ran(
        proc.returncode if proc.returncode is not None else -1,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
    )
