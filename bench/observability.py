"""What observability costs: lmgate with usage accounting on and N `/debug/stream` subscribers
reading every event, against the same lmgate with accounting off and nobody subscribed (and,
to tell the two costs apart, one with accounting on and nobody subscribed).

The gateways run at once against one upstream, pinned to the same core, and get the same
load in alternating rounds (A B C, C B A ...), so drift on a shared machine lands on all. The
upstream answers in microseconds and by default sends a whole stream at once (the worst case:
no time between tokens to hide in), so the gateway's core is the bottleneck and the ratio of
throughputs is the cost. `--chunk-delay-ms 2 --stream-concurrency 60` paces tokens instead.
Events, metrics, Prometheus and the request log stay on in all: they are not optional.

    python -m bench.observability            # about a minute
    python -m bench.observability --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import aio
from bench.load import Samples, Target, call, open_session, request_body, stream, timed_clients
from bench.processes import Child, Children, free_port, plan_cpus, wait_http

REPO = Path(__file__).resolve().parent.parent
OFF, USAGE, ON = "off", "usage only", "usage + stream"
NAMES = (OFF, USAGE, ON)
MODEL = {"modelKey": "qwen/qwen3-4b", "defaultInference": {"temperature": 0.2}}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


def _admin(url: str, key: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url,
        data=orjson.dumps(body) if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return orjson.loads(resp.read())


def _gateway(kids: Children, tmp: Path, name: str, upstream: str, keys: tuple[str, str],
             cpus: frozenset[int] | None, **settings: str) -> tuple[str, int]:  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    work = tmp / name.replace(" ", "-")
    work.mkdir()
    argv = [sys.executable, "-m", "lmgate", "serve", "--port", str(port), "--upstream", upstream]
    argv += ["--data-dir", str(work / "data")]
    env = _env(LMGATE_ADMIN_KEY=keys[0], LMGATE_API_KEYS=keys[1], **settings)
    child = kids.start(name, argv, env=env, cwd=work, cpus=cpus)
    wait_http(child, url + "/health")
    _admin(url + "/admin/models/activate", keys[0], MODEL)
    return url, child.pid


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _listeners(kids: Children, url: str, key: str, n: int, cpus: frozenset[int] | None) -> Child:
    argv = [sys.executable, "-m", "bench.listeners", url + "/debug/stream", key, str(n)]
    child = kids.start("listeners", argv, env=_env(), cpus=cpus, pipe_stdout=True)
    said = child.read_line(30)
    if said != "ready":
        raise RuntimeError(f"the subscribers did not connect ({said}):\n{child.log_tail()}")
    return child


async def _drive(
    args: argparse.Namespace, urls: dict[str, str], pids: dict[str, int], key: str
) -> dict[str, Any]:
    plain = request_body(stream=False, max_tokens=args.chunks)
    streamed = request_body(stream=True, max_tokens=args.chunks)
    pool = max(args.concurrency, args.stream_concurrency)
    sessions = {name: open_session(key, pool) for name in urls}
    targets = {name: Target(name, url, sessions[name]) for name, url in urls.items()}
    calls = {name: Samples() for name in urls}
    streams = {name: Samples() for name in urls}
    cpu = {(scenario, name): 0.0 for scenario in ("calls", "streams") for name in urls}

    async def measured(scenario: str, name: str, clients: int, work: Any) -> None:
        samples = (calls if scenario == "calls" else streams)[name]
        before = cpu_seconds(pids[name])
        await timed_clients(targets[name], samples, clients, window, work)
        cpu[scenario, name] += cpu_seconds(pids[name]) - before

    async def do_call(t: Target, s: Samples) -> None:
        await call(t, plain, s)

    async def do_stream(t: Target, s: Samples) -> None:
        await stream(t, streamed, s)

    try:
        for target in targets.values():  # warm up: pools, caches, the first code paths
            await timed_clients(target, Samples(), args.concurrency, args.warmup, do_call)
            await timed_clients(target, Samples(), args.stream_concurrency, args.warmup, do_stream)
        window = args.duration / args.rounds
        for round_ in range(args.rounds):
            order = list(NAMES) if round_ % 2 == 0 else list(reversed(NAMES))
            for name in order:
                await measured("calls", name, args.concurrency, do_call)
            for name in reversed(order):
                await measured("streams", name, args.stream_concurrency, do_stream)
    finally:
        for session in sessions.values():
            await session.close()
    return {"calls": calls, "streams": streams, "cpu": cpu}


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds else 0.0


def _per(seconds: float, count: int) -> float | None:
    return round(seconds / count * 1e6, 1) if count else None


def figures(raw: dict[str, Any]) -> dict[str, Any]:
    """Rates as measured, and the gateway's CPU time per request: its capacity on a core of its
    own, whatever else the machine was doing (here the load generator, the upstream and the
    subscribers share the other core)."""
    out: dict[str, Any] = {}
    for name in NAMES:
        calls, streams = raw["calls"][name], raw["streams"][name]
        out[name] = {
            "requests_per_s": _rate(len(calls.latencies), calls.elapsed),
            "streams_per_s": _rate(len(streams.first_chunk), streams.elapsed),
            "events_per_s": _rate(sum(streams.events), streams.elapsed),
            "cpu_us_per_request": _per(raw["cpu"]["calls", name], len(calls.latencies)),
            "cpu_us_per_stream": _per(raw["cpu"]["streams", name], len(streams.first_chunk)),
            "events_per_stream": sorted(set(streams.events)),
            "requests": len(calls.latencies) + len(streams.first_chunk),
            "errors": calls.errors + streams.errors,
        }
    for name in (USAGE, ON):
        cost: dict[str, float | None] = {}
        for metric in ("requests_per_s", "streams_per_s", "events_per_s"):
            off, on = out[OFF][metric], out[name][metric]
            cost[metric] = round((1 - on / off) * 100, 2) if off else None
        for metric in ("cpu_us_per_request", "cpu_us_per_stream"):  # capacity lost
            off, on = out[OFF][metric], out[name][metric]
            cost[metric] = round((1 - off / on) * 100, 2) if off and on else None
        out[name]["cost_percent"] = cost
    return out


def table(doc: dict[str, Any]) -> str:
    f = doc["figures"]
    rows = [f"{'':24}{OFF:>12}{USAGE:>12}{'cost':>8}{ON:>16}{'cost':>8}"]
    for metric, label in (
        ("requests_per_s", "requests/s (16 clients)"),
        ("streams_per_s", f"streams/s ({doc['options']['stream_concurrency']} at once)"),
        ("events_per_s", "SSE events/s relayed"),
        ("cpu_us_per_request", "gateway CPU/request, us"),
        ("cpu_us_per_stream", "gateway CPU/stream, us"),
    ):
        cells = f"{f[OFF][metric]:>12}{f[USAGE][metric]:>12}{f[USAGE]['cost_percent'][metric]:>7}%"
        cells += f"{f[ON][metric]:>16}{f[ON]['cost_percent'][metric]:>7}%"
        rows.append(f"{label:24}{cells}")
    rows.append(
        f"{'events per stream':24}{f[OFF]['events_per_stream']!s:>12}"
        f"{f[USAGE]['events_per_stream']!s:>12}{f[ON]['events_per_stream']!s:>24}"
        "   (accounting on: the usage chunk lmgate asked for is stripped)"
    )
    seen = doc["subscribers"]
    rows.append(
        f"{doc['options']['subscribers']} subscribers saw {seen.get('events')} events, "
        f"lost {seen.get('lost')}; usage recorded {doc['usage_recorded']} of "
        f"{f[ON]['requests']} measured requests (plus warm-up)"
    )
    return "\n".join(rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run")
    p.add_argument("--subscribers", type=int, default=10)
    p.add_argument("--duration", type=float, help="measured seconds per scenario and gateway")
    p.add_argument("--rounds", type=int, help="alternations each scenario is split into")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--stream-concurrency", type=int, default=10)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=0.0,
        help="pause between stream chunks (0: a whole stream at once, the worst case per token)",
    )
    p.add_argument("--warmup", type=float, help="seconds of unmeasured load per gateway")
    p.add_argument("--json", dest="json_path", type=Path)
    p.add_argument("--no-pin", dest="pin", action="store_false")
    args = p.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (4.0 if quick else 16.0)
    args.rounds = args.rounds or (2 if quick else 8)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 2.0)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    cpus = plan_cpus(args.pin)
    keys = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    with (
        tempfile.TemporaryDirectory(prefix="lmgate-obs-bench-") as tmp,
        Children(Path(tmp)) as kids,
    ):
        port = free_port()
        argv = [sys.executable, "-m", "bench.usage_upstream", "--port", str(port)]
        argv += ["--chunks", str(args.chunks), "--chunk-delay-ms", str(args.chunk_delay_ms)]
        upstream = kids.start("upstream", argv, env=_env(), cpus=cpus["upstream"])
        direct = f"http://127.0.0.1:{port}"
        wait_http(upstream, direct + "/v1/models")
        off = {"LMGATE_USAGE_ACCOUNTING": "false", "LMGATE_LMSTUDIO_LOG_DIR": "off"}
        started = {
            OFF: _gateway(kids, Path(tmp), OFF, direct, keys, cpus["lmgate"], **off),
            USAGE: _gateway(kids, Path(tmp), USAGE, direct, keys, cpus["lmgate"]),
            ON: _gateway(kids, Path(tmp), ON, direct, keys, cpus["lmgate"]),
        }
        urls = {name: url for name, (url, _) in started.items()}
        pids = {name: pid for name, (_, pid) in started.items()}
        listeners = _listeners(kids, urls[ON], keys[0], args.subscribers, cpus["upstream"])
        if cpus["load"]:
            os.sched_setaffinity(0, cpus["load"])
        raw = aio.run(_drive(args, urls, pids, keys[1]))
        usage = _admin(urls[ON] + "/admin/usage", keys[0])
        listeners.stop()
        assert listeners.proc.stdout is not None
        lines = listeners.proc.stdout.read().decode().split()
        seen = orjson.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpus": {k: sorted(v) if v else None for k, v in cpus.items()},
        "figures": figures(raw),
        "subscribers": seen,
        "usage_recorded": usage["totals"]["requests"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        doc = run(args)
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(table(doc))
    stamp = doc["started"].replace("-", "").replace(":", "")
    out = args.json_path or REPO / "bench" / "results" / f"observability-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
