"""Several upstreams behind one gateway: what routing across three costs against one, and a
failover run.

    python -m bench.upstreams                     # about a minute
    python -m bench.upstreams --requests 500 --concurrency 8

Three fake upstreams (`bench/fake_upstream.py`, answering in microseconds, each listing the
same model) and two gateways: one in front of the first upstream alone, one in front of all
three (the scheduler spreads the requests by free slots). Both get the same load, alternated:
non-streaming calls and whole streams at `--concurrency`, measured as throughput and
latency (and each gateway's figures against calling an upstream directly). Then the failover
run: load on the three-upstream gateway, whose model lists are read once a minute only, while
one upstream is killed halfway: requests it refuses are admitted once more on another, its
circuit opens, and the report counts answers that failed (streams that had started on it end
with an error event) and the longest answer.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.aio import run
from bench.observability import child_env, write_results
from bench.processes import Children, free_port, wait_http

KEY = "bench-admin-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}


def _upstream(kids: Children, name: str) -> tuple[str, Any]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.fake_upstream", "--port", str(port)]
    child = kids.start(name, [*argv, "--chunks", "10", "--chunk-delay-ms", "1"], env=child_env())
    url = f"http://127.0.0.1:{port}"
    wait_http(child, url + "/v1/models")
    return url, child


def _gateway(kids: Children, tmp: Path, name: str, upstreams: list[str], **env: str) -> str:
    port = free_port()
    work = tmp / name
    work.mkdir()
    argv = [sys.executable, "-m", "lmgate", "serve", "--port", str(port)]
    for flag in upstreams:
        argv += ["--upstream", flag]
    argv += ["--data-dir", str(work / "data")]
    child = kids.start(name, argv, env=child_env(LMGATE_ADMIN_KEY=KEY, **env), cwd=work)
    url = f"http://127.0.0.1:{port}"
    wait_http(child, url + "/health")
    return url


async def _listed(url: str, count: int) -> None:
    """Until the gateway's merged list says `count` upstreams offer the model."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            async with session.get(url + "/v1/models", headers=HEADERS) as resp:
                body = orjson.loads(await resp.read())
            entries = body.get("data") or []
            where = entries[0].get("lmgate", {}).get("upstreams", ["one"]) if entries else []
            if len(where) >= count:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never listed the model on {count} upstreams")


async def _load(
    url: str, total: int, concurrency: int, stream: bool, stop: asyncio.Event | None = None
) -> dict[str, Any]:
    """`total` requests (or until `stop`) from `concurrency` clients; latencies and failures."""
    body = orjson.dumps({**BODY, "stream": stream})
    latencies: list[float] = []
    failed = 0
    sent = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failed, sent
        while sent < total and not (stop is not None and stop.is_set()):
            sent += 1
            begun = time.perf_counter()
            try:
                async with session.post(
                    url + "/v1/chat/completions", data=body, headers=HEADERS
                ) as resp:
                    data = await resp.read()
                    broken = resp.status != 200 or (stream and b"[DONE]" not in data)
            except aiohttp.ClientError:
                broken = True
            latencies.append(time.perf_counter() - begun)
            failed += broken

    begun = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    seconds = time.perf_counter() - begun
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "failed": failed,
        "perSecond": round(len(latencies) / seconds, 1),
        "p50Ms": round(statistics.median(ordered) * 1000, 2),
        "p99Ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
        "maxMs": round(ordered[-1] * 1000, 2),
    }


async def _metric(url: str, name: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/metrics", headers=HEADERS) as resp:
            text = (await resp.read()).decode()
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(name)
    }


async def _compare(args: argparse.Namespace, targets: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario, stream in (("calls", False), ("streams", True)):
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # alternated, so drift on the machine hits all alike
            for name, url in targets.items():
                per_round = args.requests // args.rounds
                rounds[name].append(await _load(url, per_round, args.concurrency, stream))
        out[scenario] = {
            name: {
                "perSecond": round(statistics.median(r["perSecond"] for r in results), 1),
                "p50Ms": round(statistics.median(r["p50Ms"] for r in results), 2),
                "p99Ms": round(statistics.median(r["p99Ms"] for r in results), 2),
                "failed": sum(r["failed"] for r in results),
            }
            for name, results in rounds.items()
        }
    return out


async def _failover(args: argparse.Namespace, url: str, victim: Any) -> dict[str, Any]:
    stop = asyncio.Event()

    async def kill_halfway() -> None:
        await asyncio.sleep(args.failover_seconds / 2)
        victim.proc.kill()
        await asyncio.sleep(args.failover_seconds / 2)
        stop.set()

    killer = asyncio.create_task(kill_halfway())
    calls, streams = await asyncio.gather(
        _load(url, 10**9, args.concurrency, False, stop),
        _load(url, 10**9, max(1, args.concurrency // 2), True, stop),
    )
    await killer
    retried = await _metric(url, "lmgate_upstream_requests_total")
    return {
        "calls": calls,
        "streams": streams,
        "retried": sum(v for k, v in retried.items() if 'outcome="retried"' in k),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.upstreams", description=__doc__)
    p.add_argument("--requests", type=int, default=2000, help="per target and scenario")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--failover-seconds", type=float, default=10.0)
    p.add_argument("--json", dest="json_path", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="lmgate-bench-") as tmp, Children(Path(tmp)) as kids:
        ups = [_upstream(kids, f"upstream-{i}") for i in range(3)]
        urls = [u for u, _ in ups]
        one = _gateway(kids, Path(tmp), "one", [urls[0]])
        three = _gateway(kids, Path(tmp), "three", [f"u{i}={u}" for i, u in enumerate(urls)])
        failover = _gateway(
            kids,
            Path(tmp),
            "failover",
            [f"u{i}={u}" for i, u in enumerate(urls)],
            LMGATE_SYNC_INTERVAL="60",
        )
        run(_listed(three, 3))
        run(_listed(failover, 3))
        doc: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "compare": run(_compare(args, {"direct": urls[0], "one": one, "three": three})),
            "failover": run(_failover(args, failover, ups[1][1])),
        }
    print(table(doc))
    write_results(doc, "upstreams", args.json_path)
    return 0


def table(doc: dict[str, Any]) -> str:
    lines = [f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}"]
    for scenario, targets in doc["compare"].items():
        for name, f in targets.items():
            label = f"{scenario} {name}"
            lines.append(
                f"{label:22}{f['perSecond']:>10}{f['p50Ms']:>10}{f['p99Ms']:>10}{f['failed']:>8}"
            )
    fo = doc["failover"]
    for kind in ("calls", "streams"):
        f = fo[kind]
        lines.append(
            f"failover {kind:13}{f['perSecond']:>10}{f['p50Ms']:>10}{f['p99Ms']:>10}"
            f"{f['failed']:>8}  of {f['requests']}, longest {f['maxMs']} ms"
        )
    lines.append(f"requests admitted once more on another upstream: {fo['retried']:g}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
