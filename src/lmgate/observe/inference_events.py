"""Publishes `inference_start` / `inference_complete` (and `error`) for inference requests."""

from __future__ import annotations

from lmgate.exchange import Exchange
from lmgate.observe.events import EventBus


class InferenceEvents:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def on_start(self, ex: Exchange) -> None:
        pass  # the proxy publishes the start once it knows the model

    def started(self, ex: Exchange) -> None:
        self.bus.publish(
            "inference_start",
            requestId=ex.request_id,
            path=ex.path,
            model=ex.model,
            key=ex.key_name,
            streaming=ex.streamed,
        )

    def on_finish(self, ex: Exchange) -> None:
        if ex.endpoint is None:
            return
        self.bus.publish(
            "inference_complete",
            requestId=ex.request_id,
            path=ex.path,
            model=ex.model,
            key=ex.key_name,
            status=ex.status,
            streamed=ex.streamed,
            totalMs=round(ex.latency_ms, 3),
            error=ex.error,
        )
        if ex.failed:
            self.bus.publish(
                "error",
                requestId=ex.request_id,
                operation="inference",
                path=ex.path,
                message=ex.error or f"HTTP {ex.status}",
            )
