"""What the upstream offers, found out without disturbing it.

LM Studio answers unknown paths with HTTP 200 and an `error` body, so each probe treats such
a body as "not offered". The result decides whether model management is real (REST v1), read
only (v0), or an honest fallback (a plain OpenAI-compatible server such as llama.cpp).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from lmgate.upstream.client import UpstreamClient


@dataclass(frozen=True, slots=True)
class Capabilities:
    reachable: bool = False
    lmstudio: bool = False  # answers /lmstudio-greeting
    native_v1: bool = False  # /api/v1/models: list, load, unload (LM Studio 0.4+)
    native_v0: bool = False  # /api/v0/models: list with state (LM Studio 0.3.6+)
    openai: bool = False  # /v1/models
    ollama: bool = False  # /api/version and /api/tags (Ollama's native API)
    llamacpp: bool = False  # /props (llama.cpp's server)
    slots: int | None = None  # llama.cpp's `total_slots`
    auth_required: bool = False
    latency_ms: float | None = None
    last_error: str | None = None
    checked_at: float = 0.0

    @property
    def model_management(self) -> bool:
        return self.native_v1

    @property
    def kind(self) -> str:
        if not self.reachable:
            return "unreachable"
        if self.native_v1:
            return "lmstudio-0.4+"
        if self.native_v0:
            return "lmstudio-0.3"
        if self.ollama:
            return "ollama"
        if self.llamacpp:
            return "llama.cpp"
        return "openai-compatible" if self.openai else "unknown"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reachable": self.reachable,
            "capabilities": {
                "lmstudio": self.lmstudio,
                "nativeV1": self.native_v1,
                "nativeV0": self.native_v0,
                "openai": self.openai,
                "ollama": self.ollama,
                "llamaCpp": self.llamacpp,
                "modelManagement": self.model_management,
                "authRequired": self.auth_required,
            },
            "serverSlots": self.slots,
            "latencyMs": round(self.latency_ms, 3) if self.latency_ms is not None else None,
            "lastError": self.last_error,
            "checkedAt": self.checked_at,
        }


def _listing(body: Any, key: str) -> bool:
    return isinstance(body, dict) and isinstance(body.get(key), list)


async def detect(client: UpstreamClient, *, limit_s: float = 5.0) -> Capabilities:
    """Probe the four surfaces at once (all read-only GETs)."""
    greeting, v1, v0, openai = await asyncio.gather(
        client.probe("/lmstudio-greeting", limit_s=limit_s),
        client.probe("/api/v1/models", limit_s=limit_s),
        client.probe("/api/v0/models", limit_s=limit_s),
        client.probe("/v1/models", limit_s=limit_s),
    )
    probes = (greeting, v1, v0, openai)
    reachable = any(p.status != 0 for p in probes)
    errors = [p.error for p in (openai, v1, v0) if p.error]
    lmstudio = (
        greeting.ok and isinstance(greeting.body, dict) and bool(greeting.body.get("lmstudio"))
    )
    ollama = llamacpp = False
    slots = None
    if reachable and not lmstudio and not v1.ok and not v0.ok:  # another kind of server
        version, props = await asyncio.gather(
            client.probe("/api/version", limit_s=limit_s), client.probe("/props", limit_s=limit_s)
        )
        ollama = version.ok and isinstance(version.body, dict) and "version" in version.body
        llamacpp = props.ok and isinstance(props.body, dict) and "total_slots" in props.body
        if llamacpp and isinstance(props.body, dict):
            total = props.body.get("total_slots")
            slots = total if isinstance(total, int) and total > 0 else None
    return Capabilities(
        reachable=reachable,
        lmstudio=lmstudio,
        native_v1=v1.ok and _listing(v1.body, "models"),
        native_v0=v0.ok and _listing(v0.body, "data"),
        openai=openai.ok and _listing(openai.body, "data"),
        ollama=ollama,
        llamacpp=llamacpp,
        slots=slots,
        auth_required=any(p.status == 401 for p in probes),
        latency_ms=openai.latency_ms if openai.status else None,
        last_error=None if openai.ok else (errors[0] if errors else "no answer"),
        checked_at=time.time(),
    )
