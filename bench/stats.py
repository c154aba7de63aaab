"""From raw samples to figures: percentiles per target, then lmgate set against direct.

Comparisons are deltas for times (what lmgate adds, in ms, which is what a user feels) and a
ratio for throughput (what share of the upstream's capacity survives the gateway).
"""

from __future__ import annotations

from typing import Any

from bench.load import Samples

DIRECT, GATE = "direct", "lmgate"


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; None for no data rather than a fake zero."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def latency(s: Samples) -> dict[str, Any]:
    return {
        "requests": len(s.latencies),
        "errors": s.errors,
        "p50_ms": _ms(percentile(s.latencies, 50)),
        "p99_ms": _ms(percentile(s.latencies, 99)),
        "mean_ms": _ms(sum(s.latencies) / len(s.latencies)) if s.latencies else None,
        "max_ms": _ms(max(s.latencies, default=None)),
    }


def throughput(s: Samples) -> dict[str, Any]:
    return {
        **latency(s),
        "seconds": round(s.elapsed, 3),
        "requests_per_s": round(len(s.latencies) / s.elapsed, 1) if s.elapsed else None,
    }


def streaming(s: Samples) -> dict[str, Any]:
    return {
        "streams": len(s.first_chunk),
        "errors": s.errors,
        "first_chunk_p50_ms": _ms(percentile(s.first_chunk, 50)),
        "first_chunk_p99_ms": _ms(percentile(s.first_chunk, 99)),
        "worst_gap_p50_ms": _ms(percentile(s.worst_gap, 50)),
        "worst_gap_p99_ms": _ms(percentile(s.worst_gap, 99)),
        "events": sum(s.events),
        "reads": sum(s.reads),
        "events_per_stream": sorted(set(s.events)),
    }


def _added(per: dict[str, dict[str, Any]], *keys: str) -> dict[str, Any]:
    return {f"added_{k}": _delta(per[DIRECT][k], per[GATE][k]) for k in keys}


def summarise(raw: dict[str, dict[str, Samples]]) -> dict[str, Any]:
    """Every scenario's figures for both targets plus the comparison, ready for JSON."""
    out: dict[str, Any] = {}
    for name, by_target in raw.items():
        shape = {"latency_1": latency, "throughput": throughput}.get(name, streaming)
        per = {target: shape(samples) for target, samples in by_target.items()}
        if name == "latency_1":
            compare = _added(per, "p50_ms", "p99_ms", "mean_ms")
        elif name == "throughput":
            a, b = per[DIRECT]["requests_per_s"], per[GATE]["requests_per_s"]
            compare = {"ratio": round(b / a, 3) if a and b else None}
        else:
            compare = _added(per, "first_chunk_p50_ms", "first_chunk_p99_ms", "worst_gap_p99_ms")
            events = {t: sorted(samples.events) for t, samples in by_target.items()}
            compare["events_equal"] = events[DIRECT] == events[GATE]
            compare["reads_equal"] = per[DIRECT]["reads"] == per[GATE]["reads"]
        out[name] = {**per, "compare": compare}
    return out
