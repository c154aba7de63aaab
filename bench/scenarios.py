"""What runs when: a warm-up, then every scenario with the targets alternated A B C in rounds.

Alternating in rounds rather than measuring one target and then the other means slow drift
(thermal, a noisy neighbour, the page cache) lands on every figure alike. Multi-client
non-streaming load goes through wrk when it is installed (`bench.wrk`), everything else
through the aiohttp client (`bench.load`), which also times each stream's events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import wrk
from bench.load import (
    Samples,
    Target,
    call,
    clients,
    open_session,
    request_body,
    split,
    stream,
    timed_clients,
)
from bench.options import Options
from bench.processes import family_memory_kib

SLOW_CHUNKS = 20
SLOW_DELAY_MS = (50, 100)  # each pause in a slow stream drawn from this range


@dataclass(slots=True)
class Plan:
    opts: Options
    targets: list[Target]
    api_key: str
    wrk: str | None = None  # the binary, when wrk generates multi-client load
    wrk_script: Path | None = None
    pids: dict[str, int] = field(default_factory=dict)  # target name -> process to watch


async def _watch_rss(pid: int, out: Samples, stop: asyncio.Event) -> None:
    while not stop.is_set():
        out.rss_kib.append(family_memory_kib(pid).get("VmRSS", 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def _slow(plan: Plan, target: Target, out: Samples) -> None:
    """`slow_streams` streams at once, each on its own connection, the gateway's RSS watched."""
    n = plan.opts.slow_streams
    pace = {"chunks": SLOW_CHUNKS, "delay_ms": list(SLOW_DELAY_MS)}
    body = request_body(stream=True, max_tokens=SLOW_CHUNKS, usage=True, bench=pace)
    session = open_session(plan.api_key, n, timeout=120)
    slow = Target(target.name, target.url, session)
    stop = asyncio.Event()
    pid = plan.pids.get(target.name)
    watcher = asyncio.create_task(_watch_rss(pid, out, stop)) if pid else None

    async def one(t: Target, s: Samples) -> None:
        await stream(t, body, s)

    try:
        await clients(slow, out, n, 1, one)
    finally:
        stop.set()
        if watcher:
            await watcher
        await session.close()


async def run(plan: Plan) -> dict[str, dict[str, Samples]]:
    """Warm up, then every scenario in turn, each alternating the targets round by round."""
    opts, targets = plan.opts, plan.targets
    plain = request_body(stream=False, max_tokens=opts.chunks)
    streamed = request_body(stream=True, max_tokens=opts.chunks, usage=True)
    wide_pace = {"chunks": opts.chunks, "delay_ms": [opts.wide_delay_ms] * 2}
    widely = request_body(stream=True, max_tokens=opts.chunks, usage=True, bench=wide_pace)
    wide_ramp = opts.chunks * opts.wide_delay_ms / 1000  # one stream's length

    async def do_call(t: Target, s: Samples) -> None:
        await call(t, plain, s)

    async def do_stream(t: Target, s: Samples) -> None:
        await stream(t, streamed, s)

    async def do_wide(t: Target, s: Samples) -> None:
        await stream(t, widely, s)

    async def multi(t: Target, s: Samples, n: int, seconds: float) -> None:
        if plan.wrk and plan.wrk_script:
            await wrk.run(plan.wrk, plan.wrk_script, t.url, n, seconds, s)
        else:
            await timed_clients(t, s, n, seconds, do_call)

    for target in targets:
        warm = Samples()
        await clients(target, warm, opts.concurrency, -(-opts.warmup // opts.concurrency), do_call)
        await clients(target, warm, opts.stream_concurrency, 1, do_stream)
        await clients(target, warm, opts.wide_streams, 1, do_stream)  # opens the whole pool
        if warm.errors:
            raise RuntimeError(f"{target.name}: {warm.errors} warm-up requests failed")

    results: dict[str, dict[str, Samples]] = {}

    async def alternate(name: str, run: Callable[[Target, Samples, int], Awaitable[None]]) -> None:
        per_target = results.setdefault(name, {t.name: Samples() for t in targets})
        for round_ in range(opts.rounds):
            for target in targets:
                await run(target, per_target[target.name], round_)

    requests = split(opts.requests, opts.rounds)
    streams = split(opts.streams, opts.rounds)
    wide_streams = split(max(1, opts.streams // 10), opts.rounds)
    window = opts.duration / opts.rounds
    load, wide, fan = opts.concurrency, opts.wide_concurrency, opts.stream_concurrency
    await alternate("latency_1", lambda t, s, r: clients(t, s, 1, requests[r], do_call))
    await alternate("latency_many", lambda t, s, r: multi(t, s, load, window))
    await alternate("throughput", lambda t, s, r: multi(t, s, wide, window))
    await alternate("stream_1", lambda t, s, r: clients(t, s, 1, streams[r], do_stream))
    await alternate("stream_many", lambda t, s, r: clients(t, s, fan, streams[r], do_stream))
    await alternate(
        "stream_wide",
        lambda t, s, r: clients(t, s, opts.wide_streams, wide_streams[r], do_wide, wide_ramp),
    )
    slow = results.setdefault("slow_streams", {t.name: Samples() for t in targets})
    for target in targets:
        await _slow(plan, target, slow[target.name])
    return results
