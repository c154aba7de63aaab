"""`gpu.layers` as LM Studio takes it: an offload ratio, layers / the model's layer count.

No LM Studio surface has a layer count field, and LM Studio's listings do not document the
model's layer count (reference §9.2), so the count is read from the listing only when the
upstream gives one; otherwise the field is reported as not applied, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Listing fields that carry a model's layer count, where an upstream reports one.
COUNT_FIELDS = ("layer_count", "num_layers", "n_layers", "block_count")


@dataclass(frozen=True, slots=True)
class Converted:
    config: dict[str, Any]  # with `gpu.layers` replaced by `gpu.ratio` (or dropped)
    applied_as: dict[str, str]
    not_applied: dict[str, str]


def layer_count(entry: dict[str, Any] | None) -> int | None:
    for name in COUNT_FIELDS:
        value = (entry or {}).get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def convert(config: dict[str, Any], total: int | None, source: str) -> Converted:
    """Replace `gpu.layers` in a nested gateway config. A `gpu.ratio` given too wins."""
    gpu = config.get("gpu")
    layers = gpu.get("layers") if isinstance(gpu, dict) else None
    if layers is None or not isinstance(gpu, dict):
        return Converted(config, {}, {})
    rest = {k: v for k, v in gpu.items() if k != "layers"}
    out = {k: v for k, v in config.items() if k != "gpu"}
    if rest:
        out["gpu"] = rest
    if "ratio" in rest:
        return Converted(out, {}, {"gpu.layers": "gpu.ratio was given too, and is what applies"})
    if total is None:
        return Converted(
            out,
            {},
            {
                "gpu.layers": "LM Studio takes GPU offload as a ratio, and the upstream does "
                "not report this model's layer count to turn layers into one: send gpu.ratio"
            },
        )
    ratio = round(min(layers, total) / total, 4)
    out["gpu"] = {**rest, "ratio": ratio}
    how = f"applied as gpu.ratio {ratio:g} ({min(layers, total)} of {total} layers, {source})"
    return Converted(out, {"gpu.layers": how}, {})
