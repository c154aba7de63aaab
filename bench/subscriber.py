"""A `/debug/stream` subscriber, run as its own process so the gateway publishes for real.

An event bus with nobody listening is nearly free; a dashboard being open is the normal case,
so the bench keeps one subscriber connected. It lives outside the load generator's event loop
so that reading events never delays a measured response. It prints `ready` once connected,
and on SIGTERM one JSON line with what it saw (events, and `events_lost` the gateway reported).

    python -m bench.subscriber http://127.0.0.1:8001/debug/stream ADMIN_KEY
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import aiohttp
import orjson

from bench.aio import run


async def subscribe(url: str, key: str) -> dict[str, int]:
    counts = {"events": 0, "lost": 0}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def read() -> None:
        headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, headers=headers) as resp,
            ):
                if resp.status != 200:
                    print(f"HTTP {resp.status}", flush=True)
                    return
                lost_report = False
                async for line in resp.content:
                    if line.startswith(b"event:"):
                        kind = line[6:].strip()
                        lost_report = kind == b"events_lost"
                        if kind == b"connected":
                            print("ready", flush=True)
                        elif not lost_report:
                            counts["events"] += 1
                    elif lost_report and line.startswith(b"data:"):
                        counts["lost"] += int(orjson.loads(line[5:]).get("count", 0))
        except aiohttp.ClientError as exc:
            print(f"{type(exc).__name__}: {exc}", flush=True)
        finally:
            stop.set()

    reader = asyncio.create_task(read())
    await stop.wait()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    return counts


def main() -> None:
    url, key = sys.argv[1], sys.argv[2]
    counts = run(subscribe(url, key))
    print(orjson.dumps(counts).decode(), flush=True)


if __name__ == "__main__":
    main()
