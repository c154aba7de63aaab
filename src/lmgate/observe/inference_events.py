"""The events of an inference request: `inference_start`, then `inference_complete` (always),
plus `inference_failed` and the TypeScript edition's `error` when it did not succeed.

`inference_complete` carries the whole outcome: status, latency, time to first token (streams),
tokens in and out as the upstream counted them, output tokens per second, and the key's name.
"""

from __future__ import annotations

from typing import Any

from lmgate.exchange import Exchange
from lmgate.observe.events import EventBus
from lmgate.observe.windows import ms
from lmgate.pipeline.injection import INJECTED


def _about(ex: Exchange) -> dict[str, Any]:
    """What every inference event says of its request, first."""
    return {
        "requestId": ex.request_id,
        "path": ex.path,
        "endpoint": ex.endpoint,
        "model": ex.model,
        "key": ex.key_name,
        "client": ex.client,
    }


class InferenceEvents:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def on_start(self, ex: Exchange) -> None:
        pass  # the proxy publishes the start once it knows the model

    def started(self, ex: Exchange) -> None:
        data = _about(ex)
        data["streaming"] = ex.streamed
        data["injected"] = ex.attributes.get(INJECTED) or {}
        self.bus.emit("inference_start", data)

    def on_finish(self, ex: Exchange) -> None:
        if ex.endpoint is None:
            return
        latency = ms(ex.latency_ms)
        outcome = _about(ex) | {
            "status": ex.status,
            "streamed": ex.streamed,
            "totalMs": latency,
            "latencyMs": latency,
            "ttftMs": ms(ex.ttft_ms),
            "tokensIn": ex.tokens_in,
            "tokensOut": ex.tokens_out,
            "tokensEstimated": ex.tokens_estimated,
            "tokensPerSecond": ex.tokens_per_second,
            "error": ex.error,
        }
        self.bus.emit("inference_complete", outcome)
        if ex.failed:
            message = ex.error or f"HTTP {ex.status}"
            self.bus.emit(
                "inference_failed", outcome | {"message": message, "cancelled": ex.cancelled}
            )
            self.bus.publish(
                "error",
                requestId=ex.request_id,
                operation="inference",
                path=ex.path,
                model=ex.model,
                message=message,
            )
