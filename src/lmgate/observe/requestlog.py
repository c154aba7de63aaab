"""Structured logs: one JSON line per request, never a key and never a prompt."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from lmgate.exchange import Exchange


def configure_logging(level: str) -> None:
    """JSON lines on stdout through structlog; the level filter costs nothing when off."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )


class RequestLog:
    def __init__(self) -> None:
        self.log: Any = structlog.get_logger("lmgate.request")

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        self.log.info(
            "request",
            request_id=ex.request_id,
            client=ex.client,
            key=ex.key_name,
            method=ex.method,
            path=ex.path,
            model=ex.model,
            status=ex.status,
            latency_ms=round(ex.latency_ms, 3),
            streamed=ex.streamed,
            error=ex.error,
        )
