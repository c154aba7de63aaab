"""Command-line options. Every figure has a default sized so a full run ends in about a minute.

Flags left unset take their value from the preset (`full` or `--quick`), so `--quick
--streams 20` still means "a smoke run, but with more streams".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from ipaddress import ip_address
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Options:
    upstream: str = "fake"
    quick: bool = False
    requests: int = 2000  # 1-client non-streaming requests, per target
    duration: float = 8.0  # seconds of multi-client load, per target and scenario
    concurrency: int = 16  # clients in the latency-under-load scenario
    wide_concurrency: int = 64  # clients in the throughput scenario
    streams: int = 60  # streams per client, per target, in each streaming scenario
    stream_concurrency: int = 10
    wide_streams: int = 100  # concurrent streams in the widest streaming scenario
    wide_delay_ms: float = 20.0  # their pause between chunks: 100 x 50 events/s
    slow_streams: int = 1000  # concurrent slow streams (20 events, 50-100 ms apart)
    chunks: int = 20  # chunks per stream sent by the fake upstream
    chunk_delay_ms: float = 5.0
    rounds: int = 4  # A B A B alternations each scenario's work is split into
    warmup: int = 100  # unmeasured requests per target before the first scenario
    json_path: Path | None = None
    pin: bool = True
    nginx: bool = True  # nginx as a third target, when installed
    wrk: bool = True  # wrk for multi-client non-streaming load, when installed
    workers: int = 1  # `lmgate serve --workers N` (and nginx worker_processes N)
    real_model: bool = False  # a real model instead of `upstream`: bench/real_model.py


QUICK = Options(
    quick=True, requests=500, duration=2.0, streams=12, rounds=2, warmup=50, slow_streams=300
)
# A real model answers in seconds, not microseconds: fewer, longer streams; `chunks` is the
# tokens each stream generates and `stream_concurrency` matches the server's parallel slots.
REAL = Options(real_model=True, streams=16, chunks=64, rounds=4, warmup=2, stream_concurrency=2)
REAL_QUICK = replace(REAL, quick=True, streams=4, chunks=32, rounds=2, warmup=1)


def _positive(kind: Callable[[str], N]) -> Callable[[str], N]:
    def check(text: str) -> N:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return check


def _upstream(text: str) -> str:
    """`fake`, `emulator`, or a loopback URL: the bench never sends traffic off this machine."""
    if text in ("fake", "emulator"):
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected fake, emulator or an http URL, got {text}")
    host = parts.hostname
    if host != "localhost" and not ip_address(host).is_loopback:
        raise argparse.ArgumentTypeError(f"{host} is not a loopback address")
    return text.rstrip("/")


def parse(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the latency, throughput and streaming overhead lmgate adds "
        "over calling its upstream directly. Traffic stays on 127.0.0.1.",
    )
    p.add_argument("--quick", action="store_true", help="smoke run (~15 s)")
    p.add_argument(
        "--real-model",
        action="store_true",
        help="time to first token and tokens/s with a real llama.cpp model (installs on first use)",
    )
    p.add_argument(
        "--upstream",
        type=_upstream,
        help="fake (default: built-in minimal server), emulator (lmgate.emulator), or URL",
    )
    p.add_argument("--requests", type=_positive(int), help="1-client requests per target")
    p.add_argument("--duration", type=_positive(float), help="seconds of multi-client load")
    p.add_argument("--concurrency", type=_positive(int), help="clients, latency under load")
    p.add_argument("--wide-concurrency", type=_positive(int), help="clients, throughput")
    p.add_argument("--streams", type=_positive(int), help="streams per client per target")
    p.add_argument("--stream-concurrency", type=_positive(int), help="concurrent streams")
    p.add_argument("--wide-streams", type=_positive(int), help="concurrent streams, widest")
    p.add_argument("--wide-delay-ms", type=_positive(float), help="their pause between chunks")
    p.add_argument("--slow-streams", type=_positive(int), help="concurrent slow streams")
    p.add_argument("--chunks", type=_positive(int), help="chunks per fake-upstream stream")
    p.add_argument("--chunk-delay-ms", type=float, help="pause between chunks (ms)")
    p.add_argument("--rounds", type=_positive(int), help="A/B alternations per scenario")
    p.add_argument("--warmup", type=int, help="unmeasured requests per target")
    p.add_argument("--json", dest="json_path", type=Path, help="also write results here")
    p.add_argument("--no-pin", dest="pin", action="store_false", default=None)
    p.add_argument("--no-nginx", dest="nginx", action="store_false", default=None)
    p.add_argument("--no-wrk", dest="wrk", action="store_false", default=None)
    p.add_argument(
        "--workers", type=_positive(int), help="lmgate serve --workers N (default 1: not passed)"
    )
    args = vars(p.parse_args(argv))
    quick, real = args.pop("quick"), args.pop("real_model")
    presets = {(False, False): Options(), (True, False): QUICK, (False, True): REAL}
    base = presets.get((quick, real), REAL_QUICK)
    given = {f.name: args[f.name] for f in fields(Options) if args.get(f.name) is not None}
    return replace(base, **given)
