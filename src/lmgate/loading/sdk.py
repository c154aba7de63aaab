"""Loading through LM Studio's Python SDK: the websocket surface that reaches every load
setting (GPU offload and split, RoPE, KV-cache quantization, mmap, seed, identifier…).

The SDK's async client runs on the gateway's own event loop; a client is opened per
operation (loads are rare, and a fresh connection survives LM Studio restarts). It opens
only the namespaces loading needs. SDK 1.5.0 takes no API token: its handshake sends an
identifier and passkey, which for an LM Studio token `sk-lm-<8>:<20>` are the token's two
halves (what SDK 1.6 does), so the client's auth message is built from
`LMGATE_UPSTREAM_TOKEN` here. What was applied is read back from LM Studio
(`getLoadConfig`) after the load, never assumed.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import lmstudio
from lmstudio.async_api import (
    _AsyncSessionEmbedding,
    _AsyncSessionLlm,
    _AsyncSessionSystem,
)

from lmgate.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from lmgate.loading import sdk_limits
from lmgate.loading.fields import SDK, fields_of, nest
from lmgate.loading.surface import LoadSpec, Progress, SurfaceLoad
from lmgate.settings import Settings

Domain = Literal["llm", "embedding"]
sdk_limits.install()

# Gateway field (dotted) → SDK load config field (dotted), for LLMs.
SDK_NAMES: dict[str, str] = {
    "contextLength": "contextLength",
    "gpu.ratio": "gpu.ratio",
    "gpu.mainGpu": "gpu.mainGpu",
    "gpu.splitStrategy": "gpu.splitStrategy",
    "gpu.disabledGpus": "gpu.disabledGpus",
    "ropeFrequencyBase": "ropeFrequencyBase",
    "ropeFrequencyScale": "ropeFrequencyScale",
    "flashAttention": "flashAttention",
    "evalBatchSize": "evalBatchSize",
    "numExperts": "numExperts",
    "offloadKvCacheToGpu": "offloadKVCacheToGpu",
    "kvCacheQuantK": "llamaKCacheQuantizationType",
    "kvCacheQuantV": "llamaVCacheQuantizationType",
    "keepModelInMemory": "keepModelInMemory",
    "tryMmap": "tryMmap",
    "useFp16ForKVCache": "useFp16ForKVCache",
    "seed": "seed",
}
GATEWAY_NAMES = {sdk: gateway for gateway, sdk in SDK_NAMES.items()}
EMBEDDING_FIELDS = frozenset(
    {
        "contextLength",
        "gpu.ratio",
        "gpu.mainGpu",
        "gpu.splitStrategy",
        "gpu.disabledGpus",
        "ropeFrequencyBase",
        "ropeFrequencyScale",
        "keepModelInMemory",
        "tryMmap",
    }
)
NOT_SDK = {
    "gpu.layers": "LM Studio's SDK takes a GPU offload ratio, not a layer count",
    "parallel": "LM Studio's Python SDK has no setting for parallel predictions",
    "cpuThreads": "CPU threads are a prediction setting in LM Studio, not a load setting",
}
_TOKEN = re.compile(r"^sk-lm-(?P<identifier>[A-Za-z0-9]{8}):(?P<passkey>[A-Za-z0-9]{20})$")
_MISSING_CODES = frozenset(
    {"generic.pathNotFound", "generic.identifierNotFound", "generic.noModelMatchingQuery"}
)


SYSTEM = (_AsyncSessionSystem,)
MODELS = (_AsyncSessionLlm, _AsyncSessionEmbedding)
Sessions = tuple[type[_AsyncSessionSystem | _AsyncSessionLlm | _AsyncSessionEmbedding], ...]


@functools.cache
def _probe_tls() -> ssl.SSLContext:
    """One TLS context for every greeting probe: building one per client is most of the cost
    of opening a client (the probe itself is plain http)."""
    return ssl.create_default_context()


class _Client(lmstudio.AsyncClient):
    """The SDK's async client, opening only the namespaces an operation needs (each is a
    websocket), and authenticating with the given handshake when there is one."""

    def __init__(
        self, api_host: str, auth: dict[str, Any] | None, sessions: Sessions = SYSTEM
    ) -> None:
        self._ALL_SESSIONS = sessions
        self._lmgate_auth = auth  # read by _create_auth_message during __init__
        super().__init__(api_host)

    @staticmethod
    async def _query_probe_url(url: str) -> httpx.Response:
        async with httpx.AsyncClient(verify=_probe_tls()) as client:
            return await client.get(url, timeout=1)

    def _create_auth_message(self, *args: Any) -> dict[str, Any]:
        if self._lmgate_auth is not None:
            return dict(self._lmgate_auth)
        return dict(super()._create_auth_message(*args))


def auth_message(token: str) -> dict[str, Any] | None:
    """The SDK handshake an LM Studio API token stands for, or None if it is not one."""
    match = _TOKEN.match(token.strip())
    if match is None:
        return None
    return dict(lmstudio.AsyncClient._format_auth_message(match["identifier"], match["passkey"]))


def api_host(upstream_url: str) -> tuple[str | None, str | None]:
    """`host:port` for the SDK, or None and why the URL cannot be reached by it."""
    parts = urlsplit(upstream_url)
    if parts.scheme != "http":
        return None, "the SDK (1.5) speaks only plain http/ws to LM Studio"
    if parts.path not in ("", "/"):
        return None, "the SDK cannot reach LM Studio under a path prefix"
    try:
        port = parts.port or 80
    except ValueError:
        return None, "the upstream URL has an invalid port"
    host = parts.hostname or ""
    if not host:
        return None, "the upstream URL has no host"
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), None


def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """Gateway config with nested objects as dotted names (`gpu.ratio`)."""
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, Mapping):
            for inner, item in value.items():
                flat[f"{name}.{inner}"] = item
        else:
            flat[name] = value
    return flat


def translate(
    config: Mapping[str, Any], domain: Domain
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(SDK load config, the gateway fields sent, the gateway fields not sent and why)."""
    sent: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for name, value in flatten(config).items():
        if name in NOT_SDK:
            refused[name] = NOT_SDK[name]
        elif name not in SDK_NAMES:
            refused[name] = "not a load setting lmgate knows"
        elif domain == "embedding" and name not in EMBEDDING_FIELDS:
            refused[name] = "not a load setting of embedding models"
        else:
            sent[name] = value
    sdk = nest({SDK_NAMES[name]: value for name, value in sent.items()})
    return sdk, sent, refused


def _same(name: str, wanted: Any, got: Any) -> bool:
    if name == "gpu.ratio" and wanted in ("max", "off"):
        wanted = 1.0 if wanted == "max" else 0.0
    numbers = (int, float)
    if isinstance(wanted, numbers) and isinstance(got, numbers) and not isinstance(wanted, bool):
        return not isinstance(got, bool) and math.isclose(wanted, got, rel_tol=1e-9)
    if isinstance(wanted, list | tuple) and isinstance(got, list | tuple):
        return list(wanted) == list(got)
    return bool(wanted == got)


def compare(
    sent: Mapping[str, Any], reported: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """(applied, not applied and why, effective) from what LM Studio reports (SDK names)."""
    effective = {GATEWAY_NAMES.get(name, name): value for name, value in flatten(reported).items()}
    applied: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for name, wanted in sent.items():
        if name not in effective:
            missing[name] = "LM Studio does not report it in the instance's load config"
        elif _same(name, wanted, effective[name]):
            applied[name] = effective[name]
        else:
            missing[name] = f"LM Studio applied {effective[name]!r} instead"
    return applied, missing, effective


def _display_code(exc: lmstudio.LMStudioServerError) -> str | None:
    details = exc.server_error
    display = details.display_data if details is not None else None
    code = display.get("code") if isinstance(display, dict) else None
    return code if isinstance(code, str) else None


def _server_text(exc: lmstudio.LMStudioServerError) -> str:
    details = exc.server_error
    if details is None:
        return str(exc)
    parts = [str(p) for p in (details.title, details.cause) if p]
    return ": ".join(parts) or str(exc)


def gateway_error(exc: BaseException, doing: str) -> GatewayError:
    """The gateway's error for an SDK failure while `doing` something."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"LM Studio did not finish in time while {doing}")
    if isinstance(exc, lmstudio.LMStudioServerError):
        text = _server_text(exc)
        if str(exc).startswith("Authentication failed"):
            return UpstreamError(
                f"LM Studio refused the SDK's handshake ({text}); check LMGATE_UPSTREAM_TOKEN",
                code="upstream_auth_failed",
            )
        if isinstance(exc, lmstudio.LMStudioModelNotFoundError) or _display_code(exc) in (
            _MISSING_CODES
        ):
            return NotFound(
                f"LM Studio has no such model while {doing}: {text}", code="model_not_found"
            )
        return UpstreamError(f"LM Studio failed while {doing}: {text}")
    if isinstance(exc, lmstudio.LMStudioWebsocketError):
        return UpstreamUnavailable(f"The connection to LM Studio was lost while {doing}")
    if isinstance(exc, ValueError):  # the SDK's own checks of the config (msgspec, lmstudio)
        return BadRequest(
            f"Invalid load config for LM Studio's SDK: {exc}", code="invalid_load_config"
        )
    if isinstance(exc, lmstudio.LMStudioClientError | OSError | httpx.HTTPError):
        return UpstreamUnavailable(f"LM Studio is not reachable over its SDK while {doing}")
    return UpstreamError(f"LM Studio's SDK failed while {doing}: {type(exc).__name__}")


def _first_cause(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class SdkSurface:
    """Loads and unloads through LM Studio's SDK websocket on the configured upstream."""

    name = "sdk"

    def __init__(self, settings: Settings, *, recheck_after: float = 10.0) -> None:
        self._host, self._problem = api_host(settings.upstream_url)
        self._auth: dict[str, Any] | None = None
        token = settings.upstream_token
        if token is not None and self._problem is None:
            self._auth = auth_message(token.get_secret_value())
            if self._auth is None:
                self._problem = (
                    "LMGATE_UPSTREAM_TOKEN is not an LM Studio API token (sk-lm-…:…), "
                    "which the SDK's handshake needs"
                )
        self._connect_budget = max(1.0, settings.connect_timeout) * 3
        self._load_budget = settings.load_timeout
        self._recheck_after = recheck_after
        self._checked_at: float | None = None
        self._ok = False
        self._lock = asyncio.Lock()
        self.reason: str | None = self._problem  # why it is unavailable, when it is

    @property
    def why_not(self) -> str | None:
        """The reason it is unavailable, in the name the other surfaces use."""
        return self.reason

    def fields(self) -> frozenset[str]:
        return fields_of(SDK)  # the config fields, `ttl` and `identifier`

    async def available(self) -> bool:
        if self._problem is not None:
            return False
        async with self._lock:
            now = time.monotonic()
            if self._checked_at is None or now - self._checked_at >= self._recheck_after:
                try:
                    async with self._client("connecting", SYSTEM):
                        pass
                    self._ok, self.reason = True, None
                except GatewayError as exc:
                    self._ok, self.reason = False, exc.message
                self._checked_at = time.monotonic()
            return self._ok

    @asynccontextmanager
    async def _client(self, doing: str, sessions: Sessions) -> AsyncIterator[_Client]:
        """An open SDK client; every SDK failure inside leaves as a `GatewayError`."""
        if self._problem is not None or self._host is None:
            raise UpstreamUnavailable(f"LM Studio's SDK cannot be used: {self._problem}")
        with sdk_limits.watched() as budget:
            client = _Client(self._host, self._auth, sessions)
            try:
                try:
                    async with asyncio.timeout(self._connect_budget):
                        await client.__aenter__()
                    yield client
                finally:
                    await client.aclose()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if not isinstance(exc, Exception | BaseExceptionGroup):
                    raise
                if budget.exceeded:
                    raise UpstreamError(
                        f"LM Studio sent more than {budget.limit // 2**20} MiB over one SDK "
                        f"connection while {doing}; the connection was cut",
                        code="upstream_answer_too_large",
                    ) from None
                if isinstance(exc, GatewayError):
                    raise
                raise gateway_error(_first_cause(exc), doing) from None

    async def _domain(self, client: _Client, model: str) -> Domain:
        """Whether `model` (key, `key@quant` or path) is an LLM or an embedding model."""
        for entry in await client.system.list_downloaded_models():
            if model in (entry.model_key, entry.path) or model.split("@", 1)[0] == entry.model_key:
                return "embedding" if entry.type == "embedding" else "llm"
        raise NotFound(f'LM Studio has no downloaded model "{model}"', code="model_not_found")

    async def load(self, spec: LoadSpec, progress: Progress) -> SurfaceLoad:
        try:
            async with asyncio.timeout(self._load_budget):
                return await self._load(spec, progress)
        except TimeoutError:
            raise UpstreamTimeout(
                f'LM Studio did not finish loading "{spec.model}" within '
                f"{self._load_budget:g} s (LMGATE_LOAD_TIMEOUT)"
            ) from None

    async def _load(self, spec: LoadSpec, progress: Progress) -> SurfaceLoad:
        doing = f'loading "{spec.model}"'
        async with self._client(doing, SYSTEM + MODELS) as client:
            domain = await self._domain(client, spec.model)
            config, sent, refused = translate(spec.config, domain)
            session = client.llm if domain == "llm" else client.embedding
            started = time.monotonic()
            handle = await session.load_new_instance(
                spec.model,
                spec.identifier,
                ttl=spec.ttl,
                config=config,  # type: ignore[arg-type]  # a camelCase dict the SDK checks
                on_load_progress=_reporter(progress),
            )
            seconds = time.monotonic() - started
            try:
                reported = (await handle.get_load_config()).to_dict()
            except lmstudio.LMStudioError as exc:
                why = f"LM Studio did not report the load config: {type(exc).__name__}"
                took, other = _beside(spec, handle.identifier)
                return SurfaceLoad(
                    self.name,
                    handle.identifier,
                    seconds,
                    took,
                    {**refused, **dict.fromkeys(sent, why), **other},
                )
        applied, missing, effective = compare(sent, reported)
        took, other = _beside(spec, handle.identifier)
        return SurfaceLoad(
            self.name,
            handle.identifier,
            seconds,
            {**applied, **took},
            {**refused, **missing, **other},
            effective,
        )

    async def unload(self, instance_id: str) -> None:
        doing = f'unloading "{instance_id}"'
        async with self._client(doing, MODELS) as client:
            for session in (client.llm, client.embedding):
                if any(h.identifier == instance_id for h in await session.list_loaded()):
                    await session.unload(instance_id)
                    return
        raise NotFound(f'LM Studio has no loaded instance "{instance_id}"', code="model_not_found")


def _beside(spec: LoadSpec, made: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(applied, not applied) for `ttl` and `identifier`, which travel beside the config. LM
    Studio lists no instance's TTL to read back: the load it accepted carried it, and that
    acceptance is the confirmation, as over REST."""
    applied: dict[str, Any] = {}
    missing: dict[str, str] = {}
    if spec.ttl is not None:
        applied["ttl"] = spec.ttl
    if spec.identifier is not None:
        if made == spec.identifier:
            applied["identifier"] = made
        else:
            missing["identifier"] = f"LM Studio named the instance {made!r}"
    return applied, missing


def _reporter(progress: Progress) -> Callable[[float], None]:
    """The SDK's progress callback: forwards fractions, and a failing observer never fails
    the load."""

    def report(fraction: float) -> None:
        try:
            progress(min(1.0, max(0.0, float(fraction))))
        except Exception:  # progress is advisory
            return

    return report
