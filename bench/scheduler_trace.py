"""The scheduler on a trace: `python -m bench.scheduler_trace`.

A seeded random mix of streaming and non-streaming chat requests from three keys for three
models arrives over 30 s (Poisson) at a real gateway in front of the LM Studio emulator, whose
loads take 1 s and whose models hold 2 answers each, with room for one model at a time: the
scheduler has to switch. Every request goes through the official `openai` SDK (async, as many
at once as the trace has in flight). The run reports the model switches the gateway made
against those a plain first-come-first-served loader makes on the same arrivals (replayed by
`lmgate.schedule.simulate` with the measured answer times), the mean and p99 wait per key, and
Jain's fairness index over the keys' mean waits. `--sim-hours H` adds a long version in the
simulator alone (no servers): H hours of the same kind of traffic through both policies, at
the trace's rate and lower ones (`--sim-rate`).

    python -m bench.scheduler_trace                 # about 40 s
    python -m bench.scheduler_trace --sim-hours 2   # plus two simulated hours

`tests/schedule/test_trace.py` drives the same trace through the same code and asserts what
this only prints: nothing cut, no busy model unloaded, no more switches than FIFO.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson

from bench.observability import child_env, write_results
from bench.processes import Children, free_port, wait_http
from lmgate.emulator.generation import reply_pieces
from lmgate.schedule import SchedulerConfig, UpstreamSpec
from lmgate.schedule.simulate import Arrival, SimResult, replay

MODELS = ("trace/alpha-1b", "trace/beta-3b", "trace/gamma-7b")
SIZES = (1_200_000_000, 3_100_000_000, 6_800_000_000)
KEYS = {
    "alice": "sk-trace-alice-0123456789abcdef",
    "bob": "sk-trace-bob-0123456789abcdefgh",
    "carol": "sk-trace-carol-0123456789abcdef",
}
ADMIN = "sk-trace-admin-0123456789abcdef"
SLOTS = 2  # answers at once per loaded model, as the emulator reports `parallel`
LOAD_S = 1.0  # the emulator's load time
MAX_LOADED = 1
SWITCH_MAX_WAIT_S = 6.0
SEED, DURATION_S, RATE = 7, 30.0, 2.0
SERVICE_S = (0.2, 1.0)  # how long one answer holds its slot
TOKENS = (4, 20)  # max_tokens: below the emulator's natural 24, so every answer ends "length"
STREAM_SHARE = 0.6


@dataclass(frozen=True, slots=True)
class Planned:
    """One request of the trace: when it is sent, by whom, for what, and how long it runs."""

    at: float
    key: str
    model: str
    stream: bool
    tokens: int
    service: float
    prompt: str

    @property
    def expected(self) -> str:
        """The emulator's whole answer: a prefix of its natural reply to the prompt."""
        return "".join(reply_pieces(self.prompt)[: self.tokens])


@dataclass(slots=True)
class Outcome:
    """What the client saw: `complete` answers end with their normal finish and full text;
    `error` is a refusal's OpenAI-style error object; `broken` anything else that went wrong."""

    planned: Planned
    sent: float = 0.0  # seconds from the trace's start
    elapsed: float = 0.0  # send to the answer's last byte
    waited: float = 0.0  # X-Queue-Wait-Ms, in seconds (0 when it never waited)
    position: int = 0  # X-Queue-Position (0 when it never waited)
    status: int = 200
    text: str = ""
    finish: str | None = None
    error: dict[str, Any] | None = None
    broken: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == 200 and self.finish == "length" and self.text == self.planned.expected

    @property
    def service(self) -> float:
        """How long the answer held its slot, as the client can tell."""
        return max(0.0, self.elapsed - self.waited)


def plan(
    seed: int = SEED,
    *,
    duration: float = DURATION_S,
    rate: float = RATE,
    keys: Sequence[str] = tuple(KEYS),
    models: Sequence[str] = MODELS,
) -> list[Planned]:
    """Poisson arrivals at `rate` per second, each a random key, model, kind and length."""
    rng = random.Random(seed)
    trace: list[Planned] = []
    now = rng.expovariate(rate)
    while now < duration:
        trace.append(
            Planned(
                at=round(now, 3),
                key=rng.choice(keys),
                model=rng.choice(models),
                stream=rng.random() < STREAM_SHARE,
                tokens=rng.randint(*TOKENS),
                service=round(rng.uniform(*SERVICE_S), 3),
                prompt=f"trace request {len(trace)}: tell me about the sea",
            )
        )
        now += rng.expovariate(rate)
    return trace


def emulator_models(path: Path) -> Path:
    """The emulator's catalog: the trace's three models, `SLOTS` answers each."""
    entries = [
        {
            "key": key,
            "type": "llm",
            "max_context_length": 8192,
            "parallel": SLOTS,
            "size_bytes": size,
        }
        for key, size in zip(MODELS, SIZES, strict=True)
    ]
    path.write_bytes(orjson.dumps(entries))
    return path


def emulator_args(models_file: Path) -> list[str]:
    """No JIT (a request forwarded to a model that is not loaded fails loudly), nothing
    preloaded, 1 s loads."""
    return ["--models", str(models_file), "--no-jit", "--no-preload", "--load-delay", str(LOAD_S)]


def gateway_env() -> dict[str, str]:
    return {
        "LMGATE_ADMIN_KEY": ADMIN,
        "LMGATE_API_KEYS": ",".join(KEYS.values()),
        "LMGATE_ON_DEMAND_LOAD": "true",
        "LMGATE_MAX_LOADED_MODELS": str(MAX_LOADED),
        "LMGATE_SWITCH_MAX_WAIT": str(SWITCH_MAX_WAIT_S),
        "LMGATE_QUEUE_TIMEOUT": "120",
        "LMGATE_SYNC_INTERVAL": "0.5",
    }


def wait_for_models(gateway: str, timeout: float = 30.0) -> None:
    """Until the gateway lists the trace's models (the scheduler only schedules those)."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {ADMIN}"}
    while True:
        try:
            listed = httpx.get(gateway + "/admin/models", headers=headers, timeout=5).json()
            if set(MODELS) <= {m.get("key") for m in listed.get("models", [])}:
                return
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway at {gateway} never listed {MODELS}")
        time.sleep(0.1)


async def _ask(client: openai.AsyncOpenAI, p: Planned, out: Outcome) -> None:
    messages: Any = [{"role": "user", "content": p.prompt}]
    if p.stream:
        pace = {"x-emulator-token-delay": f"{p.service / p.tokens:.4f}"}
        raw = await client.chat.completions.with_raw_response.create(
            model=p.model, messages=messages, stream=True, max_tokens=p.tokens, extra_headers=pace
        )
        _queue_headers(raw.headers, out)
        async for chunk in raw.parse():
            if chunk.choices:
                out.text += chunk.choices[0].delta.content or ""
                out.finish = chunk.choices[0].finish_reason or out.finish
    else:
        pace = {"x-emulator-delay": f"{p.service:.4f}", "x-emulator-token-delay": "0"}
        answer = await client.chat.completions.with_raw_response.create(
            model=p.model, messages=messages, max_tokens=p.tokens, extra_headers=pace
        )
        _queue_headers(answer.headers, out)
        completion = answer.parse()
        out.text = completion.choices[0].message.content or ""
        out.finish = completion.choices[0].finish_reason


def _queue_headers(headers: Mapping[str, str], out: Outcome) -> None:
    out.position = int(headers.get("x-queue-position", "0"))
    out.waited = int(headers.get("x-queue-wait-ms", "0")) / 1000.0


async def drive(
    gateway: str, trace: Sequence[Planned], *, client_timeout: float = 120.0
) -> list[Outcome]:
    """Send every request of `trace` at its time, each through its key's own async client."""
    clients = {
        name: openai.AsyncOpenAI(
            base_url=gateway + "/v1", api_key=secret, max_retries=0, timeout=client_timeout
        )
        for name, secret in KEYS.items()
    }
    start = time.monotonic()

    async def one(p: Planned) -> Outcome:
        await asyncio.sleep(max(0.0, start + p.at - time.monotonic()))
        out = Outcome(p, sent=time.monotonic() - start)
        try:
            await _ask(clients[p.key], p, out)
        except openai.APIStatusError as exc:
            out.status = exc.status_code
            try:
                out.error = exc.response.json().get("error")
            except ValueError:
                out.broken = f"{exc.status_code} with a body that is not JSON"
        except Exception as exc:  # a cut stream, a dropped connection: never expected
            out.broken = f"{type(exc).__name__}: {exc}"
        out.elapsed = time.monotonic() - start - out.sent
        return out

    try:
        return list(await asyncio.gather(*(one(p) for p in trace)))
    finally:
        for client in clients.values():
            await client.close()


def recorded(outcomes: Sequence[Outcome]) -> list[Arrival]:
    """The answered requests as the simulator's arrivals: when they were sent, and how long
    each held its slot."""
    served = [o for o in outcomes if o.status == 200]
    return [
        Arrival(o.sent, o.planned.key, o.planned.model, o.service)
        for o in sorted(served, key=lambda o: o.sent)
    ]


def simulate(arrivals: Sequence[Arrival], policy: str) -> SimResult:
    """The same arrivals through the scheduler's core or plain FIFO, on the same limits."""
    return replay(
        arrivals,
        upstream=UpstreamSpec("upstream", max_loaded_models=MAX_LOADED),
        load_time=LOAD_S,
        slots=SLOTS,
        policy="fifo" if policy == "fifo" else "fair",
        config=SchedulerConfig(
            default_slots=SLOTS, switch_max_wait=SWITCH_MAX_WAIT_S, queue_timeout=120.0
        ),
    )


def measured(outcomes: Sequence[Outcome]) -> SimResult:
    """The real run's waits per key, in the simulator's terms (for its statistics)."""
    result = SimResult(waits={k: [] for k in sorted({o.planned.key for o in outcomes})})
    for o in outcomes:
        if o.status == 200:
            result.waits[o.planned.key].append(o.waited)
        else:
            result.rejected[o.planned.key] = result.rejected.get(o.planned.key, 0) + 1
    return result


def emulator_counts(emulator: str) -> dict[str, Any]:
    stats = httpx.get(emulator + "/__emulator/stats", timeout=5).json()
    gens = httpx.get(emulator + "/__emulator/generations", timeout=5).json()
    return {**stats, **gens}


def report(outcomes: Sequence[Outcome], switches: int, counts: Mapping[str, Any]) -> dict[str, Any]:
    """The real run beside FIFO (and the core) replayed on its arrivals."""
    arrivals = recorded(outcomes)
    fifo, core = simulate(arrivals, "fifo"), simulate(arrivals, "fair")
    real = measured(outcomes)
    real.switches = switches
    real.busy_evictions = int(counts.get("busy_unloads", 0))
    return {
        "requests": len(outcomes),
        "streams": sum(o.planned.stream for o in outcomes),
        "complete": sum(o.complete for o in outcomes),
        "refused": sum(o.error is not None for o in outcomes),
        "broken": [o.broken for o in outcomes if o.broken],
        "scheduler": real.summary(),
        "fifo_replayed": fifo.summary(),
        "scheduler_replayed": core.summary(),
        "emulator": {
            "loads": counts.get("loads"),
            "unloads": counts.get("unloads"),
            "busy_unloads": counts.get("busy_unloads"),
            "peak_generating": counts.get("peak_generating"),
        },
    }


def table(doc: Mapping[str, Any]) -> str:
    """Switches and waits per key, the real scheduler beside FIFO on the same arrivals."""
    real, fifo, core = doc["scheduler"], doc["fifo_replayed"], doc["scheduler_replayed"]
    lines = [
        f"{doc['requests']} requests ({doc['streams']} streamed), {doc['complete']} complete, "
        f"{doc['refused']} refused, {len(doc['broken'])} broken; "
        f"busy unloads {doc['emulator']['busy_unloads']}",
        f"{'':24}{'switches':>9}{'Jain':>7}   mean / p99 wait per key (s)",
    ]
    for name, part in (
        ("scheduler (real)", real),
        ("scheduler (replayed)", core),
        ("FIFO (replayed)", fifo),
    ):
        waits = "  ".join(
            f"{k} {v['mean_wait_s']:.2f}/{v['p99_wait_s']:.2f}" for k, v in part["keys"].items()
        )
        lines.append(f"{name:24}{part['switches']:>9}{part['jain']:>7.3f}   {waits}")
    return "\n".join(lines)


def run_servers(seed: int, workdir: Path) -> dict[str, Any]:
    """Emulator and gateway as children, the trace through them, and the report."""
    with Children(workdir) as kids:
        emu_port, gw_port = free_port(), free_port()
        emu_url, gw_url = f"http://127.0.0.1:{emu_port}", f"http://127.0.0.1:{gw_port}"
        models = emulator_models(workdir / "models.json")
        emu = kids.start(
            "emulator",
            [
                sys.executable,
                "-m",
                "lmgate.emulator",
                "--port",
                str(emu_port),
                *emulator_args(models),
            ],
            env=child_env(),
        )
        wait_http(emu, emu_url + "/lmstudio-greeting")
        argv = [sys.executable, "-m", "lmgate", "serve", "--port", str(gw_port)]
        argv += ["--upstream", emu_url, "--data-dir", str(workdir / "data")]
        gw = kids.start("gateway", argv, env=child_env(**gateway_env()), cwd=workdir)
        wait_http(gw, gw_url + "/health")
        wait_for_models(gw_url)
        trace = plan(seed)
        started = time.monotonic()
        outcomes = asyncio.run(drive(gw_url, trace))
        wall = time.monotonic() - started
        counts = emulator_counts(emu_url)
    doc = report(outcomes, int(counts["loads"]), counts)
    doc["wall_s"] = round(wall, 1)
    return doc


def long_run(hours: float, seed: int, rate: float = RATE) -> dict[str, Any]:
    """The simulator alone: `hours` of the trace's kind of traffic at `rate` requests per
    second through both policies."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    now = rng.expovariate(rate)
    while now < hours * 3600:
        arrivals.append(
            Arrival(now, rng.choice(tuple(KEYS)), rng.choice(MODELS), rng.uniform(*SERVICE_S))
        )
        now += rng.expovariate(rate)
    fair, fifo = simulate(arrivals, "fair"), simulate(arrivals, "fifo")
    return {
        "hours": hours,
        "rate_per_s": rate,
        "requests": len(arrivals),
        "scheduler": fair.summary(),
        "fifo": fifo.summary(),
    }


def long_table(sim: Mapping[str, Any]) -> str:
    lines = [
        f"simulated {sim['hours']:g} h at {sim['rate_per_s']:g}/s, {sim['requests']} requests: "
        f"switches scheduler {sim['scheduler']['switches']} vs FIFO {sim['fifo']['switches']}; "
        f"Jain {sim['scheduler']['jain']} vs {sim['fifo']['jain']}"
    ]
    for name in ("scheduler", "fifo"):
        waits = "  ".join(
            f"{k} {v['mean_wait_s']:.2f}/{v['p99_wait_s']:.2f}"
            for k, v in sim[name]["keys"].items()
        )
        lines.append(f"  {name:10} mean / p99 wait per key (s): {waits}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scheduler_trace", description=__doc__)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--sim-hours", type=float, default=0.0, help="also simulate this long")
    p.add_argument(
        "--sim-rate",
        type=float,
        nargs="+",
        default=[0.5, 1.0, RATE],
        help="requests per second of the simulated runs (default: 0.5, 1 and the trace's)",
    )
    p.add_argument("--no-servers", action="store_true", help="only the simulated run")
    p.add_argument("--json", dest="json_path", type=Path, default=None)
    args = p.parse_args(argv)
    doc: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "trace": {
            "seconds": DURATION_S,
            "rate_per_s": RATE,
            "models": list(MODELS),
            "keys": list(KEYS),
            "slots": SLOTS,
            "load_s": LOAD_S,
            "max_loaded_models": MAX_LOADED,
            "switch_max_wait_s": SWITCH_MAX_WAIT_S,
        },
    }
    if not args.no_servers:
        with tempfile.TemporaryDirectory(prefix="lmgate-trace-") as tmp:
            try:
                doc["real"] = run_servers(args.seed, Path(tmp))
            except (RuntimeError, OSError) as exc:
                print(f"bench: {exc}", file=sys.stderr)
                return 1
        print(table(doc["real"]))
        print(f"wall time {doc['real']['wall_s']} s")
    if args.sim_hours > 0:
        doc["simulated"] = [long_run(args.sim_hours, args.seed, rate) for rate in args.sim_rate]
        for sim in doc["simulated"]:
            print(long_table(sim))
    write_results(doc, "scheduler-trace", args.json_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
