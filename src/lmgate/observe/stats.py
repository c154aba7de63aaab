"""Running numbers for `/debug/status` and `/debug/metrics` (the TypeScript edition's shapes).

Updated from exchange hooks in O(1); percentiles come from a bounded sample of recent latencies.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections import deque
from typing import Any

from lmgate.exchange import Exchange
from lmgate.observe.windows import is_quiet, ms


def _summary(ex: Exchange) -> dict[str, Any]:
    return {
        "requestId": ex.request_id,
        "method": ex.method,
        "path": ex.path,
        "model": ex.model,
        "key": ex.key_name,
        "status": ex.status,
        "streamed": ex.streamed,
        "latencyMs": ms(ex.latency_ms),
        "timestamp": ex.started_at,
        "error": ex.error,
    }


class Stats:
    def __init__(self, *, sample: int = 1000) -> None:
        self.started = time.time()
        self.total_requests = 0
        self.total_errors = 0
        self.in_flight = 0
        self._sum_ms = 0.0
        self._min_ms: float | None = None
        self._max_ms = 0.0
        self._latencies: deque[float] = deque(maxlen=sample)
        self.recent: deque[Exchange] = deque(maxlen=50)  # summarised when asked for
        self.current_operation: str | None = None

    def on_start(self, ex: Exchange) -> None:
        if not is_quiet(ex):
            self.in_flight += 1

    def on_finish(self, ex: Exchange) -> None:
        if is_quiet(ex):
            return
        self.in_flight -= 1
        self.total_requests += 1
        if ex.failed:
            self.total_errors += 1
        ms = ex.latency_ms
        self._sum_ms += ms
        self._min_ms = ms if self._min_ms is None else min(self._min_ms, ms)
        self._max_ms = max(self._max_ms, ms)
        self._latencies.append(ms)
        self.recent.append(ex)

    def status(self, active_model: str | None) -> dict[str, Any]:
        return {
            "status": "busy" if self.in_flight or self.current_operation else "idle",
            "currentOperation": self.current_operation,
            "activeModel": active_model,
            "inFlight": self.in_flight,
            "recentRequests": [_summary(ex) for ex in list(self.recent)[-10:]],
            "totalRequests": self.total_requests,
            "totalErrors": self.total_errors,
        }

    def performance(self) -> dict[str, Any]:
        n = self.total_requests
        return {
            "totalRequests": n,
            "totalErrors": self.total_errors,
            "errorRate": (self.total_errors / n) if n else 0.0,
            "averageResponseTime": (self._sum_ms / n) if n else 0.0,
            "minResponseTime": self._min_ms or 0.0,
            "maxResponseTime": self._max_ms,
            "medianResponseTime": statistics.median(self._latencies) if self._latencies else 0.0,
        }

    def system(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "uptime": time.time() - self.started,
            "memory": {"maxRssBytes": usage.ru_maxrss * 1024, "rssBytes": _current_rss()},
        }


def _current_rss() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize()
