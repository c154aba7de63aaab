"""All mutable emulator state, one object per app, so several emulators can share a process."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmgate.emulator.catalog import Catalog
from lmgate.emulator.config import EmulatorConfig

if TYPE_CHECKING:
    from lmgate.emulator.downloads import DownloadJob

MAX_STORED_RESPONSES = 256


@dataclass
class StreamCounters:
    """Streams in flight and how finished ones ended (server-ended vs. client went away)."""

    active: int = 0
    completed: int = 0
    cancelled: int = 0


class EmulatorState:
    """Config, catalog, the request log and stream counters behind one app instance."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.catalog = Catalog(config.models, default_context_length=config.default_context_length)
        self.requests: deque[dict[str, Any]] = deque(maxlen=config.request_log_size)
        # Every load config that arrived over the SDK websocket, as received and decoded.
        self.load_configs: deque[dict[str, Any]] = deque(maxlen=config.request_log_size)
        self.streams = StreamCounters()
        self.stored_responses: dict[str, int] = {}
        self.downloads: dict[str, DownloadJob] = {}
        self.started_at = time.time()
        self.preload()

    def preload(self) -> None:
        """Start with the first LLM loaded, like an LM Studio that was left with a model up."""
        if not self.config.preload:
            return
        for spec in self.config.models:
            if spec.type == "llm":
                self.catalog.add(spec, count=False)
                return

    def reset(self) -> None:
        """Back to the startup state: initial instances, empty log, zeroed counters."""
        self.catalog = Catalog(
            self.config.models, default_context_length=self.config.default_context_length
        )
        self.requests.clear()
        self.load_configs.clear()
        self.streams = StreamCounters()
        self.stored_responses.clear()
        for job in self.downloads.values():
            if job.task is not None:
                job.task.cancel()
        self.downloads.clear()
        self.preload()

    def record(self, entry: dict[str, Any]) -> None:
        self.requests.append(entry)

    def remember_response(self, response_id: str, context_tokens: int) -> None:
        """Keep a stored response's token count so `previous_response_id` can extend it."""
        self.stored_responses[response_id] = context_tokens
        while len(self.stored_responses) > MAX_STORED_RESPONSES:
            del self.stored_responses[next(iter(self.stored_responses))]

    def generations(self) -> dict[str, Any]:
        """Answers being generated per model, the most at once, and unloads under an answer:
        how many, and the last ones (model, instance, answers then running, unix time)."""
        return {
            "generating": dict(self.catalog.generating),
            "peak_generating": dict(self.catalog.peak),
            "busy_unloads": self.catalog.busy_unloads,
            "busy_unloaded": list(self.catalog.busy_unloaded),
        }

    def stats(self) -> dict[str, int]:
        return {
            "active_streams": self.streams.active,
            "completed_streams": self.streams.completed,
            "cancelled_streams": self.streams.cancelled,
            "loads": self.catalog.loads,
            "unloads": self.catalog.unloads,
        }
