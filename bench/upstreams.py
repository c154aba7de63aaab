"""Several upstreams behind one gateway: what routing across three costs against one, and a
failover run.

    python -m bench.upstreams                     # about a minute
    python -m bench.upstreams --requests 500 --concurrency 8

Three fake upstreams (`bench/fake_upstream.py`, answering in microseconds, each listing the
same model; each names itself in its answers' `id`, so the client sees which one answered) and
two gateways: one in front of the first upstream alone, one in front of all three (the
scheduler spreads the requests by free slots). Both get the same load, alternated with calling
the first upstream directly: non-streaming calls and whole streams at `--concurrency`,
measured as throughput and latency, and each gateway's figures as ratios against direct in
the same run (its share of direct's requests/s, the milliseconds it adds at p50 and p99).
Then the failover run: load on the three-upstream gateway, whose model lists are read once a
minute only, while one upstream is killed halfway: requests it refuses are admitted once more
on another, its circuit opens, and the report counts the answers that failed and how many of
those were streams already under way from the killed upstream (the target: all of them), and
the longest answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import fake_upstream
from bench.aio import run
from bench.observability import child_env, write_results
from bench.processes import Children, free_port, wait_http

KEY = "bench-admin-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
BODY = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}
ID = b"chatcmpl-"
PLAIN_TAG = b"bench"  # the fake upstream's own id tail; a named one puts its name there


class NamedUpstream(fake_upstream.FakeUpstream):
    """The fake upstream with its name (five characters, as long as the id tail it replaces,
    so every frame keeps its length) in each answer's `id`."""

    tag = PLAIN_TAG

    def __init__(self, chunks: int, chunk_delay: float) -> None:
        super().__init__(chunks, chunk_delay)
        self.completion = self.completion.replace(ID + PLAIN_TAG, ID + self.tag)

    def build(self, chunks: int) -> list[bytes]:
        return [f.replace(ID + PLAIN_TAG, ID + self.tag) for f in super().build(chunks)]


def _name(i: int) -> str:
    return f"up{i:03d}"


def _serve_upstream(name: str, argv: list[str]) -> None:
    """`python -m bench.upstreams upstream NAME --port P ...`: one named fake upstream."""
    if len(name) != len(PLAIN_TAG):
        raise SystemExit(f"an upstream's name has {len(PLAIN_TAG)} characters: {name!r}")
    named = type("NamedUpstream", (NamedUpstream,), {"tag": name.encode()})
    sys.argv = [f"python -m bench.upstreams upstream {name}", *argv]
    fake_upstream.main(named, prog=sys.argv[0], description=NamedUpstream.__doc__)


def _upstream(kids: Children, i: int) -> tuple[str, Any]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.upstreams", "upstream", _name(i), "--port", str(port)]
    child = kids.start(
        _name(i), [*argv, "--chunks", "10", "--chunk-delay-ms", "1"], env=child_env()
    )
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


@dataclass(slots=True)
class Answer:
    """One request as its client saw it."""

    stream: bool
    upstream: str | None  # the upstream whose answer (or first event) came; None: no answer
    first: float | None  # when its first body bytes came (perf_counter)
    failed: bool  # not a 200, or a stream that did not end with [DONE]
    why: str = ""  # a failure's status and the end of what came


def _who(data: bytes) -> str | None:
    at = data.find(ID)
    return data[at + len(ID) : at + len(ID) + len(PLAIN_TAG)].decode() if at >= 0 else None


async def _load(
    url: str,
    total: int,
    concurrency: int,
    stream: bool,
    stop: asyncio.Event | None = None,
    answers: list[Answer] | None = None,
) -> dict[str, Any]:
    """`total` requests (or until `stop`) from `concurrency` clients; latencies, failures and
    the answers each upstream gave (and every answer in `answers`, when given)."""
    body = orjson.dumps({**BODY, "stream": stream})
    latencies: list[float] = []
    served: dict[str, int] = {}
    failed = 0
    sent = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failed, sent
        while sent < total and not (stop is not None and stop.is_set()):
            sent += 1
            begun = time.perf_counter()
            first: float | None = None
            data = b""
            status = 0
            try:
                async with session.post(
                    url + "/v1/chat/completions", data=body, headers=HEADERS
                ) as resp:
                    status = resp.status
                    async for chunk in resp.content.iter_any():
                        if first is None:
                            first = time.perf_counter()
                        data += chunk
                    broken = resp.status != 200 or (stream and b"[DONE]" not in data)
            except aiohttp.ClientError as exc:
                broken = True
                data += repr(exc).encode()
            latencies.append(time.perf_counter() - begun)
            failed += broken
            who = _who(data)
            if who is not None and not broken:
                served[who] = served.get(who, 0) + 1
            if answers is not None:
                why = f"{status} {data[-160:].decode(errors='replace')}" if broken else ""
                answers.append(Answer(stream, who, first, broken, why))

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
        "served": dict(sorted(served.items())),
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


def _against(f: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    """A gateway's figures against calling the upstream directly in the same run."""
    return {
        "perSecondShare": round(f["perSecond"] / direct["perSecond"], 3),
        "addedP50Ms": round(f["p50Ms"] - direct["p50Ms"], 2),
        "addedP99Ms": round(f["p99Ms"] - direct["p99Ms"], 2),
    }


async def _compare(args: argparse.Namespace, targets: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario, stream in (("calls", False), ("streams", True)):
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # alternated, so drift on the machine hits all alike
            for name, url in targets.items():
                per_round = args.requests // args.rounds
                rounds[name].append(await _load(url, per_round, args.concurrency, stream))
        figures: dict[str, dict[str, Any]] = {}
        for name, results in rounds.items():
            served: dict[str, int] = {}
            for r in results:
                for who, count in r["served"].items():
                    served[who] = served.get(who, 0) + count
            figures[name] = {
                "perSecond": round(statistics.median(r["perSecond"] for r in results), 1),
                "p50Ms": round(statistics.median(r["p50Ms"] for r in results), 2),
                "p99Ms": round(statistics.median(r["p99Ms"] for r in results), 2),
                "failed": sum(r["failed"] for r in results),
                "served": dict(sorted(served.items())),
            }
        for name, f in figures.items():
            if name != "direct":
                f["vsDirect"] = _against(f, figures["direct"])
        out[scenario] = figures
    return out


async def _failover(
    args: argparse.Namespace, url: str, victim: tuple[str, Any], name: str
) -> dict[str, Any]:
    stop = asyncio.Event()
    killed_at: list[float] = []

    async def kill_halfway() -> None:
        await asyncio.sleep(args.failover_seconds / 2)
        victim[1].proc.kill()
        killed_at.append(time.perf_counter())
        await asyncio.sleep(args.failover_seconds / 2)
        stop.set()

    answers: list[Answer] = []
    killer = asyncio.create_task(kill_halfway())
    calls, streams = await asyncio.gather(
        _load(url, 10**9, args.concurrency, False, stop, answers),
        _load(url, 10**9, max(1, args.concurrency // 2), True, stop, answers),
    )
    await killer
    failed = [a for a in answers if a.failed]
    # A stream whose first event came from the killed upstream: it was under way there (that
    # upstream sent nothing after its death), the one kind of answer that cannot be moved.
    under_way = [a for a in failed if a.stream and a.upstream == name and a.first is not None]
    # Requests the killed upstream had read and not yet answered when it died: the gateway's
    # error names it (it closed their connections with no reset: it had read them), and they
    # are not sent again, since a request is never sent twice.
    unanswered = [a for a in failed if a not in under_way and victim[0] in a.why]
    retried = await _metric(url, "lmgate_upstream_requests_total")
    return {
        "killed": name,
        "calls": calls,
        "streams": streams,
        "failed": len(failed),
        "failedStreamingFromKilled": len(under_way),
        "failedUnansweredByKilled": len(unanswered),
        "retried": sum(v for k, v in retried.items() if 'outcome="retried"' in k),
        "failures": [
            {
                "stream": a.stream,
                "upstream": a.upstream,
                "firstAfterKillMs": None
                if a.first is None
                else round((a.first - killed_at[0]) * 1000, 2),
                "why": a.why,
            }
            for a in failed
        ],
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.upstreams", description=__doc__)
    p.add_argument("--requests", type=int, default=2000, help="per target and scenario")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--failover-seconds", type=float, default=10.0)
    p.add_argument(
        "--slots",
        type=int,
        default=64,
        help="LMGATE_MODEL_SLOTS of every gateway: above --concurrency, nothing queues, so the "
        "figures are routing's cost and not the scheduler's queue",
    )
    p.add_argument("--json", dest="json_path", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["upstream"] and len(given) >= 2:
        _serve_upstream(given[1], given[2:])
        return 0
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="lmgate-bench-") as tmp, Children(Path(tmp)) as kids:
        ups = [_upstream(kids, i) for i in range(3)]
        urls = [u for u, _ in ups]
        named = [f"{_name(i)}={u}" for i, u in enumerate(urls)]
        slots = str(args.slots)
        one = _gateway(kids, Path(tmp), "one", [urls[0]], LMGATE_MODEL_SLOTS=slots)
        three = _gateway(kids, Path(tmp), "three", named, LMGATE_MODEL_SLOTS=slots)
        failover = _gateway(
            kids, Path(tmp), "failover", named, LMGATE_MODEL_SLOTS=slots, LMGATE_SYNC_INTERVAL="60"
        )
        run(_listed(three, 3))
        run(_listed(failover, 3))
        doc: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "loadAverage": round(os.getloadavg()[0], 2),
            "options": vars(args) | {"json_path": str(args.json_path or "")},
            "compare": run(_compare(args, {"direct": urls[0], "one": one, "three": three})),
            "failover": run(_failover(args, failover, ups[1], _name(1))),
        }
    print(table(doc))
    write_results(doc, "upstreams", args.json_path)
    return 0


def table(doc: dict[str, Any]) -> str:
    head = f"{'':16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}"
    lines = [f"load average at the start: {doc['loadAverage']}"]
    lines.append(head + f"{'x direct':>10}{'+p50 ms':>9}{'+p99 ms':>9}  answered by")
    for scenario, targets in doc["compare"].items():
        for name, f in targets.items():
            row = f"{scenario + ' ' + name:16}{f['perSecond']:>9}{f['p50Ms']:>9}{f['p99Ms']:>9}"
            row += f"{f['failed']:>8}"
            vs = f.get("vsDirect")
            if vs is not None:
                row += (
                    f"{vs['perSecondShare']:>9}x{vs['addedP50Ms']:>+9.2f}{vs['addedP99Ms']:>+9.2f}"
                )
                row += "  " + " ".join(f"{who} {n}" for who, n in f["served"].items())
            lines.append(row)
    for scenario, targets in doc["compare"].items():
        share = targets["three"]["perSecond"] / targets["one"]["perSecond"]
        lines.append(f"{scenario}: three upstreams give {share:.2f}x the requests/s of one")
    fo = doc["failover"]
    lines.append(f"failover: {fo['killed']} killed halfway through the load")
    for kind in ("calls", "streams"):
        f = fo[kind]
        lines.append(
            f"  {kind:8}{f['requests']:>6} answers, {f['failed']} failed; p50 {f['p50Ms']} ms, "
            f"p99 {f['p99Ms']} ms, longest {f['maxMs']} ms"
        )
    other = fo["failed"] - fo["failedStreamingFromKilled"] - fo["failedUnansweredByKilled"]
    lines.append(
        f"  failed: {fo['failed']}; streams already under way from {fo['killed']}: "
        f"{fo['failedStreamingFromKilled']} (the target: only these); read by {fo['killed']} "
        f"and not yet answered: {fo['failedUnansweredByKilled']}; other: {other}"
    )
    lines.append(f"  requests admitted once more on another upstream: {fo['retried']:g}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
