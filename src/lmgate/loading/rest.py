"""Loading through LM Studio's REST v1 API (`/api/v1/models/load`, LM Studio 0.4+).

What was applied is read from the config LM Studio echoes (`echo_load_config`), never assumed
from what was sent: a field it loaded with another value, or left out of its echo, is reported
as not applied. `ttl` and `parallel` are not documented load fields; a build that refuses them
(`unrecognized_keys`) gets the load again without them, and they are reported as not applied.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from lmgate.errors import GatewayError
from lmgate.loading.fields import REST, asked_of, fields_of, needs
from lmgate.loading.surface import LoadSpec, Progress, SurfaceLoad
from lmgate.upstream.client import UpstreamClient, UpstreamRefused
from lmgate.upstream.load_config import REST_FIELDS, from_rest

UNLOAD_LIMIT_S = 60.0
_UNDOCUMENTED = ("ttl", "parallel")  # reported accepted by LM Studio, not in its docs
_NOT_ECHOED = frozenset({"ttl"})  # a timer, not part of the instance's config


class RestSurface:
    name = REST

    def __init__(
        self,
        client: UpstreamClient,
        offered: Callable[[], Awaitable[bool]],
        *,
        load_timeout: float,
    ) -> None:
        self.client = client
        self._offered = offered  # whether the upstream has REST v1 (from its capabilities)
        self.load_timeout = load_timeout
        self.why_not: str | None = None

    def fields(self) -> frozenset[str]:
        return fields_of(REST)

    async def available(self) -> bool:
        offered = await self._offered()
        self.why_not = None if offered else "the upstream has no REST v1 API (LM Studio 0.4+)"
        return offered

    async def load(self, spec: LoadSpec, progress: Progress) -> SurfaceLoad:
        asked = asked_of(spec)
        payload: dict[str, Any] = {}
        not_applied: dict[str, str] = {}
        for name, value in asked.items():
            wire = REST_FIELDS.get(name) or (name if name == "ttl" else None)
            if wire is None:
                not_applied[name] = f"{needs(name)}: LM Studio's REST load has no such field"
            else:
                payload[wire] = value
        started = time.monotonic()
        answer, refused = await self._post(spec.model, payload)
        for wire in refused:
            not_applied[wire] = "this LM Studio's REST load refuses it (unrecognized key)"
        echoed = answer.get("load_config")
        echo = from_rest(echoed) if isinstance(echoed, dict) else None
        applied: dict[str, Any] = {}
        for name, value in asked.items():
            if name in not_applied:
                continue
            if name in _NOT_ECHOED:
                applied[name] = value  # the strict endpoint took it
            elif echo is None:
                not_applied[name] = "LM Studio did not echo its load config to confirm it"
            elif name not in echo:
                not_applied[name] = "LM Studio's echoed load config has no such field"
            elif echo[name] != value:
                not_applied[name] = f"LM Studio loaded it with {echo[name]!r}"
            else:
                applied[name] = value
        seconds = answer.get("load_time_seconds")
        return SurfaceLoad(
            surface=REST,
            instance_id=str(answer.get("instance_id") or spec.model),
            seconds=float(seconds)
            if isinstance(seconds, int | float)
            else time.monotonic() - started,
            applied=applied,
            not_applied=not_applied,
            effective=echo,
        )

    async def _post(self, model: str, payload: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The load, and the undocumented fields it had to go without."""
        body = {"model": model, **payload, "echo_load_config": True}
        try:
            return await self._call(body), []
        except UpstreamRefused as exc:
            dropped = [k for k in _UNDOCUMENTED if k in payload]
            if exc.code != "unrecognized_keys" or not dropped:
                raise
            for key in dropped:
                body.pop(key)
            return await self._call(body), dropped

    async def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.client.call(
            "POST", "/api/v1/models/load", body, limit_s=self.load_timeout
        )
        if not isinstance(answer, dict):
            raise GatewayError("the upstream answered a load with something other than an object")
        return answer

    async def unload(self, instance_id: str) -> None:
        await self.client.call(
            "POST", "/api/v1/models/unload", {"instance_id": instance_id}, limit_s=UNLOAD_LIMIT_S
        )
