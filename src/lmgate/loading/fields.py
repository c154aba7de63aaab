"""Which load surface can set which load field, in the gateway's dotted names (reference §9.2).

One table, read by the surfaces (what they may be asked), the chooser (which one applies the
most), the reasons given under `notApplied`, and `GET /admin/upstream`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmgate.loading.surface import LoadSpec

SDK, LMS, REST = "sdk", "lms", "rest"
PREFERENCE = (SDK, LMS, REST)  # best first: the SDK sets everything, REST the least

# Settings LM Studio's SDK load config takes (its KV stack), beyond what REST and lms take.
_SDK_ONLY = (
    "gpu.mainGpu",
    "gpu.splitStrategy",
    "gpu.disabledGpus",
    "ropeFrequencyBase",
    "ropeFrequencyScale",
    "kvCacheQuantK",
    "kvCacheQuantV",
    "keepModelInMemory",
    "tryMmap",
    "useFp16ForKVCache",
    "seed",
)
FIELD_SURFACES: dict[str, tuple[str, ...]] = {
    "contextLength": (SDK, LMS, REST),
    "gpu.ratio": (SDK, LMS),
    "flashAttention": (SDK, REST),
    "evalBatchSize": (SDK, REST),
    "numExperts": (SDK, REST),
    "offloadKvCacheToGpu": (SDK, REST),
    **{name: (SDK,) for name in _SDK_ONLY},
    "parallel": (LMS, REST),  # LM Studio's Python SDK has no maxParallelPredictions
    "ttl": (SDK, LMS, REST),
    "identifier": (SDK, LMS),
}
# Fields no surface loads with: the gateway turns them into something a surface takes.
CONVERTED = {
    "gpu.layers": "turned into gpu.ratio when the model's layer count is known",
    "cpuThreads": "a prediction setting in LM Studio: applied as a per-request default",
}
SURFACE_NAMES = {SDK: "the SDK", LMS: "lms", REST: "REST"}


def fields_of(surface: str) -> frozenset[str]:
    return frozenset(name for name, able in FIELD_SURFACES.items() if surface in able)


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """`{"gpu": {"ratio": 1}}` -> `{"gpu.ratio": 1}`; unset (None) values left out."""
    out: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, dict):
            out.update({f"{name}.{sub}": v for sub, v in value.items() if v is not None})
        elif value is not None:
            out[name] = value
    return out


def asked_of(spec: LoadSpec) -> dict[str, Any]:
    """Every setting `spec` asks for, flattened, with the instance's own `ttl` and
    `identifier`: what a surface reports as applied or not, field by field."""
    asked = flatten(spec.config)
    if spec.ttl is not None:
        asked["ttl"] = spec.ttl
    if spec.identifier is not None:
        asked["identifier"] = spec.identifier
    return asked


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten`."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        head, dot, tail = name.partition(".")
        if dot:
            out.setdefault(head, {})[tail] = value
        else:
            out[name] = value
    return out


def needs(name: str) -> str:
    """The reason a surface that cannot set `name` gives: which surfaces can."""
    able = FIELD_SURFACES.get(name)
    if not able:
        return "not a load setting LM Studio takes"
    return "needs " + " or ".join(SURFACE_NAMES[s] for s in able)


def table(available: list[str]) -> dict[str, dict[str, Any]]:
    """For `GET /admin/upstream`: each field, the surfaces that can set it, and whether one of
    them is available on this upstream now."""
    out: dict[str, dict[str, Any]] = {}
    for name, able in FIELD_SURFACES.items():
        out[name] = {"surfaces": list(able), "available": any(s in available for s in able)}
    ratio = out["gpu.ratio"]
    out["gpu.layers"] = {**ratio, "how": CONVERTED["gpu.layers"]}
    out["cpuThreads"] = {"surfaces": [], "available": True, "how": CONVERTED["cpuThreads"]}
    return out
