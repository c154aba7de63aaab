"""What uvicorn imports in each worker process: the app factory and the HTTP protocol.

uvicorn's supervisor needs import strings, not objects, so the guarded protocol is named here
as a plain class and gets its limits from the handoff when the factory runs (uvicorn creates
protocol instances only once the app is loaded, and they read the limits from the class).
"""

from __future__ import annotations

from pathlib import Path

from lmgate.app import LmgateApp, create_app
from lmgate.heap import settle_allocator
from lmgate.observe.requestlog import configure_logging
from lmgate.serving import settle_collector
from lmgate.shutdown import DrainingProtocol
from lmgate.workers.handoff import Handoff
from lmgate.workers.slot import Worker


class WorkerProtocol(DrainingProtocol):
    """The guarded httptools protocol (which starts the shutdown grace) under an importable
    name."""


def worker_log_file(path: Path | None, worker: Worker) -> Path | None:
    """One log file per worker (`lmgate-1.log`): size-based rotation is not safe to share."""
    if path is None or not worker.shared:
        return path
    return path.with_name(f"{path.stem}-{worker.index}{path.suffix}")


def app() -> LmgateApp:
    """Build this worker's app from the handoff, the same way `lmgate serve` builds one."""
    handoff = Handoff.take()
    settings = handoff.settings
    worker = Worker.claim(handoff.run_dir, settings.workers)
    configure_logging(
        settings.log_level,
        file=worker_log_file(settings.log_file, worker),
        file_max_bytes=settings.log_file_max_bytes,
        file_backups=settings.log_file_backups,
    )
    WorkerProtocol.configure(settings)  # connection counts and caps are this worker's own
    application = create_app(settings, worker=worker)
    settle_collector()  # as in single-process mode
    settle_allocator()
    return application
