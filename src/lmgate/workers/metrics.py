"""Prometheus figures that are read from a worker's state, made to add up across workers.

In one process `StateCollector` reads them at scrape time. With several workers a scrape
is served by one of them, so each worker instead mirrors its figures into multiprocess
metrics — counters by their increase, gauges by value — every second and right before a
scrape it serves; the other workers' share is at most a second old. What every worker sees
alike (LM Studio log lines, each tailed by every worker so every event stream has them) is
mirrored by the primary only, so it is not counted N times.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from prometheus_client import Counter, Gauge
from prometheus_client.multiprocess import mark_process_dead

from lmgate.observe.prometheus import Reading

GaugeMode = Literal["livesum", "livemax", "livemostrecent"]
GAUGE_MODES: dict[str, GaugeMode] = {
    "lmgate_uptime_seconds": "livemax",
    "lmgate_upstream_latency_seconds": "livemostrecent",
}
PRIMARY_ONLY = frozenset({"lmgate_lmstudio_log_entries"})


def forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges (in flight...) of workers that died without saying so."""
    for path in glob.glob(str(directory / "gauge_live*_*.db")):
        found = re.search(r"_(\d+)\.db$", path)
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


class StateMirror:
    def __init__(self, read: Reading, *, primary: Callable[[], bool]) -> None:
        self.read = read
        self.primary = primary
        self._metrics: dict[str, Any] = {}
        self._counted: dict[tuple[str, tuple[str, ...]], float] = {}

    def sync(self) -> None:
        for kind, name, text, value, labels in self.read():
            if name in PRIMARY_ONLY and not self.primary():
                continue
            names = tuple(sorted(labels))
            metric: Any = self._metrics.get(name)
            if metric is None:
                if kind == "counter":
                    metric = Counter(name, text, names, registry=None)
                else:
                    mode = GAUGE_MODES.get(name, "livesum")
                    metric = Gauge(name, text, names, registry=None, multiprocess_mode=mode)
                self._metrics[name] = metric
            values = tuple(labels[k] for k in names)
            child: Any = metric.labels(*values) if names else metric
            if kind == "counter":
                increase = value - self._counted.get((name, values), 0.0)
                if increase > 0:
                    child.inc(increase)
                    self._counted[name, values] = value
            else:
                child.set(value)
