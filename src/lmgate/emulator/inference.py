"""What every inference route does before generating: admission, fault injection, and
picking (or JIT-loading) the instance that serves the request.

Per-request test headers, honoured on every inference endpoint:
  x-emulator-token-delay: SECONDS   pace of streamed tokens (overrides --token-delay)
  x-emulator-delay: SECONDS         wait before answering at all (slow prompt processing)
  x-emulator-fail: 500              fail with an HTTP 500 error body
  x-emulator-fail: mid-stream       streams: an error frame halfway; others: HTTP 500
  x-emulator-fail: drop             streams: connection aborted halfway; others: HTTP 500
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from starlette.requests import Request

from lmgate.emulator.catalog import Instance, LoadResult
from lmgate.emulator.config import ModelType
from lmgate.emulator.replies import (
    EmulatorError,
    injected_failure,
    model_not_found,
    no_models_loaded,
)
from lmgate.emulator.state import EmulatorState
from lmgate.emulator.streaming import FailMode, Pacing

_WRONG_KIND = {"embedding": "Model is not embedding", "llm": "Model is not an LLM"}


BODY_SCOPE_KEY = "lmgate.emulator.body"


def state_of(request: Request) -> EmulatorState:
    return cast(EmulatorState, request.app.state.emulator)


def request_json(request: Request) -> dict[str, Any]:
    """The JSON object the front door already parsed; an empty body reads as `{}`."""
    body = request.scope.get(BODY_SCOPE_KEY)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise EmulatorError(400, "Request body must be a JSON object", plain=True)
    return body


@dataclass
class Prepared:
    """The serving instance plus per-request pacing, ready for a route to generate."""

    state: EmulatorState
    load: LoadResult
    pacing: Pacing
    stream: bool
    created: int

    @property
    def instance(self) -> Instance:
        return self.load.instance

    @property
    def load_seconds(self) -> float | None:
        """Seconds spent loading for this request, or None if it was already loaded."""
        return round(self.load.load_seconds, 3) if self.load.loaded_now else None


def _seconds(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


async def prepare(
    request: Request,
    body: Mapping[str, Any],
    *,
    kind: ModelType,
    model: Any,
    overrides: Mapping[str, Any] | None = None,
) -> Prepared:
    """Apply the test headers, then resolve the model; raises `EmulatorError` on failure."""
    state = state_of(request)
    headers = request.headers
    stream = body.get("stream") is True
    fail = headers.get("x-emulator-fail", "").strip().lower()
    if fail == "500" or (fail in ("mid-stream", "drop") and not stream):
        raise injected_failure()
    await asyncio.sleep(_seconds(headers.get("x-emulator-delay"), 0.0))
    modes = {"mid-stream": FailMode.MIDSTREAM, "drop": FailMode.DROP}
    pacing = Pacing(
        token_delay=_seconds(headers.get("x-emulator-token-delay"), state.config.token_delay),
        fail=modes.get(fail, FailMode.NONE),
    )
    name = model if isinstance(model, str) and model else None
    ttl = body.get("ttl")
    load = await resolve(
        state,
        name,
        kind=kind,
        ttl=float(ttl) if isinstance(ttl, int | float) and ttl > 0 else None,
        overrides=overrides,
    )
    return Prepared(state, load, pacing, stream, int(time.time()))


async def resolve(
    state: EmulatorState,
    name: str | None,
    *,
    kind: ModelType,
    ttl: float | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadResult:
    """Find the instance for `name` the way LM Studio does, JIT-loading when allowed.

    No name: the first loaded instance (of the right kind if there is one). A loaded
    instance id or model key: that instance. A downloaded model that is not loaded: loaded
    now if JIT is on. Anything else: `model_not_found`, or "No models loaded" when nothing is.
    """
    catalog = state.catalog
    loaded = catalog.loaded()
    if name is None:
        if not loaded:
            raise no_models_loaded()
        instance = next((i for i in loaded if i.spec.type == kind), loaded[0])
        result = LoadResult(instance, 0.0, loaded_now=False)
    elif (found := catalog.find_instance(name)) is not None:
        result = LoadResult(found, 0.0, loaded_now=False)
    elif not state.config.jit:
        if not loaded:
            raise no_models_loaded()
        raise model_not_found(name, [i.id for i in loaded])
    else:
        spec = catalog.find_spec(name)
        if spec is None:
            raise model_not_found(name, list(catalog.specs))
        if spec.type != kind:
            raise EmulatorError(400, _WRONG_KIND[kind], param="model")
        result = await catalog.jit_load(
            spec,
            delay=state.config.load_delay,
            ttl=ttl,
            overrides=overrides,
            evict_others=state.config.auto_evict,
        )
    if result.instance.spec.type != kind:
        raise EmulatorError(400, _WRONG_KIND[kind], param="model")
    result.instance.touch()
    return result
