"""From raw samples to figures: percentiles per target, then lmgate set against the others.

Comparisons are deltas for times (what lmgate adds, in ms, which is what a user feels) and a
ratio for throughput (what share of the other's capacity lmgate reaches), each against
`direct` (the bare upstream) and, when it ran, `nginx`.
"""

from __future__ import annotations

from typing import Any

from bench.load import Samples

DIRECT, NGINX, GATE = "direct", "nginx", "lmgate"


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
    done = s.completed or len(s.latencies)
    return {
        **latency(s),
        "requests": done,
        "seconds": round(s.elapsed, 3),
        "requests_per_s": round(done / s.elapsed, 1) if s.elapsed else None,
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
        "seconds": round(s.elapsed, 3),
        "peak_rss_mb": round(max(s.rss_kib) / 1024, 1) if s.rss_kib else None,
    }


def _added(per: dict[str, dict[str, Any]], other: str, *keys: str) -> dict[str, Any]:
    return {f"added_{k}": _delta(per[other][k], per[GATE][k]) for k in keys}


_TIMES = ("first_chunk_p50_ms", "first_chunk_p99_ms", "worst_gap_p99_ms")


def _compare(
    name: str, per: dict[str, dict[str, Any]], raw: dict[str, Samples], other: str
) -> dict[str, Any]:
    if name == "latency_1":
        return _added(per, other, "p50_ms", "p99_ms", "mean_ms")
    if name in ("latency_many", "throughput"):
        a, b = per[other]["requests_per_s"], per[GATE]["requests_per_s"]
        return {
            **_added(per, other, "p50_ms", "p99_ms"),
            "ratio": round(b / a, 3) if a and b else None,
        }
    compare = _added(per, other, *_TIMES)
    compare["events_equal"] = sorted(raw[other].events) == sorted(raw[GATE].events)
    compare["reads_equal"] = per[other]["reads"] == per[GATE]["reads"]
    return compare


def summarise(raw: dict[str, dict[str, Samples]]) -> dict[str, Any]:
    """Every scenario's figures for each target plus lmgate's comparisons, ready for JSON."""
    out: dict[str, Any] = {}
    shapes = {"latency_1": latency, "latency_many": throughput, "throughput": throughput}
    for name, by_target in raw.items():
        shape = shapes.get(name, streaming)
        per = {target: shape(samples) for target, samples in by_target.items()}
        compare = {
            f"vs_{other}": _compare(name, per, by_target, other)
            for other in (DIRECT, NGINX)
            if other in per and GATE in per
        }
        out[name] = {**per, "compare": compare}
    return out
