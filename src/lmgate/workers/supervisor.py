"""The parent of `lmgate serve --workers N`: a run directory, the handoff, uvicorn's supervisor.

The parent binds the socket once and uvicorn's `Multiprocess` starts N spawned workers on it,
restarts any that die, and on SIGTERM/SIGINT stops them all gracefully (each worker with its
own grace period, `shutdown.py`). The run directory (on tmpfs when there is one) is fresh for
every run and removed at the end: it holds the worker slot locks, the shared per-key limits
and the Prometheus multiprocess files, which must not outlive the run (stale counters would be
added to the new ones).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from lmgate.serving import server_options
from lmgate.settings import Settings
from lmgate.workers.handoff import ENV, Handoff

PROMETHEUS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Supervisor(Multiprocess):
    """uvicorn's supervisor, letting go of the listening socket before it stops the workers:
    each closes its own copy as its shutdown begins, and once none is left new connections
    are refused, rather than queued on a socket that no one will accept from again."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def make_run_dir() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    run_dir = Path(tempfile.mkdtemp(prefix="lmgate-run-", dir=base))  # 0700
    (run_dir / "prometheus").mkdir()
    return run_dir


def serve_workers(settings: Settings, sock: socket.socket | None = None) -> None:
    """`sock`: already bound by `lmgate serve` (so a port in use is reported before anything
    starts); bound here otherwise."""
    run_dir = make_run_dir()
    env = {ENV: Handoff(settings, run_dir).encode(), PROMETHEUS_ENV: str(run_dir / "prometheus")}
    os.environ.update(env)  # spawned workers inherit the environment
    try:
        config = uvicorn.Config(
            "lmgate.workers.entry:app",
            factory=True,
            workers=settings.workers,
            http="lmgate.workers.entry:WorkerProtocol",
            **server_options(settings),
        )
        sock = sock if sock is not None else config.bind_socket()
        try:
            Supervisor(config, sockets=[sock]).run()
        finally:
            sock.close()
    finally:
        for name in env:
            os.environ.pop(name, None)
        shutil.rmtree(run_dir, ignore_errors=True)
