"""The aiohttp load generator: one request, one stream, and clients that repeat them.

Each target has its own pooled keep-alive session, warmed up before measuring, so no figure
pays for a handshake. `bench.scenarios` decides what runs when; `bench.wrk` is the other
generator, for multi-client non-streaming load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

CHAT = "/v1/chat/completions"
_MESSAGES = [{"role": "user", "content": "Say hello in five words."}]


@dataclass(slots=True)
class Target:
    """One side of the comparison: `direct` (the upstream itself), `nginx` or `lmgate`."""

    name: str
    url: str
    session: aiohttp.ClientSession


@dataclass(slots=True)
class Samples:
    """Raw observations for one target in one scenario; `stats` turns them into figures."""

    latencies: list[float] = field(default_factory=list)  # seconds
    first_chunk: list[float] = field(default_factory=list)  # seconds
    worst_gap: list[float] = field(default_factory=list)  # seconds, one per stream
    events: list[int] = field(default_factory=list)  # SSE data events per stream
    reads: list[int] = field(default_factory=list)  # socket deliveries that carried events
    errors: int = 0
    elapsed: float = 0.0
    completed: int = 0  # requests counted by wrk, which reports no per-request list
    rss_kib: list[int] = field(default_factory=list)  # the gateway's RSS while this ran


def request_body(*, stream: bool, max_tokens: int, usage: bool = False, **extra: Any) -> bytes:
    """No `model`: lmgate injects the active one, which is part of what is measured.

    `usage`: a stream asks for the usage chunk itself, so every target relays the same events
    and lmgate's usage accounting reads it (and keeps it, since the client asked).
    """
    body: dict[str, Any] = {"messages": _MESSAGES, "stream": stream, "max_tokens": max_tokens}
    if stream and usage:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps({**body, **extra})


def open_session(api_key: str, pool: int, timeout: float = 60) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=pool, keepalive_timeout=60, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=timeout),
        auto_decompress=False,
    )


async def call(target: Target, body: bytes, out: Samples) -> None:
    """One non-streaming request; its latency counts only if the answer was a full 200."""
    start = time.perf_counter()
    try:
        async with target.session.post(target.url + CHAT, data=body) as resp:
            await resp.read()
            ok = resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        ok = False
    if ok:
        out.latencies.append(time.perf_counter() - start)
    else:
        out.errors += 1


async def stream(target: Target, body: bytes, out: Samples) -> None:
    """One SSE stream: time to the first data event, the longest silence, and how it arrived.

    `reads` counts socket deliveries that carried at least one event: a proxy that buffers
    and coalesces chunks delivers fewer of them than the upstream sent.
    """
    start = last = time.perf_counter()
    first: float | None = None
    events = reads = 0
    worst = 0.0
    pending = b""
    try:
        async with target.session.post(target.url + CHAT, data=body) as resp:
            if resp.status != 200:
                await resp.read()
                out.errors += 1
                return
            async for data in resp.content.iter_any():
                now = time.perf_counter()
                pending += data
                *complete, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
                count = sum(1 for e in complete if e.startswith(b"data:") and b"[DONE]" not in e)
                if not count:
                    continue
                if first is None:
                    first = now - start
                else:
                    worst = max(worst, now - last)
                last = now
                events += count
                reads += 1
    except (aiohttp.ClientError, TimeoutError):
        out.errors += 1
        return
    if first is None:
        out.errors += 1
        return
    out.first_chunk.append(first)
    out.worst_gap.append(worst)
    out.events.append(events)
    out.reads.append(reads)


Work = Callable[[Target, Samples], Awaitable[None]]


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` rounds as evenly as whole numbers allow."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def clients(
    target: Target, out: Samples, n: int, each: int, work: Work, ramp: float = 0.0
) -> None:
    """`n` concurrent clients, each doing `work` `each` times back to back.

    `ramp` spreads the clients' starts evenly over that many seconds, so they overlap as
    steady traffic would rather than all arriving in the same millisecond.
    """

    async def client(i: int) -> None:
        if ramp:
            await asyncio.sleep(ramp * i / n)
        for _ in range(each):
            await work(target, out)

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(n)))
    out.elapsed += time.perf_counter() - start


async def timed_clients(target: Target, out: Samples, n: int, seconds: float, work: Work) -> None:
    """`n` concurrent clients issuing requests until `seconds` have passed (then finishing)."""
    start = time.perf_counter()
    deadline = start + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            await work(target, out)

    await asyncio.gather(*(client() for _ in range(n)))
    out.elapsed += time.perf_counter() - start
