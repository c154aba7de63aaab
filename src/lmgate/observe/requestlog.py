"""Logging: structlog JSON lines on stdout (and optionally a size-rotated file), and the one
line per request, which never carries a key or a prompt.

The level filter is structlog's filtering logger: a call below the level returns at once,
before any formatting, so debug logging costs nothing when it is off. Python's own `logging`
(uvicorn, aiohttp) goes to stderr at the same level.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
import structlog

from lmgate.exchange import Exchange
from lmgate.observe.windows import ms


def _dumps(value: Any, **kw: Any) -> str:
    """JSON for log lines in orjson: a request line renders several times faster than with
    the standard library, which matters at one line per request."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, **kw).decode()


class JsonLines:
    """The sink structlog writes rendered lines to: stdout, plus a rotating file if asked."""

    def __init__(self, out: TextIO | None = None, file: logging.Handler | None = None) -> None:
        self.out = out  # None: whatever `sys.stdout` is at the time
        self.file = file

    def msg(self, message: str) -> None:
        out = self.out or sys.stdout
        out.write(message + "\n")
        out.flush()
        if self.file is not None:
            self.file.emit(logging.makeLogRecord({"msg": message}))

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _Output:
    """Where the request line goes, and whether it is wanted: `configure_logging` sets both."""

    sink = JsonLines()
    info = True  # the level is info or lower


_OUTPUT = _Output()


def rotating_file(path: Path, *, max_bytes: int, backups: int) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def configure_logging(
    level: str,
    *,
    file: Path | None = None,
    file_max_bytes: int = 10 << 20,
    file_backups: int = 5,
) -> None:
    """JSON lines through structlog at `level`; `file` adds a copy rotated at `file_max_bytes`."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    handler = rotating_file(file, max_bytes=file_max_bytes, backups=file_backups) if file else None
    sink = _OUTPUT.sink = JsonLines(sys.stdout, handler)
    _OUTPUT.info = numeric <= logging.INFO

    def factory(*_: Any) -> JsonLines:
        return sink

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )


class RequestLog:
    """The one line per request. Rendered here, straight to the log's sink, in the same shape
    as every other line: at one line per request, structlog's processor chain was the
    largest part of what logging cost the proxy."""

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        if not _OUTPUT.info:
            return
        line = {
            "request_id": ex.request_id,
            "client": ex.client,
            "key": ex.key_name,
            "method": ex.method,
            "path": ex.path,
            "endpoint": ex.endpoint,
            "model": ex.model,
            "status": ex.status,
            "latency_ms": ms(ex.latency_ms),
            "ttft_ms": ms(ex.ttft_ms),
            "tokens_in": ex.tokens_in,
            "tokens_out": ex.tokens_out,
            "tokens_estimated": ex.tokens_estimated or None,
            "streamed": ex.streamed,
            "error": ex.error,
            "event": "request",
            "level": "info",
            "timestamp": datetime.now(UTC),
        }
        _OUTPUT.sink.msg(orjson.dumps(line, option=orjson.OPT_UTC_Z).decode())
