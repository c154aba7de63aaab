"""What the shared queue costs a non-primary worker: `python -m bench.scheduler_workers`.

With `serve --workers N` the primary hosts the one scheduler core and every other worker asks
it over a Unix socket. This measures, per request, the wall time of the shell's
`before_forward` + `on_finish` (admitted on arrival, nothing waiting) in two processes: a
primary hosting the core in a child process, and this process as a non-primary worker; then
the same with the in-process core of a single worker. The difference is the added latency of
a request that another worker accepted: one round trip for the verdict (the `finish` is sent
without waiting). `--concurrent C` runs C requests at once to show the host's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lmgate.exchange import Exchange
from lmgate.gateway import Gateway
from lmgate.hooks import ProxyRequest
from lmgate.settings import Settings
from lmgate.upstream.capabilities import Capabilities
from lmgate.upstream.inventory import Instance, UpstreamModel
from lmgate.workers.slot import Worker

SLOTS = 10_000  # never full: every request is admitted on arrival


def _gateway(data: Path, worker: Worker) -> Gateway:
    gw = Gateway.build(Settings(data_dir=data, _env_file=None), worker)
    watcher = gw.watcher
    watcher.caps = Capabilities(reachable=True, native_v1=True)
    hot = Instance("hot", "hot", {"parallel": SLOTS})
    watcher.models = {"hot": UpstreamModel("hot", "llm", (hot,))}
    watcher.instances = {"hot": hot}
    gw.scheduler.synced()
    return gw


def _host(run_dir: str, ready: multiprocessing.synchronize.Event) -> None:
    async def serve() -> None:
        with tempfile.TemporaryDirectory() as data:
            gw = _gateway(Path(data), Worker(0, 2, Path(run_dir), primary=True))
            task = asyncio.get_running_loop().create_task(gw.scheduler.run())
            await _until(lambda: (Path(run_dir) / "scheduler.sock").exists())
            ready.set()
            await task

    asyncio.run(serve())


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(3000):  # 30 s
        if check():
            return
        await asyncio.sleep(0.01)
    raise RuntimeError("timed out")


async def _one(gw: Gateway, i: int) -> float:
    ex = Exchange(str(i), "POST", "/v1/chat/completions", None, model="hot")
    request = ProxyRequest({}, "POST", "/v1/chat/completions", "chat", {"model": "hot"})
    start = time.perf_counter()
    await gw.scheduler.before_forward(ex, request)
    gw.scheduler.on_finish(ex)
    return time.perf_counter() - start


async def _measure(gw: Gateway, requests: int, concurrent: int) -> list[float]:
    times: list[float] = []
    for base in range(0, requests, concurrent):
        batch = range(base, min(requests, base + concurrent))
        times += await asyncio.gather(*(_one(gw, i) for i in batch))
    return times


async def _remote(run_dir: Path, requests: int, concurrent: int) -> list[float]:
    with tempfile.TemporaryDirectory() as data:
        gw = _gateway(Path(data), Worker(1, 2, run_dir, primary=False))
        client = asyncio.get_running_loop().create_task(gw.scheduler.run())
        remote = gw.scheduler.remote
        assert remote is not None
        await _until(lambda: remote.connected)
        await _measure(gw, 200, concurrent)  # warm up
        times = await _measure(gw, requests, concurrent)
        client.cancel()
        gw.db.close()
        return times


async def _local(requests: int, concurrent: int) -> list[float]:
    with tempfile.TemporaryDirectory() as data:
        gw = _gateway(Path(data), Worker())
        await _measure(gw, 200, concurrent)
        times = await _measure(gw, requests, concurrent)
        gw.db.close()
        return times


def _report(name: str, times: list[float], wall: float | None = None) -> None:
    times = sorted(times)
    p50 = statistics.median(times) * 1e6
    p99 = times[int(len(times) * 0.99) - 1] * 1e6
    line = f"{name:<32} p50 {p50:8.1f} µs   p99 {p99:8.1f} µs"
    if wall is not None:
        line += f"   {len(times) / wall:8.0f} requests/s"
    print(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scheduler_workers", description=__doc__)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--concurrent", type=int, nargs="*", default=[1, 16])
    args = p.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as run_dir:
        ready = ctx.Event()
        host = ctx.Process(target=_host, args=(run_dir, ready), daemon=True)
        host.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("the host did not start")
            for concurrent in args.concurrent:
                started = time.perf_counter()
                local = asyncio.run(_local(args.requests, concurrent))
                _report(f"one worker, {concurrent} at once", local, time.perf_counter() - started)
                started = time.perf_counter()
                remote = asyncio.run(_remote(Path(run_dir), args.requests, concurrent))
                wall = time.perf_counter() - started
                _report(f"non-primary, {concurrent} at once", remote, wall)
                added = (statistics.median(remote) - statistics.median(local)) * 1e6
                print(f"{'added by the socket (p50)':<32}     {added:8.1f} µs")
        finally:
            host.terminate()
            host.join(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
