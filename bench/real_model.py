"""`python -m bench --real-model`: time to first token and tokens/s with a real model behind
lmgate, against the same model called directly, in one run.

The model is the test tier's (llama.cpp's server with SmolLM2-135M, installed on first use
into the user's cache; see `tests/real_model/engine.py`). With the cores pinned, lmgate has
one to itself and the model shares the other with the load generator, as on a GPU box where
generation does not compete with the gateway for a CPU.

Every stream is greedy, evaluates its prompt from scratch (no prompt cache, so the first
target cannot warm it for the second) and ignores end-of-sequence, so each one produces
exactly `--chunks` tokens and both targets ask the server for identical work. The body has
no `model` and no `top_k`: lmgate injects both (the activated `topK` is the server's own
default), so its measured path includes parsing and rewriting every body.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from tests.real_model.engine import (
    ALIAS,
    EngineUnavailable,
    ServerConfig,
    command,
    install,
    wait_healthy,
)

from bench import aio, report
from bench.load import CHAT, split
from bench.options import Options
from bench.processes import Children, free_port, plan_cpus
from bench.runner import REPO, _start_gateway
from bench.stats import percentile

DIRECT, GATE = "direct", "lmgate"
ACTIVATION = {"modelKey": ALIAS, "defaultInference": {"temperature": 0, "topK": 40}}
_PROMPT = [{"role": "user", "content": "Write a few sentences about the sea."}]


@dataclass(slots=True)
class TokenSamples:
    """Per stream: seconds to the first token, client-side decode rate, the server's rate."""

    ttft: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)  # tokens 2..n over their span
    overall_tps: list[float] = field(default_factory=list)  # all tokens over the whole request
    server_tps: list[float] = field(default_factory=list)  # llama.cpp's own `timings`
    tokens: list[int] = field(default_factory=list)
    errors: int = 0


def _session(api_key: str) -> aiohttp.ClientSession:
    """A fresh connection per stream, for both targets alike: llama.cpp's server closes its end
    after every streamed answer, and a client that reused the connection would race that."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=300),
        auto_decompress=False,
    )


def _body(tokens: int) -> bytes:
    return orjson.dumps(
        {
            "messages": _PROMPT,
            "temperature": 0,
            "max_tokens": tokens,
            "stream": True,
            "ignore_eos": True,
            "cache_prompt": False,
            # llama.cpp reports its own `timings` in the usage chunk when usage is asked for
            "stream_options": {"include_usage": True},
        }
    )


def _token_events(block: bytes) -> tuple[int, float | None]:
    """Content tokens in one SSE event, and the server's tokens/s if the event reports it."""
    if not block.startswith(b"data:") or b"[DONE]" in block:
        return 0, None
    event = orjson.loads(block[5:])
    rate = (event.get("timings") or {}).get("predicted_per_second")
    choices = event.get("choices") or []
    tokens = sum(1 for c in choices if (c.get("delta") or {}).get("content"))
    return tokens, rate


async def _stream(session: aiohttp.ClientSession, url: str, body: bytes, out: TokenSamples) -> None:
    start = time.perf_counter()
    first = last = 0.0
    count = 0
    server_rate: float | None = None
    pending = b""
    try:
        async with session.post(url + CHAT, data=body) as resp:
            if resp.status != 200:
                await resp.read()
                out.errors += 1
                return
            async for data in resp.content.iter_any():
                now = time.perf_counter()
                pending += data
                *complete, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
                for block in complete:
                    tokens, rate = _token_events(block)
                    server_rate = rate if rate is not None else server_rate
                    if tokens:
                        first = first or now
                        last = now
                        count += tokens
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
        out.errors += 1
        return
    if count < 2:
        out.errors += 1
        return
    out.ttft.append(first - start)
    out.decode_tps.append((count - 1) / (last - first))
    out.overall_tps.append(count / (last - start))
    out.tokens.append(count)
    if server_rate is not None:
        out.server_tps.append(server_rate)


async def _clients(
    session: aiohttp.ClientSession, url: str, body: bytes, out: TokenSamples, n: int, each: int
) -> None:
    async def client() -> None:
        for _ in range(each):
            await _stream(session, url, body, out)

    await asyncio.gather(*(client() for _ in range(n)))


async def _drive(opts: Options, direct: str, gate: str, key: str) -> dict[str, dict[str, Any]]:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    body = _body(opts.chunks)
    sessions = {DIRECT: _session(key), GATE: _session(key)}
    urls = {DIRECT: direct, GATE: gate}
    raw: dict[str, dict[str, TokenSamples]] = {}
    try:
        for name in (DIRECT, GATE):
            warm = TokenSamples()
            await _clients(sessions[name], urls[name], body, warm, 1, max(opts.warmup, 1))
            if warm.errors:
                raise RuntimeError(f"{name}: {warm.errors} warm-up streams failed")
        fan = opts.stream_concurrency
        plans = {
            "stream_1": (1, split(opts.streams, opts.rounds)),
            f"stream_{fan}": (fan, split(max(opts.streams // fan, 1), opts.rounds)),
        }
        for scenario, (n, rounds) in plans.items():
            per = raw.setdefault(scenario, {DIRECT: TokenSamples(), GATE: TokenSamples()})
            for each in rounds:
                for name in (DIRECT, GATE):  # A B A B: drift lands on both
                    await _clients(sessions[name], urls[name], body, per[name], n, each)
    finally:
        for session in sessions.values():
            await session.close()
    return {scenario: _summary(per) for scenario, per in raw.items()}


def _p(values: list[float], q: float, scale: float = 1.0) -> float | None:
    found = percentile(values, q)
    return None if found is None else round(found * scale, 3)


def _figures(s: TokenSamples) -> dict[str, Any]:
    return {
        "streams": len(s.ttft),
        "errors": s.errors,
        "tokens_per_stream": sorted(set(s.tokens)),
        "ttft_p50_ms": _p(s.ttft, 50, 1000),
        "ttft_p90_ms": _p(s.ttft, 90, 1000),
        "decode_tps_p50": _p(s.decode_tps, 50),
        "overall_tps_p50": _p(s.overall_tps, 50),
        "server_tps_p50": _p(s.server_tps, 50),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(b / a, 3) if a and b else None


def _summary(per: dict[str, TokenSamples]) -> dict[str, Any]:
    """Both targets' figures and lmgate's as a share of direct's (1.0 = no difference)."""
    figures = {name: _figures(samples) for name, samples in per.items()}
    d, g = figures[DIRECT], figures[GATE]
    keys = ("ttft_p50_ms", "ttft_p90_ms", "decode_tps_p50", "overall_tps_p50", "server_tps_p50")
    compare = {f"ratio_{k}": _ratio(d[k], g[k]) for k in keys}
    a, b = d["ttft_p50_ms"], g["ttft_p50_ms"]
    compare["added_ttft_p50_ms"] = None if a is None or b is None else round(b - a, 3)
    return {**figures, "compare": compare}


def run(opts: Options) -> dict[str, Any]:
    started, clock = datetime.now(UTC), time.monotonic()
    try:
        engine = install(log=lambda line: print(f"bench: {line}", file=sys.stderr))
    except EngineUnavailable as exc:
        raise RuntimeError(f"the real model is not available: {exc}") from exc
    cpus = plan_cpus(opts.pin)
    environment = {
        "machine": report.machine(),
        "versions": report.versions(REPO),
        "cpus": {k: sorted(v) if v else None for k, v in cpus.items()},
        "loop": aio.loop_name(),
    }
    threads = len(cpus["upstream"] or ()) or ServerConfig().threads
    config = ServerConfig(threads=threads, embeddings=False)
    admin, api = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="lmgate-bench-") as tmp, Children(Path(tmp)) as kids:
        port = free_port()
        argv, env = command(engine, port, config)
        llama = kids.start("llama", argv, env=env, cpus=cpus["upstream"])
        direct = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(direct, lambda: llama.proc.poll() is None)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{llama.log_tail()}") from exc
        gate, gate_url = _start_gateway(
            kids, Path(tmp), direct, (admin, api), cpus["lmgate"], model=ACTIVATION
        )
        if cpus["load"]:
            os.sched_setaffinity(0, cpus["load"])
        results = aio.run(_drive(opts, direct, gate_url, api))
        if gate.proc.poll() is not None:
            raise RuntimeError("lmgate exited during the run:\n" + gate.log_tail())
    return {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.monotonic() - clock, 1),
        "mode": "real-model",
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "environment": environment,
        "upstream": f"llama.cpp server (xllamacpp), {ALIAS}, {threads} thread(s), "
        f"{opts.chunks} tokens per stream",
        "results": results,
    }


_ROWS = [
    ("time to first token p50 ms", "ttft_p50_ms"),
    ("time to first token p90 ms", "ttft_p90_ms"),
    ("tokens/s after the first, p50", "decode_tps_p50"),
    ("tokens/s whole request, p50", "overall_tps_p50"),
    ("tokens/s reported by server, p50", "server_tps_p50"),
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


def table(doc: dict[str, Any]) -> str:
    """Direct against lmgate, with lmgate's figure as a multiple of direct's."""
    head = ("scenario", "figure", "direct", "lmgate", "lmgate/direct")
    rows: list[tuple[str, ...]] = []
    for scenario, res in doc["results"].items():
        label = scenario.replace("stream_", "stream, ") + " client(s)"
        for i, (title, key) in enumerate(_ROWS):
            ratio = res["compare"][f"ratio_{key}"]
            rows.append(
                (
                    label if i == 0 else "",
                    title,
                    _cell(res[DIRECT][key]),
                    _cell(res[GATE][key]),
                    "-" if ratio is None else f"{ratio:.3f}x",
                )
            )
        errors = f"{res[DIRECT]['errors']} / {res[GATE]['errors']}"
        streams = f"{res[DIRECT]['streams']} / {res[GATE]['streams']}"
        rows.append(("", "streams (failed)", streams, "", f"({errors})"))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    env = doc["environment"]
    cpus = env["cpus"]
    where = ", ".join(f"{k} on {cpus[k] or 'any'}" for k in ("lmgate", "load", "upstream"))
    return "\n".join(
        [
            f"lmgate bench, real model: {doc['started']}, {doc['seconds']:.0f} s, "
            f"revision {env['versions'].get('revision') or '?'}",
            f"machine   {env['machine']['cpu']}, {env['machine']['cores']} cores ({where})",
            f"upstream  {doc['upstream']}",
            "",
            fmt(head),
            fmt(tuple("-" * w for w in widths)),
            *(fmt(row) for row in rows),
        ]
    )
