"""What the run was on, the table a person reads, and the JSON a later run is compared with.

The machine and versions go into both: a figure without them cannot be compared with another.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"
_PACKAGES = ("lmgate", "uvicorn", "starlette", "fastapi", "aiohttp", "uvloop", "httptools")


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
    }


def versions(repo: Path) -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    try:
        found["revision"] = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        found["revision"] = None
    return found


def save(doc: dict[str, Any], stamp: str, extra: Path | None) -> list[Path]:
    data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    RESULTS.mkdir(parents=True, exist_ok=True)
    paths = [RESULTS / f"{stamp}.json"]
    if extra is not None:
        extra.parent.mkdir(parents=True, exist_ok=True)
        paths.append(extra)
    for path in paths:
        path.write_bytes(data + b"\n")
    return paths


Row = tuple[str, str, str, str, str]


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _added(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f} ms"


def _times(label: str, figures: dict[str, Any], wanted: list[tuple[str, str]]) -> list[Row]:
    """One row per figure: direct, lmgate, and what lmgate adds in milliseconds."""
    rows = []
    for i, (title, key) in enumerate(wanted):
        direct, gate = figures["direct"][key], figures["lmgate"][key]
        added = _added(figures["compare"].get(f"added_{key}"))
        rows.append((label if i == 0 else "", title, _num(direct), _num(gate), added))
    return rows


def _chunks(figures: dict[str, Any]) -> Row:
    """Events must match exactly; fewer socket reads through lmgate would mean coalescing."""
    direct, gate = figures["direct"], figures["lmgate"]
    if not figures["compare"]["events_equal"]:
        verdict = "EVENTS DIFFER"
    elif gate["reads"] < direct["reads"]:
        verdict = f"{direct['reads'] - gate['reads']} fewer reads"
    else:
        verdict = "equal"
    pair = "{0[events]}/{0[reads]}"
    return ("", "chunks (events/reads)", pair.format(direct), pair.format(gate), verdict)


def _rows(doc: dict[str, Any]) -> list[Row]:
    opts, res = doc["options"], doc["results"]
    rows = _times("non-stream, 1 client", res["latency_1"], _LATENCY)
    tp = res["throughput"]
    ratio = tp["compare"]["ratio"]
    rows.append(
        (
            f"non-stream, {opts['concurrency']} clients",
            "requests/s",
            _num(tp["direct"]["requests_per_s"], 0),
            _num(tp["lmgate"]["requests_per_s"], 0),
            "-" if ratio is None else f"{ratio:.2f}x",
        )
    )
    many = f"stream, {opts['stream_concurrency']} clients"
    for name, label in (("stream_1", "stream, 1 client"), ("stream_many", many)):
        rows += [*_times(label, res[name], _STREAM), _chunks(res[name])]
    gate = doc["lmgate"]
    start = f"at start {_num(gate['start_rss_mb'], 1)}"
    rows.append(("lmgate process", "peak RSS MB", "", _num(gate["peak_rss_mb"], 1), start))
    failed = [sum(r[t]["errors"] for r in res.values()) for t in ("direct", "lmgate")]
    rows.append(("all scenarios", "failed requests", str(failed[0]), str(failed[1]), ""))
    return rows


_LATENCY = [("latency p50 ms", "p50_ms"), ("latency p99 ms", "p99_ms")]
_STREAM = [
    ("first chunk p50 ms", "first_chunk_p50_ms"),
    ("first chunk p99 ms", "first_chunk_p99_ms"),
    ("worst gap p99 ms", "worst_gap_p99_ms"),
]
_HEAD: Row = ("scenario", "figure", "direct", "lmgate", "lmgate vs direct")


def table(doc: dict[str, Any]) -> str:
    """The figures, lmgate set against direct; see bench/README.md for how to read them."""
    rows = _rows(doc)
    widths = [max(len(row[i]) for row in [_HEAD, *rows]) for i in range(5)]

    def fmt(row: tuple[str, ...]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in pairs]
        return "  ".join(cells).rstrip()

    env, opts, sub = doc["environment"], doc["options"], doc["subscriber"]
    m, v, cpus = env["machine"], env["versions"], env["cpus"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val and k != "revision")
    where = ", ".join(f"{k} on {cpus[k] or 'any'}" for k in ("lmgate", "load", "upstream"))
    return "\n".join(
        [
            f"lmgate bench, {'quick' if opts['quick'] else 'full'} run: {doc['started']}, "
            f"{doc['seconds']:.0f} s, revision {v['revision'] or '?'}",
            f"machine   {m['cpu']}, {m['cores']} cores (cpus: {where})",
            f"versions  {libs}; load generator on {env['loop']}",
            f"upstream  {doc['upstream']}; /debug/stream subscriber saw "
            f"{sub.get('events', '?')} events, {sub.get('lost', '?')} lost",
            "",
            fmt(_HEAD),
            fmt(tuple("-" * w for w in widths)),
            *(fmt(row) for row in rows),
        ]
    )
