"""Everything observability adds to a gateway, built in one place from the settings.

The gateway asks it for three lists: exchange observers, a proxy hook (usage, last in line),
and background loops (the batched usage writer, the config watch, LM Studio log tailing).
Routes read its parts for `/debug/*`, `/metrics` and `/admin/usage`.

With several workers each one has its own bus, figures and request tracker (each `/debug/*`
answer covers the worker that served it, named in its `worker` field), while Prometheus
series add up across workers (see `workers/metrics.py`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from lmgate.classify import is_proxied
from lmgate.exchange import Observer
from lmgate.hooks import ProxyHook
from lmgate.loading.lms_path import find_lms
from lmgate.observe.cardinality import ModelNames
from lmgate.observe.config_watch import ConfigWatch, model_state
from lmgate.observe.events import EventBus
from lmgate.observe.inference_events import InferenceEvents
from lmgate.observe.lms_telemetry import AnswerStats, LmsTelemetry
from lmgate.observe.lmstudio_logs import LmStudioLogTailer
from lmgate.observe.prometheus import PrometheusMetrics, StateCollector
from lmgate.observe.prompt_log import PromptLog, clean
from lmgate.observe.requestlog import RequestLog
from lmgate.observe.requests import RequestTracker
from lmgate.observe.stats import Stats
from lmgate.observe.usage_recorder import UsageRecorder
from lmgate.observe.usage_tap import UsageHook
from lmgate.observe.windows import Metrics
from lmgate.settings import Settings
from lmgate.store.db import Database
from lmgate.store.state import StateStore
from lmgate.upstream.sync import UpstreamWatcher
from lmgate.workers.metrics import StateMirror, forget_dead_workers
from lmgate.workers.slot import Worker

Loop = Callable[[], Coroutine[Any, Any, None]]
Gauge = tuple[str, str, str, float, dict[str, str]]


def _secrets(settings: Settings) -> list[str]:
    keys = [settings.admin_key, settings.metrics_key, settings.upstream_token, *settings.api_keys]
    keys += [u.token for u in settings.upstreams]
    return [k.get_secret_value() for k in keys if k is not None]


@dataclass(slots=True)
class Observability:
    bus: EventBus
    stats: Stats
    prometheus: PrometheusMetrics
    inference_events: InferenceEvents
    metrics: Metrics
    requests: RequestTracker
    config: ConfigWatch
    usage: UsageRecorder | None = None
    usage_hook: UsageHook | None = None
    lmstudio_logs: LmStudioLogTailer | None = None
    lms: LmsTelemetry | None = None
    watcher: UpstreamWatcher | None = None
    worker: Worker = field(default_factory=Worker)
    mirror: StateMirror | None = None
    started: float = field(default_factory=time.time)
    models: ModelNames = field(default_factory=ModelNames)

    @classmethod
    def build(
        cls, settings: Settings, db: Database, state: StateStore, worker: Worker | None = None
    ) -> Observability:
        worker = worker or Worker()
        bus = EventBus(history=settings.debug_history, queue_size=settings.debug_queue_size)
        prompts = None
        if settings.log_prompts:
            prompts = PromptLog(limit=settings.log_prompt_chars, secrets=_secrets(settings))
        models = ModelNames(settings.max_tracked_models)
        obs = cls(
            bus=bus,
            stats=Stats(),
            prometheus=PrometheusMetrics(multiprocess=worker.shared, models=models),
            inference_events=InferenceEvents(bus),
            metrics=Metrics(models=models),
            requests=RequestTracker(
                keep=settings.debug_completed_requests,
                cancellable=lambda ex: is_proxied(ex.path),
            ),
            config=ConfigWatch(bus),
            worker=worker,
            models=models,
        )
        models.known = obs.upstream_offers
        obs.config.watch("model_state", model_state(state))
        if settings.usage_accounting:
            obs.usage = UsageRecorder(db, flush_seconds=settings.usage_flush_seconds, models=models)
            obs.usage_hook = UsageHook(prompts)
        if settings.lmstudio_log_dir is not None:
            obs.lmstudio_logs = LmStudioLogTailer(
                settings.lmstudio_log_dir,
                bus,
                poll_seconds=settings.lmstudio_log_poll_seconds,
                clean_body=partial(
                    clean, limit=settings.log_prompt_chars, secrets=_secrets(settings)
                )
                if settings.log_prompts
                else None,
            )
        if settings.lms_telemetry and (lms := find_lms(settings)) is not None:
            obs.lms = LmsTelemetry(
                lms,
                bus,
                upstream=settings.upstream_url,
                clean=partial(clean, limit=settings.log_prompt_chars, secrets=_secrets(settings))
                if settings.log_prompts
                else None,
                fallback=obs.lmstudio_logs.run if obs.lmstudio_logs is not None else None,
            )
        if worker.shared:
            directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            if directory:
                forget_dead_workers(Path(directory))
            obs.mirror = StateMirror(obs.gauges, primary=lambda: worker.primary)
        else:
            obs.prometheus.registry.register(StateCollector(obs.gauges))
        return obs

    def observers(self) -> list[Observer]:
        """The tracker goes first: it marks the request's context for every later event."""
        found: list[Observer] = [
            self.requests,
            self.stats,
            self.metrics,
            self.prometheus,
            self.inference_events,
        ]
        if self.usage is not None:
            found.append(self.usage)
        if self.usage_hook is not None:
            found.append(AnswerStats(self.bus))
        return [*found, RequestLog()]

    def hooks(self) -> list[ProxyHook]:
        return [self.usage_hook] if self.usage_hook is not None else []

    def loops(self) -> list[Loop]:
        loops: list[Loop] = [self.config.run]
        if self.usage is not None:
            loops.append(self.usage.run)
        if self.lms is not None:  # the log files are its fallback
            loops.append(self.lms.run)
        elif self.lmstudio_logs is not None:
            loops.append(self.lmstudio_logs.run)
        if self.mirror is not None:
            loops.append(self._mirror_loop)
        return loops

    def _sync_mirror(self) -> None:
        if self.watcher is not None and self.watcher.caps.checked_at:
            self.prometheus.upstream_up.set(1 if self.watcher.caps.reachable else 0)
        if self.mirror is not None:
            self.mirror.sync()

    async def _mirror_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._sync_mirror()

    def close(self) -> None:
        """A stopping worker's live gauges (in flight, subscribers) stop counting."""
        if self.mirror is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def upstream_offers(self, model: str) -> bool:
        """Whether the upstream offered `model` when the model sync last looked."""
        return self.watcher is not None and self.watcher.find(model) is not None

    def upstream(self) -> dict[str, Any]:
        """Upstream health as the model sync loop last saw it."""
        watcher = self.watcher
        if watcher is None:
            return {"reachable": None}
        return watcher.caps.as_json() | {
            "syncedAt": watcher.synced_at,
            "lastSyncError": watcher.last_error,
            "loadedInstances": sorted(watcher.instances),
        }

    def gauges(self) -> Iterator[Gauge]:
        """State read at scrape time, for Prometheus."""
        bus = self.bus
        yield (
            "gauge",
            "lmgate_uptime_seconds",
            "Seconds since start.",
            time.time() - self.started,
            {},
        )
        yield (
            "gauge",
            "lmgate_debug_subscribers",
            "Open /debug/stream connections.",
            bus.subscriber_count,
            {},
        )
        for type_, count in sorted(bus.by_type.items()):
            yield ("counter", "lmgate_events", "Events published, by type.", count, {"type": type_})
        yield (
            "counter",
            "lmgate_events_dropped",
            "Events a slow subscriber missed.",
            bus.dropped,
            {},
        )
        yield (
            "counter",
            "lmgate_requests_cancelled",
            "Requests cancelled by an operator.",
            self.requests.cancelled,
            {},
        )
        if self.usage is not None:
            usage = self.usage
            yield (
                "gauge",
                "lmgate_usage_rows_pending",
                "Requests whose usage is not written yet.",
                usage.pending_requests,
                {},
            )
            yield (
                "counter",
                "lmgate_usage_rows_written",
                "Requests whose usage was written.",
                usage.written,
                {},
            )
            yield (
                "counter",
                "lmgate_usage_rows_dropped",
                "Requests whose usage was lost (too many pending rows).",
                usage.dropped,
                {},
            )
        if self.watcher is not None and self.watcher.caps.latency_ms is not None:
            yield (
                "gauge",
                "lmgate_upstream_latency_seconds",
                "Upstream probe latency.",
                self.watcher.caps.latency_ms / 1000.0,
                {},
            )
        if self.lmstudio_logs is not None:
            yield (
                "counter",
                "lmgate_lmstudio_log_entries",
                "LM Studio log entries read.",
                self.lmstudio_logs.entries,
                {},
            )

    def render_prometheus(self) -> bytes:
        """The exposition, with upstream health as the sync loop last saw it."""
        self._sync_mirror()
        return self.prometheus.render()

    def snapshot(self) -> dict[str, Any]:
        """The parts of `/debug/metrics` beyond the TypeScript edition's shape."""
        usage = self.usage
        return self.metrics.snapshot() | {
            "worker": self.worker.as_json(),
            "upstream": self.upstream(),
            "events": {
                "subscribers": self.bus.subscriber_count,
                "published": self.bus.published,
                "dropped": self.bus.dropped,
                "lastId": self.bus.last_id,
            },
            "usage": {
                "enabled": usage is not None,
                "pendingRows": usage.pending_requests if usage else 0,
                "writtenRows": usage.written if usage else 0,
                "droppedRows": usage.dropped if usage else 0,
            },
            "cancelled": self.requests.cancelled,
            "lmstudioLogs": (
                {
                    "file": str(self.lmstudio_logs.follower.path),
                    "entries": self.lmstudio_logs.entries,
                }
                if self.lmstudio_logs is not None
                else None
            ),
            "lmsTelemetry": self.lms.as_json() if self.lms is not None else None,
        }
