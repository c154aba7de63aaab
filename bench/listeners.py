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
    """Counts whole frames per read (cheap: this process shares a core with the load)."""
    pending = b""
    async with session.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        async for chunk in resp.content.iter_any():
            complete, sep, rest = (pending + chunk).rpartition(b"\n\n")
            if not sep:
                pending = rest
                continue
            pending = rest
            frames = complete.count(b"\n\n") + 1
            connected = complete.count(b"event: connected")
            lost = complete.count(b"event: events_lost")
            pings = complete.count(b": keep-alive")
            counts["events"] += frames - connected - lost - pings
            counts["lost"] += sum(int(n) for n in _LOST.findall(complete))
            if connected:
                counts["connected"] += connected
                if counts["connected"] == counts["wanted"]:
                    up.set()


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
