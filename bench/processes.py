"""Child processes: start them pinned to CPUs, wait until they answer, and always stop them.

Each child gets its own session (Ctrl-C in the terminal reaches only the bench, which then
stops its children in order) and, on Linux, a parent-death signal, so even a bench killed
with SIGKILL leaves nothing running. Affinity is set in the child before it execs, so every
thread it ever starts inherits it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pre_exec(cpus: frozenset[int] | None) -> Callable[[], None]:
    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if sys.platform == "linux":
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return setup


@dataclass(slots=True)
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def read_line(self, timeout: float) -> str | None:
        """One line of a piped stdout, or None when nothing came within `timeout`."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().decode().strip() if ready else None

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Children:
    """Owns every child started through it; leaving the `with` block stops them, newest first."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Child] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *_: object) -> None:
        while self.started:
            self.started.pop().stop()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        cpus: frozenset[int] | None = None,
        pipe_stdout: bool = False,
    ) -> Child:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else out,
                stderr=out,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_pre_exec(cpus),  # safe: the bench starts no threads
            )
        child = Child(name, proc, log)
        self.started.append(child)
        return child


def wait_http(child: Child, url: str, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200; fail fast, with the child's log, if the child dies."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        code = child.proc.poll()
        if code is not None or time.monotonic() > deadline:
            state = "timed out" if code is None else f"exited with {code}"
            raise RuntimeError(
                f"{child.name} did not come up at {url} ({state}):\n{child.log_tail()}"
            )
        time.sleep(0.05)


def raise_nofile() -> int:
    """Lift this process's open-file limit to the hard limit (children inherit it); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def memory_kib(pid: int) -> dict[str, int]:
    """Current and peak resident set size (VmRSS, VmHWM) from /proc, in KiB."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def family(pid: int) -> list[int]:
    """`pid` and its descendants (a gateway with `--workers N` forks N workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def family_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM summed over `pid` and its descendants (the sum of peaks for HWM)."""
    total: dict[str, int] = {}
    for member in family(pid):
        for key, value in memory_kib(member).items():
            total[key] = total.get(key, 0) + value
    return total


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def plan_cpus(pin: bool, gateway_cores: int = 1) -> dict[str, frozenset[int] | None]:
    """lmgate alone on one core; load generator (and the helpers) on the rest.

    With a third core the upstream gets its own, so it does not steal time from the client.
    `gateway_cores` > 1 (for `--workers N`) gives the gateway the first N cores, shared with
    the load generator and the upstream when the machine has no more.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pin or len(cpus) < 2:
        return {"lmgate": None, "load": None, "upstream": None}
    cores = min(max(1, gateway_cores), len(cpus))
    free = cpus[cores:] or cpus[1:]
    load, rest = free[0], free[1:]
    return {
        "lmgate": frozenset(cpus[:cores]),
        "load": frozenset({load}),
        "upstream": frozenset(rest) if rest else frozenset({load}),
    }
