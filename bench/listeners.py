"""Many `/debug/stream` subscribers in one process, for the observability bench.

Each connection reads and counts events as a dashboard would. The process prints `ready` once
every connection got its `connected` event, and on SIGTERM one JSON line: events seen in all,
and the `events_lost` counts the gateway reported (none is expected: they all keep up).

    python -m bench.listeners http://127.0.0.1:8001/debug/stream ADMIN_KEY 10
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys

import aiohttp
import orjson

from bench.aio import run

_LOST = re.compile(rb'"type":"events_lost","count":(\d+)')


async def listen(
    session: aiohttp.ClientSession, url: str, counts: dict[str, int], up: asyncio.Event
) -> None:
    """Counts whole frames per read, in as few passes over the bytes as will do: this process
    shares a core with the load generator, so what it spends the load does not get."""
    pending = b""
    async with session.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        async for chunk in resp.content.iter_any():
            data = pending + chunk if pending else chunk
            end = data.rfind(b"\n\n") + 2
            if end == 1:
                pending = data
                continue
            complete, pending = data[:end], data[end:]
            events = complete.count(b"event: ")  # every event; keep-alive comments have none
            if complete.find(b"event: events_lost") >= 0:
                lost = [int(n) for n in _LOST.findall(complete)]
                counts["lost"] += sum(lost)
                events -= len(lost)
            if complete.find(b"event: connected") >= 0:
                connected = complete.count(b"event: connected")
                events -= connected
                counts["connected"] += connected
                if counts["connected"] == counts["wanted"]:
                    up.set()
            counts["events"] += events


async def main_async(url: str, key: str, n: int) -> dict[str, int]:
    counts = {"wanted": n, "connected": 0, "events": 0, "lost": 0}
    stop = asyncio.Event()
    up = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        tasks = [asyncio.create_task(listen(session, url, counts, up)) for _ in range(n)]
        if n:
            await up.wait()
        print("ready", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task
    return counts


def main() -> None:
    url, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(orjson.dumps(run(main_async(url, key, n))).decode(), flush=True)


if __name__ == "__main__":
    main()
