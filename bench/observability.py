"""What observability costs: lmgate with usage accounting on and N `/debug/stream` subscribers
reading every event, against the same lmgate with accounting off and nobody subscribed (and,
to tell the two costs apart, one with accounting on and nobody subscribed).

The gateways run at once against one upstream, pinned to the same core, and get the same
load in alternating rounds (A B C, C B A ...), so drift on a shared machine lands on all. The
upstream answers in microseconds and by default sends a whole stream at once (the worst case:
no time between tokens to hide in), so the gateway's core is the bottleneck and the ratio of
throughputs is the cost. `--chunk-delay-ms 2 --stream-concurrency 60` paces tokens instead.
Events, metrics, Prometheus and the request log stay on in all: they are not optional.

One process is a poor sample of its variant: two identical gateways measured in the same
rounds differ by 4-10 % in CPU per request (streams more than plain calls). So each variant
runs as `--instances` separate processes (own data dir, port and subscribers), every round
measures each instance of each variant once, and figures are pooled over the instances, with
their min-max beside. "off (control)" is a second "off" measured the same way: its "cost"
is the noise floor, the difference noise alone makes; a cost inside it is no measured cost.

    python -m bench.observability                 # about 2.5 minutes
    python -m bench.observability --quick         # a smoke run, one instance each
    python -m bench.observability --instructions  # counted by callgrind (bench/instructions.py)
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import aio
from bench.load import Samples, Target, call, open_session, request_body, stream, timed_clients
from bench.processes import Child, Children, free_port, plan_cpus, wait_http

REPO = Path(__file__).resolve().parent.parent
OFF, USAGE, ON, CONTROL = "off", "usage only", "usage + stream", "off (control)"
NAMES = (OFF, USAGE, ON, CONTROL)  # each round's order: the control as far from "off" as any
NO_USAGE = {"LMGATE_USAGE_ACCOUNTING": "false", "LMGATE_LMSTUDIO_LOG_DIR": "off"}
SETTINGS: dict[str, dict[str, str]] = {OFF: NO_USAGE, USAGE: {}, ON: {}, CONTROL: NO_USAGE}
METRICS = ("requests_per_s", "streams_per_s", "events_per_s")
CPU_METRICS = ("cpu_us_per_request", "cpu_us_per_stream")
# The one model the fake upstreams list (they serve any name): activating it needs no `force`,
# which revisions before that field would refuse (`bench.revisions` activates older ones too).
MODEL = {"modelKey": "bench-model", "defaultInference": {"temperature": 0.2}}
Slot = tuple[str, int]  # a variant and the index of one of its instances


@dataclass(slots=True)
class Gauged:
    """One gateway in one scenario, over all its measured windows: what the clients saw, and
    the CPU time the gateway used meanwhile."""

    samples: Samples = field(default_factory=Samples)
    cpu: float = 0.0


def _label(slot: Slot) -> str:
    """(`off (control)`, 2) -> `off-control-3`: a file name for one instance."""
    return re.sub(r"\W+", "-", slot[0]).strip("-") + f"-{slot[1] + 1}"


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


def admin_call(url: str, key: str, body: dict[str, Any] | None = None) -> Any:
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
    work = tmp / name
    work.mkdir()
    argv = [sys.executable, "-m", "lmgate", "serve", "--port", str(port), "--upstream", upstream]
    argv += ["--data-dir", str(work / "data")]
    env = child_env(LMGATE_ADMIN_KEY=keys[0], LMGATE_API_KEYS=keys[1], **settings)
    child = kids.start(name, argv, env=env, cwd=work, cpus=cpus)
    wait_http(child, url + "/health")
    admin_call(url + "/admin/models/activate", keys[0], MODEL)
    return url, child.pid


def start_upstream(kids: Children, args: argparse.Namespace, cpus: frozenset[int] | None) -> str:
    """The fake upstream (with its usage chunk) every variant talks to; its URL."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.usage_upstream", "--port", str(port)]
    argv += ["--chunks", str(args.chunks), "--chunk-delay-ms", str(args.chunk_delay_ms)]
    upstream = kids.start("upstream", argv, env=child_env(), cpus=cpus)
    url = f"http://127.0.0.1:{port}"
    wait_http(upstream, url + "/v1/models")
    return url


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _prioritise(pid: int, nice: int) -> bool:
    """Raise a process's scheduling priority (a negative nice value needs privileges)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except (OSError, AttributeError):
        return False
    return True


def start_listeners(
    kids: Children, name: str, url: str, key: str, args: argparse.Namespace,
    cpus: frozenset[int] | None, timeout: float = 30.0,
) -> tuple[Child, bool]:  # fmt: skip
    """The subscribers of one gateway, and whether they got the priority asked for.

    They share a core with the load generator, which always has work, so at equal priority
    they read late. The dashboards they stand for read promptly, from machines of their own;
    a higher priority on the shared core (`--listener-nice`) is the nearest this machine has."""
    argv = [sys.executable, "-m", "bench.listeners", url + "/debug/stream", key]
    child = kids.start(
        name, [*argv, str(args.subscribers)], env=child_env(), cpus=cpus, pipe_stdout=True
    )
    prioritised = args.listener_nice == 0 or _prioritise(child.pid, args.listener_nice)
    said = child.read_line(timeout)
    if said != "ready":
        raise RuntimeError(f"the subscribers did not connect ({said}):\n{child.log_tail()}")
    return child, prioritised


def stop_listeners(listeners: Child) -> dict[str, int]:
    """Stop a `bench.listeners` process and read what its subscribers saw."""
    listeners.stop()
    assert listeners.proc.stdout is not None
    lines = listeners.proc.stdout.read().decode().split()
    return orjson.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


async def _drive(
    args: argparse.Namespace, urls: dict[Slot, str], pids: dict[Slot, int], key: str
) -> dict[str, dict[Slot, Gauged]]:
    """Every round measures every slot once in each scenario, in the order of `urls` for calls
    and the reverse for streams; odd rounds reverse both, so each slot's mean position is the
    same and linear drift lands on all alike."""
    plain = request_body(stream=False, max_tokens=args.chunks)
    streamed = request_body(stream=True, max_tokens=args.chunks)
    pool = max(args.concurrency, args.stream_concurrency)
    sessions = {slot: open_session(key, pool) for slot in urls}
    targets = {slot: Target(_label(slot), url, sessions[slot]) for slot, url in urls.items()}
    raw = {scenario: {slot: Gauged() for slot in urls} for scenario in ("calls", "streams")}

    async def do_call(t: Target, s: Samples) -> None:
        await call(t, plain, s)

    async def do_stream(t: Target, s: Samples) -> None:
        await stream(t, streamed, s)

    load = {"calls": (args.concurrency, do_call), "streams": (args.stream_concurrency, do_stream)}

    async def measured(scenario: str, slot: Slot, seconds: float) -> None:
        gauged = raw[scenario][slot]
        clients, work = load[scenario]
        before = cpu_seconds(pids[slot])
        await timed_clients(targets[slot], gauged.samples, clients, seconds, work)
        gauged.cpu += cpu_seconds(pids[slot]) - before

    try:
        for target in targets.values():  # warm up: pools, caches, the first code paths
            for clients, work in load.values():
                await timed_clients(target, Samples(), clients, args.warmup, work)
        window = args.duration / (args.rounds * args.instances)
        slots = list(urls)
        for round_ in range(args.rounds):
            order = slots if round_ % 2 == 0 else slots[::-1]
            for slot in order:
                await measured("calls", slot, window)
            for slot in reversed(order):
                await measured("streams", slot, window)
    finally:
        for session in sessions.values():
            await session.close()
    return raw


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds else 0.0


def _per(seconds: float, count: int) -> float | None:
    return round(seconds / count * 1e6, 1) if count else None


def _pooled(calls: Sequence[Gauged], streams: Sequence[Gauged]) -> dict[str, Any]:
    """Figures over several gateways' windows: counts and CPU summed, over summed time."""
    done = sum(len(g.samples.latencies) for g in calls)
    streamed = sum(len(g.samples.first_chunk) for g in streams)
    events = [n for g in streams for n in g.samples.events]
    call_time = sum(g.samples.elapsed for g in calls)
    stream_time = sum(g.samples.elapsed for g in streams)
    return {
        "requests_per_s": _rate(done, call_time),
        "streams_per_s": _rate(streamed, stream_time),
        "events_per_s": _rate(sum(events), stream_time),
        "cpu_us_per_request": _per(sum(g.cpu for g in calls), done),
        "cpu_us_per_stream": _per(sum(g.cpu for g in streams), streamed),
        "events_per_stream": sorted(set(events)),
        "requests": done + streamed,
        "errors": sum(g.samples.errors for g in (*calls, *streams)),
    }


def figures(raw: dict[str, dict[Slot, Gauged]], instances: int) -> dict[str, Any]:
    """Rates as measured, and the gateway's CPU time per request: its capacity on a core of its
    own, whatever else the machine was doing (here the load generator, the upstream and the
    subscribers share the other core). Each variant's figures pool its instances; `spread` is
    the [min, max] of the instances' own figures (`instances`)."""
    out: dict[str, Any] = {}
    for name in NAMES:
        slots = [(name, i) for i in range(instances)]
        calls = [raw["calls"][slot] for slot in slots]
        streams = [raw["streams"][slot] for slot in slots]
        out[name] = _pooled(calls, streams)
        each = [_pooled([c], [s]) for c, s in zip(calls, streams, strict=True)]
        spread: dict[str, list[float] | None] = {}
        for metric in (*METRICS, *CPU_METRICS):
            values = [f[metric] for f in each if f[metric] is not None]
            spread[metric] = [min(values), max(values)] if values else None
        out[name]["spread"] = spread
        out[name]["instances"] = each
    for name in (USAGE, ON, CONTROL):
        cost: dict[str, float | None] = {}
        for metric in METRICS:
            off, on = out[OFF][metric], out[name][metric]
            cost[metric] = round((1 - on / off) * 100, 2) if off else None
        for metric in CPU_METRICS:  # capacity lost
            off, on = out[OFF][metric], out[name][metric]
            cost[metric] = round((1 - off / on) * 100, 2) if off and on else None
        out[name]["cost_percent"] = cost
    return out


def _short(value: float) -> str:
    """Whole numbers from 1000 up, so a cell stays narrow; below, as precise as the figure."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.1f}"


def _cell(figure: dict[str, Any], metric: str) -> str:
    """The pooled figure, then the instances' min-max when there are several."""
    spread = figure["spread"][metric]
    if spread is None or len(figure["instances"]) < 2:
        return str(figure[metric])
    return f"{figure[metric]} ({_short(spread[0])}-{_short(spread[1])})"


def _cost(figure: dict[str, Any], metric: str) -> str:
    cost = figure["cost_percent"][metric]
    return "n/a" if cost is None else f"{cost}%"


def table(doc: dict[str, Any]) -> str:
    f, opts = doc["figures"], doc["options"]
    several = opts["instances"] > 1
    wide, narrow = (22 if several else 16), 8
    head = f"{'':26}{OFF:>{wide}}{CONTROL:>{wide}}{'noise':>{narrow}}"
    rows = [head + f"{USAGE:>{wide}}{'cost':>{narrow}}{ON:>{wide}}{'cost':>{narrow}}"]
    for metric, label in (
        ("requests_per_s", f"requests/s ({opts['concurrency']} clients)"),
        ("streams_per_s", f"streams/s ({opts['stream_concurrency']} at once)"),
        ("events_per_s", "SSE events/s relayed"),
        ("cpu_us_per_request", "gateway CPU/request, us"),
        ("cpu_us_per_stream", "gateway CPU/stream, us"),
    ):
        cells = f"{_cell(f[OFF], metric):>{wide}}"
        for name in (CONTROL, USAGE, ON):
            cells += f"{_cell(f[name], metric):>{wide}}{_cost(f[name], metric):>{narrow}}"
        rows.append(f"{label:26}{cells}")
    per_stream = f"{f[OFF]['events_per_stream']!s:>{wide}}"
    per_stream += "".join(
        f"{f[name]['events_per_stream']!s:>{wide}}{'':{narrow}}" for name in (CONTROL, USAGE, ON)
    )
    rows.append(f"{'events per stream':26}{per_stream}".rstrip())
    if several:
        rows.append(f"{opts['instances']} processes per variant, pooled; (min-max) across them")
    rows.append("noise: off (control) is a second off, so its difference from off is noise alone")
    rows.append(
        "accounting on: the usage chunk lmgate asked for is stripped from streams (20 events, "
        "not 21: SSE events/s is lower by 1/21 for that alone)"
    )
    nice = doc.get("listener_nice", 0)
    rows.append(
        f"subscribers ran at nice {nice} on the load generator's core"
        + ("" if nice or not opts.get("listener_nice") else " (a higher priority was refused)")
    )
    seen = doc["subscribers"]
    rows.append(
        f"{opts['subscribers']} subscribers per usage + stream process saw {seen.get('events')} "
        f"events, lost {seen.get('lost')}; usage recorded {doc['usage_recorded']} of "
        f"{f[ON]['requests']} measured requests (plus warm-up)"
    )
    return "\n".join(rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run")
    p.add_argument("--subscribers", type=int, default=10, help="per usage + stream instance")
    p.add_argument(
        "--listener-nice",
        type=int,
        default=-10,
        help="the subscribers' nice value (0: the load generator's; see `start_listeners`)",
    )
    p.add_argument(
        "--duration", type=float, help="measured seconds per scenario and variant (all instances)"
    )
    p.add_argument("--rounds", type=int, help="alternations each scenario is split into")
    p.add_argument("--instances", type=int, help="gateway processes per variant")
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
    p.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under callgrind instead (needs valgrind)",
    )
    p.add_argument("--requests", type=int, default=2000, help="per scenario, --instructions")
    p.add_argument("--warmup-requests", type=int, default=200, help="for --instructions")
    p.add_argument("--json", dest="json_path", type=Path)
    p.add_argument("--no-pin", dest="pin", action="store_false")
    args = p.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (3.0 if quick else 16.0)
    args.rounds = args.rounds or (2 if quick else 8)
    args.instances = max(1, args.instances or (1 if quick else 2))
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    cpus = plan_cpus(args.pin)
    keys = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    slots = [(name, i) for i in range(args.instances) for name in NAMES]
    with (
        tempfile.TemporaryDirectory(prefix="lmgate-obs-bench-") as tmp,
        Children(Path(tmp)) as kids,
    ):
        direct = start_upstream(kids, args, cpus["upstream"])
        started = {
            slot: _gateway(
                kids, Path(tmp), _label(slot), direct, keys, cpus["lmgate"], **SETTINGS[slot[0]]
            )
            for slot in slots
        }
        urls = {slot: url for slot, (url, _) in started.items()}
        pids = {slot: pid for slot, (_, pid) in started.items()}
        subscribed = [(ON, i) for i in range(args.instances)]
        started_listeners = [
            start_listeners(
                kids, f"listeners-{i + 1}", urls[ON, i], keys[0], args, cpus["upstream"]
            )
            for _, i in subscribed
        ]
        listeners = [child for child, _ in started_listeners]
        prioritised = all(ok for _, ok in started_listeners)
        if cpus["load"]:
            os.sched_setaffinity(0, cpus["load"])
        raw = aio.run(_drive(args, urls, pids, keys[1]))
        usage = [admin_call(urls[slot] + "/admin/usage", keys[0]) for slot in subscribed]
        seen = [stop_listeners(child) for child in listeners]
    result = figures(raw, args.instances)
    heard: Counter[str] = Counter()
    for i, each in enumerate(result[ON]["instances"]):
        each["subscribers"] = seen[i]
        heard.update(seen[i])
        each["usage_recorded"] = usage[i]["totals"]["requests"]
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpus": {k: sorted(v) if v else None for k, v in cpus.items()},
        "figures": result,
        "subscribers": dict(heard),
        "listener_nice": args.listener_nice if prioritised else 0,
        "usage_recorded": sum(u["totals"]["requests"] for u in usage),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.instructions:
            from bench import instructions  # it builds on this module

            doc = instructions.run(args)
            print(instructions.table(doc))
        else:
            doc = run(args)
            print(table(doc))
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    kind = "-instructions" if args.instructions else ""
    write_results(doc, f"observability{kind}", args.json_path)
    return 0


def write_results(doc: dict[str, Any], name: str, path: Path | None) -> None:
    """`doc` as JSON at `path`, or under `bench/results/` named after `name` and its start."""
    stamp = doc["started"].replace("-", "").replace(":", "")
    out = path or REPO / "bench" / "results" / f"{name}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"results written to {out}")


if __name__ == "__main__":
    raise SystemExit(main())
