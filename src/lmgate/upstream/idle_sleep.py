"""Putting the upstream machine to sleep when no one has used it for a while (off by default).

The other half of Wake-on-LAN: after `LMGATE_IDLE_SLEEP_AFTER` without a proxied request (and
none in flight) lmgate runs `LMGATE_IDLE_SLEEP_COMMAND` (an argv, never through a shell) or
POSTs to `LMGATE_IDLE_SLEEP_URL`, once; the next request wakes the machine again. Only a
gateway that sees every request may decide the upstream is idle: with several workers each
sees its share, so this runs with one worker only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
import structlog

from lmgate.exchange import Exchange
from lmgate.hooks import ProxyRequest, ResponseTap
from lmgate.redaction import redact_url

if TYPE_CHECKING:
    from lmgate.observe.events import EventBus
    from lmgate.settings import Settings
    from lmgate.upstream.sync import UpstreamWatcher

log = structlog.get_logger("lmgate.idle_sleep")

COUNTED = "idle_sleep.counted"  # Exchange.attributes: this request is in flight for us
ACTION_LIMIT_S = 60.0  # a sleep command or URL that takes longer is given up on
TICK_MAX_S = 1.0


class IdleSleeper:
    """A proxy hook and observer that counts requests in flight, and a loop that acts on a
    long enough silence."""

    def __init__(
        self,
        *,
        after: float,
        command: list[str],
        url: str | None,
        watcher: UpstreamWatcher,
        bus: EventBus,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.after = after
        self.command = command
        self.url = url
        self.watcher = watcher
        self.bus = bus
        self.clock = clock
        self.last = clock()
        self.in_flight = 0
        self.slept = False  # acted since the last request: not again until one comes

    @classmethod
    def build(
        cls, settings: Settings, watcher: UpstreamWatcher, bus: EventBus, *, alone: bool
    ) -> IdleSleeper | None:
        after = settings.idle_sleep_after
        if after is None or not (settings.idle_sleep_command or settings.idle_sleep_url):
            return None
        if not alone:
            log.warning("idle_sleep_off", reason="several workers each see only some requests")
            return None
        return cls(
            after=after,
            command=list(settings.idle_sleep_command),
            url=settings.idle_sleep_url,
            watcher=watcher,
            bus=bus,
        )

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        ex.attributes[COUNTED] = True
        self.in_flight += 1
        self.last = self.clock()
        self.slept = False
        return None

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        if ex.attributes.pop(COUNTED, None):
            self.in_flight -= 1
            self.last = self.clock()

    def due(self) -> float:
        """Seconds until the upstream counts as idle; 0 when it is (and not yet put to sleep)."""
        if self.in_flight or self.slept:
            return self.after
        return max(0.0, self.last + self.after - self.clock())

    async def run(self) -> None:
        while True:
            wait = self.due()
            if wait <= 0 and self.watcher.caps.reachable:
                self.slept = True
                try:
                    await self.sleep_upstream()
                except Exception:  # a broken command must not end the loop
                    log.exception("idle_sleep_crashed")
                continue
            await asyncio.sleep(min(max(wait, 0.05), TICK_MAX_S) if wait > 0 else TICK_MAX_S)

    async def sleep_upstream(self) -> bool:
        idle = round(self.clock() - self.last, 1)
        if self.command:
            ok, detail = await self._run_command()
            via = "command"
        else:
            ok, detail = await self._post()
            via = "url"
        self.bus.publish("upstream_sleep", via=via, ok=ok, idleSeconds=idle, detail=detail)
        (log.info if ok else log.warning)("upstream_sleep", via=via, ok=ok, detail=detail)
        return ok

    async def _run_command(self) -> tuple[bool, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            return False, f"cannot run {self.command[0]}: {exc.strerror or exc}"
        try:
            async with asyncio.timeout(ACTION_LIMIT_S):
                code = await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return False, f"{self.command[0]} did not finish within {ACTION_LIMIT_S:g} s"
        return code == 0, f"{self.command[0]} exited with {code}"

    async def _post(self) -> tuple[bool, str]:
        assert self.url is not None
        shown = redact_url(self.url)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ACTION_LIMIT_S)) as s,
                s.post(self.url) as resp,
            ):
                await resp.read()
                return resp.status < 400, f"POST {shown} answered {resp.status}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            return False, f"POST {shown} failed: {type(exc).__name__}"
