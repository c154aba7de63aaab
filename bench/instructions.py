"""What observability costs, counted in instructions: `python -m bench.observability
--instructions` (needs valgrind).

On a shared machine the wall clock moves with whatever else runs: two identical gateways can
differ by several per cent. callgrind counts the instructions the gateway's own process
executes, which other load does not change, so the same code gives the same count on a quiet
or a busy host. What it leaves out is time in the kernel: the writes to the subscribers'
sockets, a per cent or two of a core at full load, show on the wall clock only.

Each variant runs as one gateway under callgrind, against one shared upstream. callgrind
slows a process about fifty times, so the debug stream's batch is stretched by as much
(`SLOWDOWN`): subscribers still write a few hundred events per batch, as at full speed.
Counting starts after a warm-up; for each scenario the counters are zeroed, `--requests`
requests are made (four at a time), the gateway is given a batch tick to send the events they
caused, and the count is read. The usage writer flushes every 10 s, once or twice per count:
more often per request than at full speed, so its share is if anything overstated. The
variants run at once: their counts do not depend on each other.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import Samples, Target, call, open_session, request_body, stream
from bench.observability import (
    MODEL,
    NO_USAGE,
    admin_call,
    child_env,
    start_listeners,
    start_upstream,
    stop_listeners,
)
from bench.processes import Child, Children, free_port, wait_http

SLOWDOWN = 50
BATCH_MS = 50.0 * SLOWDOWN  # the debug stream's default batch, stretched
FLUSH_S = 10.0  # the usage writer's interval: once or twice per count (conservative)
CONCURRENCY = 4
SCENARIOS = ("plain", "stream")
_TOOLS = ("valgrind", "callgrind_control")


def missing_tools() -> list[str]:
    return [tool for tool in _TOOLS if shutil.which(tool) is None]


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def _dumped(out: Path, known: set[Path]) -> int:
    """The instruction count of the dump that appeared since `known` was listed."""
    fresh = set(out.parent.glob(out.name + ".*")) - known
    if len(fresh) != 1:
        raise RuntimeError(f"expected one new callgrind dump next to {out}, found {len(fresh)}")
    path = fresh.pop()
    known.add(path)
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {path}")


def gateway_under_callgrind(
    kids: Children, work: Path, name: str, upstream: str, keys: tuple[str, str],
    settings: dict[str, str],
) -> tuple[str, Child, Path]:  # fmt: skip
    """One gateway under callgrind, not counting until told to."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    home = work / name
    home.mkdir()
    out = home / "callgrind.out"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    argv += [sys.executable, "-m", "lmgate", "serve", "--port", str(port), "--upstream", upstream]
    argv += ["--data-dir", str(home / "data")]
    env = child_env(
        LMGATE_ADMIN_KEY=keys[0],
        LMGATE_API_KEYS=keys[1],
        LMGATE_DEBUG_STREAM_BATCH_MS=str(BATCH_MS),
        LMGATE_USAGE_FLUSH_SECONDS=str(FLUSH_S),
        **settings,
    )
    child = kids.start(name, argv, env=env, cwd=home)
    wait_http(child, url + "/health", timeout=600)
    admin_call(url + "/admin/models/activate", keys[0], MODEL)
    return url, child, out


async def _requests(url: str, key: str, scenario: str, n: int, max_tokens: int) -> None:
    """`n` requests of one scenario, `CONCURRENCY` at a time; any failure stops the bench."""
    body = request_body(stream=scenario == "stream", max_tokens=max_tokens)
    work: Callable[[Target, bytes, Samples], Awaitable[None]] = (
        stream if scenario == "stream" else call
    )
    samples = Samples()
    async with open_session(key, CONCURRENCY, timeout=600) as session:
        target = Target("lmgate", url, session)
        queue = iter(range(n))

        async def client() -> None:
            for _ in queue:
                await work(target, body, samples)

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    if samples.errors:
        raise RuntimeError(f"{samples.errors} of {n} {scenario} requests to {url} failed")


async def count_per_request(
    url: str, child: Child, out: Path, key: str, args: argparse.Namespace, settle: float
) -> dict[str, float]:
    """Instructions per request of each scenario, for one gateway."""
    await asyncio.to_thread(_control, "-i", "on", str(child.pid))
    for scenario in SCENARIOS:  # warm-up: pools, caches, every code path once
        await _requests(url, key, scenario, args.warmup_requests, args.chunks)
    known = set(out.parent.glob(out.name + ".*"))
    counts = {}
    for scenario in SCENARIOS:
        await asyncio.to_thread(_control, "-z", str(child.pid))
        await _requests(url, key, scenario, args.requests, args.chunks)
        await asyncio.sleep(settle)
        await asyncio.to_thread(_control, "-d", str(child.pid))
        counts[scenario] = _dumped(out, known) / args.requests
    return counts


def count_each(
    gateways: dict[str, tuple[str, Child, Path]], key: str, args: argparse.Namespace, settle: float
) -> dict[str, dict[str, float]]:
    """Instructions per request of every gateway, by name; counted at once, since callgrind's
    count of one process does not depend on what the others do."""

    async def every() -> list[dict[str, float]]:
        return await asyncio.gather(
            *(count_per_request(u, c, o, key, args, settle) for u, c, o in gateways.values())
        )

    return dict(zip(gateways, asyncio.run(every()), strict=True))


def run(args: argparse.Namespace) -> dict[str, Any]:
    gone = missing_tools()
    if gone:
        raise RuntimeError(f"--instructions needs {' and '.join(gone)} (Debian: valgrind)")
    keys = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    settings = {"off": NO_USAGE, "usage only": {}, "usage + stream": {}}
    settle = BATCH_MS / 1000.0 + 5.0  # after the last request: a batch tick, for its events
    with (
        tempfile.TemporaryDirectory(prefix="lmgate-obs-instr-") as tmp,
        Children(Path(tmp)) as kids,
    ):
        direct = start_upstream(kids, args, None)
        names = list(settings)
        gateways = {
            name: gateway_under_callgrind(
                kids, Path(tmp), f"gw-{i + 1}", direct, keys, settings[name]
            )
            for i, name in enumerate(names)
        }
        url, _, _ = gateways["usage + stream"]
        listeners, _ = start_listeners(kids, "listeners", url, keys[0], args, None, timeout=600)
        started = time.monotonic()

        counted = count_each(gateways, keys[1], args, settle)
        seen = stop_listeners(listeners)
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": "instructions",
        "options": {
            "requests": args.requests,
            "warmup_requests": args.warmup_requests,
            "chunks": args.chunks,
            "chunk_delay_ms": args.chunk_delay_ms,
            "subscribers": args.subscribers,
            "slowdown": SLOWDOWN,
            "batch_ms": BATCH_MS,
            "flush_seconds": FLUSH_S,
        },
        "instructions_per_request": counted,
        "cost_percent": {
            name: {s: _cost(counted["off"][s], counted[name][s]) for s in SCENARIOS}
            for name in names[1:]
        },
        "subscribers": seen,
        "seconds": round(time.monotonic() - started, 1),
    }


def _cost(base: float, value: float) -> float:
    return round((value / base - 1.0) * 100.0, 2)


def table(doc: dict[str, Any]) -> str:
    counted, costs, opts = doc["instructions_per_request"], doc["cost_percent"], doc["options"]
    names = list(counted)
    head = "".join(f"{n:>16}{'cost' if i else '':>9}" for i, n in enumerate(names))
    rows = [f"{'instructions per request':26}{head}".rstrip()]
    for scenario in SCENARIOS:
        label = scenario
        if scenario == "stream" and opts["chunk_delay_ms"]:
            label = f"stream, {opts['chunk_delay_ms']:g} ms apart"
        cells = ""
        for name in names:
            cost = f"{costs[name][scenario]}%" if name in costs else ""
            cells += f"{counted[name][scenario] / 1000:>15.1f}k{cost:>9}"
        rows.append(f"{label:26}{cells}")
    seen = doc["subscribers"]
    rows.append(
        f"callgrind, {opts['requests']} requests per scenario after {opts['warmup_requests']} "
        f"of warm-up; batch stretched {opts['slowdown']}x to {opts['batch_ms']:.0f} ms, "
        f"usage flushed every {opts['flush_seconds']:.0f} s"
    )
    rows.append(
        f"{opts['subscribers']} subscribers saw {seen.get('events')} events, lost "
        f"{seen.get('lost')}; kernel time (socket writes) is not counted"
    )
    return "\n".join(rows)
