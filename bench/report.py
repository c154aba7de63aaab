"""What the run was on, the table a person reads, and the JSON a later run is compared with.

The machine and versions go into both: a figure without them cannot be compared with another.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
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
        "load_average": [round(x, 2) for x in os.getloadavg()],  # others' work skews figures
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


Row = tuple[str, ...]
_TARGETS = ("direct", "nginx", "lmgate")
_OTHERS = ("direct", "nginx")


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _added(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f} ms"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _cells(figures: dict[str, Any], key: str, digits: int = 3) -> list[str]:
    return [_num(figures[t][key], digits) if t in figures else "n/a" for t in _TARGETS]


def _vs(figures: dict[str, Any], show: Any, key: str) -> list[str]:
    compare = figures["compare"]
    return [show(compare[f"vs_{o}"].get(key)) if f"vs_{o}" in compare else "n/a" for o in _OTHERS]


def _times(label: str, figures: dict[str, Any], wanted: list[tuple[str, str]]) -> list[Row]:
    """One row per figure: each target, and what lmgate adds in milliseconds."""
    rows = []
    for i, (title, key) in enumerate(wanted):
        vs = _vs(figures, _added, f"added_{key}")
        rows.append((label if i == 0 else "", title, *_cells(figures, key), *vs))
    return rows


def _rate(label: str, figures: dict[str, Any]) -> Row:
    return (
        label,
        "requests/s",
        *_cells(figures, "requests_per_s", 0),
        *_vs(figures, _share, "ratio"),
    )


def _chunks(figures: dict[str, Any]) -> Row:
    """Events must match exactly; fewer socket reads through lmgate would mean coalescing."""
    pair = "{0[events]}/{0[reads]}"
    cells = [pair.format(figures[t]) if t in figures else "n/a" for t in _TARGETS]
    verdicts = []
    for other in _OTHERS:
        compare = figures["compare"].get(f"vs_{other}")
        if compare is None:
            verdicts.append("n/a")
        elif not compare["events_equal"]:
            verdicts.append("EVENTS DIFFER")
        elif figures["lmgate"]["reads"] < figures[other]["reads"]:
            verdicts.append(f"{figures[other]['reads'] - figures['lmgate']['reads']} fewer reads")
        else:
            verdicts.append("equal")
    return ("", "chunks (events/reads)", *cells, *verdicts)


def _slow(label: str, figures: dict[str, Any]) -> list[Row]:
    rows = [
        (
            label,
            "streams ok / failed",
            *(
                f"{figures[t]['streams']} / {figures[t]['errors']}" if t in figures else "n/a"
                for t in _TARGETS
            ),
            "",
            "",
        )
    ]
    rows += _times("", figures, _SLOW)
    rss = _cells(figures, "peak_rss_mb", 1)
    rows.append(("", "peak RSS MiB", "", *rss[1:], "", ""))
    return rows


def _rows(doc: dict[str, Any]) -> list[Row]:
    opts, res = doc["options"], doc["results"]
    rows = _times("non-stream, 1 client", res["latency_1"], _LATENCY)
    many = f"non-stream, {opts['concurrency']} clients"
    rows += [*_times(many, res["latency_many"], _LATENCY), _rate("", res["latency_many"])]
    rows.append(_rate(f"non-stream, {opts['wide_concurrency']} clients", res["throughput"]))
    for name, n, pace in (
        ("stream_1", 1, opts["chunk_delay_ms"]),
        ("stream_many", opts["stream_concurrency"], opts["chunk_delay_ms"]),
        ("stream_wide", opts["wide_streams"], opts["wide_delay_ms"]),
    ):
        label = f"stream, {n} at once, {pace:g} ms"
        rows += [*_times(label, res[name], _STREAM), _chunks(res[name])]
    rows += _slow(f"slow stream, {opts['slow_streams']} at once", res["slow_streams"])
    gate = doc["lmgate"]
    start = f"at start {_num(gate['start_rss_mb'], 1)}"
    rows.append(("lmgate process", "peak RSS MiB", "", "", _num(gate["peak_rss_mb"], 1), start, ""))
    failed = [
        str(sum(r[t]["errors"] for r in res.values())) if t in res["latency_1"] else "n/a"
        for t in _TARGETS
    ]
    rows.append(("all scenarios", "failed requests", *failed, "", ""))
    return rows


_LATENCY = [("latency p50 ms", "p50_ms"), ("latency p99 ms", "p99_ms")]
_STREAM = [
    ("first chunk p50 ms", "first_chunk_p50_ms"),
    ("first chunk p99 ms", "first_chunk_p99_ms"),
    ("worst gap p99 ms", "worst_gap_p99_ms"),
]
_SLOW = [("first chunk p99 ms", "first_chunk_p99_ms"), ("worst gap p99 ms", "worst_gap_p99_ms")]
_HEAD: Row = ("scenario", "figure", *_TARGETS, "lmgate vs direct", "lmgate vs nginx")
_GOALS_HEAD: Row = ("goal", "target", "measured", "result")


def _grid(head: Row, rows: Sequence[Row], left: int) -> list[str]:
    """Rows as aligned text: the first `left` columns flush left, the rest flush right."""
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]

    def fmt(row: Row) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in pairs]
        return "  ".join(cells).rstrip()

    return [fmt(head), fmt(tuple("-" * w for w in widths)), *(fmt(row) for row in rows)]


def _generator(doc: dict[str, Any]) -> list[str]:
    """Which client made the load, and whether it (not the target) was the limit."""
    tools, res = doc["environment"]["tools"], doc["results"]
    gen = tools["generator"]
    lines = [
        f"load      {gen['multi_client']} for multi-client non-streaming, {gen['other']} "
        "for the rest"
    ]
    if tools.get("wrk_missing"):
        lines.append(f"          wrk {tools['wrk_missing']}: the aiohttp client makes that load")
    tp = res["throughput"]
    direct, gate = tp["direct"]["requests_per_s"], tp["lmgate"]["requests_per_s"]
    if direct and gate:
        headroom = direct / gate
        verdict = (
            "the generator is not the limit"
            if headroom >= 2
            else ("WARNING: not far above lmgate, so lmgate's figure may measure the generator")
        )
        lines.append(
            f"          direct at {doc['options']['wide_concurrency']} clients: "
            f"{direct:,.0f} req/s = {headroom:.1f}x lmgate's; {verdict}"
        )
    if "nginx" in tp and direct and tp["nginx"]["requests_per_s"]:
        share = tp["nginx"]["requests_per_s"] / direct
        if share >= 0.8:
            lines.append(
                f"          nginx reached {share:.0%} of direct: capped by the upstream "
                "and generator core, so 'lmgate vs nginx' flatters lmgate"
            )
    return lines


def table(doc: dict[str, Any]) -> str:
    """The figures, lmgate set against direct and nginx; see bench/README.md for reading them."""
    env, opts, sub = doc["environment"], doc["options"], doc["subscriber"]
    m, v, cpus, tools = env["machine"], env["versions"], env["cpus"], env["tools"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val and k != "revision")
    where = ", ".join(f"{k} on {cpus[k] or 'any'}" for k in ("lmgate", "load", "upstream"))
    workers = env.get("workers", 1)
    gateway = "one process" if workers == 1 else f"--workers {workers}, not pinned to one core"
    nginx = tools["nginx"] or f"nginx {tools.get('nginx_missing')}: its columns are n/a"
    if tools["nginx"]:
        nginx += f" on the same cpus as lmgate, {workers} worker(s)"
    goal_rows = [(g["goal"], g["target"], g["measured"], g["result"]) for g in doc["goals"]]
    return "\n".join(
        [
            f"lmgate bench, {'quick' if opts['quick'] else 'full'} run: {doc['started']}, "
            f"{doc['seconds']:.0f} s, revision {v['revision'] or '?'}",
            f"machine   {m['cpu']}, {m['cores']} cores (cpus: {where}), load average "
            f"{' '.join(str(x) for x in m.get('load_average', []))} at start",
            f"versions  {libs}",
            f"lmgate    {gateway}; reference: {nginx}",
            *_generator(doc),
            f"upstream  {doc['upstream']}; /debug/stream subscriber saw "
            f"{sub.get('events', '?')} events, {sub.get('lost', '?')} lost",
            "",
            *_grid(_HEAD, _rows(doc), 2),
            "",
            "goals (added = lmgate minus direct)",
            *_grid(_GOALS_HEAD, goal_rows, 2),
        ]
    )
