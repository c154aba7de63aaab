"""A soak: steady load for minutes, the gateway's memory and open files sampled throughout.

lmgate runs as in the main bench (auth, an active model, usage accounting with a usage chunk
in every stream, a `/debug/stream` subscriber). The load is open-loop at `--rate` requests/s,
every `--stream-every`-th a stream, the rest non-streaming, over a fixed pool of `--connections`
client connections opened together at the start. After `--warmup` seconds (caches,
pools and the event ring fill up; not judged) the gateway's VmRSS and open file descriptors
are sampled every `--sample` seconds. The run fails (exit 1) if RSS grew by 5 % or more from
just after the warm-up to the end, if descriptors grew by more than `--fd-slack`, or if any
request failed.

    python -m bench.soak                     # 10 minutes at 200 requests/s
    python -m bench.soak --minutes 2         # a shorter check
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import aio, report
from bench.load import Samples, Target, call, open_session, request_body, stream
from bench.options import Options
from bench.processes import Children, family_memory_kib, open_fds, plan_cpus, raise_nofile
from bench.runner import (
    _finish_subscriber,
    _start_gateway,
    _start_subscriber,
    _start_upstream,
    reported,
)

GROWTH_LIMIT = 5.0  # per cent


@dataclass(slots=True)
class Soak:
    samples: list[dict[str, Any]] = field(default_factory=list)
    plain: Samples = field(default_factory=Samples)
    streamed: Samples = field(default_factory=Samples)
    skipped: int = 0  # ticks with too many requests in flight
    in_flight: int = 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="whole run, warm-up included")
    p.add_argument("--rate", type=float, default=200.0, help="requests per second, steady")
    p.add_argument("--stream-every", type=int, default=5, help="every n-th request streams")
    p.add_argument("--warmup", type=float, help="seconds not judged (default: 20%%, max 60)")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--fd-slack", type=int, default=10, help="descriptors allowed to grow")
    p.add_argument("--max-in-flight", type=int, default=500)
    p.add_argument(
        "--connections", type=int, default=32, help="client connections, all opened at the start"
    )
    p.add_argument("--json", dest="json_path", type=Path, help="also write the results here")
    p.add_argument("--no-pin", dest="pin", action="store_false")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(60.0, args.minutes * 60 * 0.2)
    if args.minutes * 60 <= args.warmup + 3 * args.sample:
        p.error("--minutes must leave at least three samples after the warm-up")
    return args


async def _sampler(pid: int, soak: Soak, start: float, every: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        done = len(soak.plain.latencies) + len(soak.streamed.first_chunk)
        soak.samples.append(
            {
                "t": round(time.monotonic() - start, 1),
                "rss_kib": family_memory_kib(pid).get("VmRSS"),
                "fds": open_fds(pid),
                "requests": done,
                "errors": soak.plain.errors + soak.streamed.errors,
                "in_flight": soak.in_flight,
            }
        )
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


async def _drive(args: argparse.Namespace, url: str, key: str, pid: int) -> Soak:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    soak = Soak()
    plain = request_body(stream=False, max_tokens=20)
    streamed = request_body(stream=True, max_tokens=20, usage=True)
    # A fixed pool, filled at once: the gateway's descriptors (and the memory that goes with
    # open connections) reach their high-water mark in the warm-up; a stall that piles up
    # requests then queues them in the client rather than opening new connections.
    session = open_session(key, args.connections)
    target = Target("lmgate", url, session)
    in_flight: set[asyncio.Task[None]] = set()
    stop = asyncio.Event()
    start = time.monotonic()
    sampler = asyncio.create_task(_sampler(pid, soak, start, args.sample, stop))
    await asyncio.gather(
        *(stream(target, streamed, soak.streamed) for _ in range(args.connections))
    )
    deadline = start + args.minutes * 60
    try:
        i = 0
        while (now := time.monotonic()) < deadline:
            due = start + i / args.rate
            if due > now:
                await asyncio.sleep(due - now)
            if len(in_flight) >= args.max_in_flight:
                soak.skipped += 1
            else:
                streaming = args.stream_every > 0 and i % args.stream_every == 0
                work = (
                    stream(target, streamed, soak.streamed)
                    if streaming
                    else call(target, plain, soak.plain)
                )
                task = asyncio.create_task(work)
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            soak.in_flight = len(in_flight)
            i += 1
        if in_flight:
            await asyncio.wait(in_flight, timeout=30)
    finally:
        stop.set()
        await sampler
        for task in in_flight:
            task.cancel()
        await session.close()
    return soak


def _median(values: list[int]) -> float:
    return float(statistics.median(values)) if values else 0.0


def verdict(samples: list[dict[str, Any]], warmup: float, fd_slack: int) -> dict[str, Any]:
    """RSS just after the warm-up against the end (medians of 3 samples each); descriptors as
    the median of the first third of the judged samples against the last third's, since
    pooled connections follow the load's momentary concurrency up and down (a spike moves
    a median little) while a leak keeps climbing."""
    judged = [s for s in samples if s["t"] >= warmup and s["rss_kib"] and s["fds"] is not None]
    first, last = judged[:3], judged[-3:]
    rss_start = _median([s["rss_kib"] for s in first])
    rss_end = _median([s["rss_kib"] for s in last])
    third = max(1, len(judged) // 3)
    fds_start = _median([s["fds"] for s in judged[:third]])
    fds_end = _median([s["fds"] for s in judged[-third:]])
    growth = (rss_end - rss_start) / rss_start * 100 if rss_start else None
    return {
        "samples_judged": len(judged),
        "rss_start_mb": round(rss_start / 1024, 1),
        "rss_end_mb": round(rss_end / 1024, 1),
        "rss_max_mb": round(max(s["rss_kib"] for s in judged) / 1024, 1) if judged else None,
        "rss_growth_pct": round(growth, 2) if growth is not None else None,
        "fds_start": fds_start,
        "fds_end": fds_end,
        "fds_growth": fds_end - fds_start,
        "fds_max": max((s["fds"] for s in judged), default=None),
        "rss_ok": growth is not None and growth < GROWTH_LIMIT,
        "fds_ok": fds_end - fds_start <= fd_slack,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    raise_nofile()
    cpus = plan_cpus(args.pin)
    machine = report.machine()
    admin, api = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="lmgate-soak-") as tmp, Children(Path(tmp)) as kids:
        upstream, about = _start_upstream(kids, Options(), cpus["upstream"])
        gate, url = _start_gateway(kids, Path(tmp), upstream, (admin, api), cpus["lmgate"])
        sub = _start_subscriber(kids, url, admin, cpus["upstream"])
        if cpus["load"]:
            os.sched_setaffinity(0, cpus["load"])
        soak = aio.run(_drive(args, url, api, gate.pid))
        if gate.proc.poll() is not None:
            raise RuntimeError("lmgate exited during the soak:\n" + gate.log_tail())
        seen = _finish_subscriber(sub)
    judged = verdict(soak.samples, args.warmup, args.fd_slack)
    errors = soak.plain.errors + soak.streamed.errors
    return {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine,
        "versions": report.versions(Path(__file__).resolve().parent.parent),
        "cpus": {k: sorted(v) if v else None for k, v in cpus.items()},
        "upstream": about,
        "subscriber": seen,
        "requests": len(soak.plain.latencies),
        "streams": len(soak.streamed.first_chunk),
        "errors": errors,
        "skipped": soak.skipped,
        "verdict": {**judged, "errors_ok": errors == 0},
        "samples": soak.samples,
    }


def table(doc: dict[str, Any]) -> str:
    v, opts, samples = doc["verdict"], doc["options"], doc["samples"]
    step = max(1, len(samples) // 20)
    shown = [*samples[::step], *([samples[-1]] if (len(samples) - 1) % step else [])]
    lines = [
        f"lmgate soak: {doc['started']}, {opts['minutes']:g} min at {opts['rate']:g} req/s "
        f"(every {opts['stream_every']}th a stream), warm-up {opts['warmup']:g} s",
        f"machine {doc['machine']['cpu']}, load average {doc['machine']['load_average']}; "
        f"upstream {doc['upstream']}",
        f"done: {doc['requests']:,} requests, {doc['streams']:,} streams, {doc['errors']} failed, "
        f"{doc['skipped']} skipped; subscriber saw {doc['subscriber'].get('events', '?')} events, "
        f"{doc['subscriber'].get('lost', '?')} lost {doc['subscriber'].get('said', '')}",
        "",
        "      t s  RSS MiB   fds   requests  in flight",
        *(
            f"{s['t']:>9.0f}  {(s['rss_kib'] or 0) / 1024:>7.1f}  {s['fds'] or 0:>4}  "
            f"{s['requests']:>9,}  {s['in_flight']:>9}"
            f"{'  (warm-up)' if s['t'] < opts['warmup'] else ''}"
            for s in shown
        ),
        "",
        f"RSS  {v['rss_start_mb']} MiB after warm-up -> {v['rss_end_mb']} MiB at the end "
        f"({v['rss_growth_pct']:+} %, max {v['rss_max_mb']} MiB): "
        f"{'PASS' if v['rss_ok'] else 'FAIL'} (< {GROWTH_LIMIT:g} %)",
        f"fds  median {v['fds_start']:g} in the first third -> {v['fds_end']:g} in the last "
        f"({v['fds_growth']:+g}, max {v['fds_max']}): "
        f"{'PASS' if v['fds_ok'] else 'FAIL'} (slack {opts['fd_slack']})",
        f"errors {doc['errors']}: {'PASS' if v['errors_ok'] else 'FAIL'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    done = reported("soak", lambda: run(args), table, args.json_path, prefix="soak-")
    if isinstance(done, int):
        return done
    v = done["verdict"]
    return 0 if v["rss_ok"] and v["fds_ok"] and v["errors_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
