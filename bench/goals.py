"""The project's performance goals, each checked against a run's figures: PASS, FAIL or n/a.

Goals are benchmark targets, reported and never asserted in tests: a shared machine moves p99
figures between runs. "n/a" means the run has no figure for it (nginx missing, or a goal
another tool measures, such as the soak).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Goal:
    text: str
    target: str
    measure: Callable[[Doc], float | None]
    passes: Callable[[float], bool]
    unit: str = "ms"


def _get(doc: Doc, *path: str) -> Any:
    node: Any = doc["results"]
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _added(scenario: str, key: str) -> Callable[[Doc], float | None]:
    return lambda doc: _get(doc, scenario, "compare", "vs_direct", f"added_{key}")


def _share(scenario: str) -> Callable[[Doc], float | None]:
    return lambda doc: _get(doc, scenario, "compare", "vs_nginx", "ratio")


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def _reads_lost(doc: Doc) -> float | None:
    """Socket reads lmgate delivered fewer than direct, over every streaming scenario."""
    lost = 0
    for name in ("stream_1", "stream_many", "stream_wide"):
        per = _get(doc, name)
        if per is None:
            return None
        lost += max(0, per["direct"]["reads"] - per["lmgate"]["reads"])
    return lost


def _slow_failed(doc: Doc) -> float | None:
    gate = _get(doc, "slow_streams", "lmgate")
    if gate is None:
        return None
    wanted: int = doc["options"]["slow_streams"]
    errors: int = gate["errors"]
    completed: int = gate["streams"]
    return errors + max(0, wanted - completed - errors)


def goals(doc: Doc) -> list[Goal]:
    opts = doc["options"]
    n, wide = opts["concurrency"], opts["wide_concurrency"]
    fan, widest, slow = opts["stream_concurrency"], opts["wide_streams"], opts["slow_streams"]
    found = [
        Goal(
            "non-stream, 1 client: added p50",
            "<= 0.5 ms",
            _added("latency_1", "p50_ms"),
            _at_most(0.5),
        ),
        Goal(
            "non-stream, 1 client: added p99",
            "<= 2 ms",
            _added("latency_1", "p99_ms"),
            _at_most(2.0),
        ),
        Goal(
            f"non-stream, {n} clients: added p50",
            "<= 0.5 ms",
            _added("latency_many", "p50_ms"),
            _at_most(0.5),
        ),
        Goal(
            f"non-stream, {n} clients: added p99",
            "<= 2 ms",
            _added("latency_many", "p99_ms"),
            _at_most(2.0),
        ),
        Goal(
            f"non-stream, {n} clients: req/s vs nginx",
            ">= 50 %",
            _share("latency_many"),
            lambda v: v >= 0.5,
            "share",
        ),
        Goal(
            f"non-stream, {wide} clients: req/s vs nginx",
            ">= 50 %",
            _share("throughput"),
            lambda v: v >= 0.5,
            "share",
        ),
    ]
    for name, streams in (("stream_1", 1), ("stream_many", fan), ("stream_wide", widest)):
        found += [
            Goal(
                f"stream, {streams} at once: added first chunk p50",
                "<= 0.5 ms",
                _added(name, "first_chunk_p50_ms"),
                _at_most(0.5),
            ),
            Goal(
                f"stream, {streams} at once: added first chunk p99",
                "<= 2 ms",
                _added(name, "first_chunk_p99_ms"),
                _at_most(2.0),
            ),
        ]
    found += [
        Goal(
            f"stream, {widest} at once: added worst gap p99",
            "<= 1 ms",
            _added("stream_wide", "worst_gap_p99_ms"),
            _at_most(1.0),
        ),
        Goal(
            "streams: socket reads lost to coalescing", "0", _reads_lost, lambda v: v == 0, "count"
        ),
        Goal(f"{slow} slow streams at once: failed", "0", _slow_failed, lambda v: v == 0, "count"),
        Goal(
            f"{slow} slow streams at once: lmgate peak RSS",
            "<= 100 MiB",
            lambda doc: _get(doc, "slow_streams", "lmgate", "peak_rss_mb"),
            _at_most(100.0),
            "MiB",
        ),
        Goal(
            "10-minute soak: RSS growth",
            "< 5 %",
            lambda doc: None,
            lambda v: v < 5,
            "python -m bench.soak",
        ),
    ]
    return found


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return unit if " " in unit else "-"  # a unit with a space names where to measure it
    if unit == "share":
        return f"{value * 100:.0f} %"
    if unit == "ms":
        return f"{value:+.3f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g}"


def check(doc: Doc) -> list[dict[str, Any]]:
    """Every goal with its measured figure and verdict, for the table and the JSON."""
    out = []
    for goal in goals(doc):
        value = goal.measure(doc)
        verdict = "n/a" if value is None else "PASS" if goal.passes(value) else "FAIL"
        shown = _shown(value, goal.unit)
        out.append(
            {
                "goal": goal.text,
                "target": goal.target,
                "measured": shown,
                "value": value,
                "result": verdict,
            }
        )
    return out
