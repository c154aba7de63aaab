"""The upstream machines' power, as the gateway wires it: waking them (`wake.Waker`, one per
upstream with a MAC address, chosen per request by `upstreams.waking.Wakers`) and putting the
primary to sleep when idle (`idle_sleep.IdleSleeper`). Both are off unless configured, and
then add nothing to the request path."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmgate.exchange import Observer
from lmgate.hooks import ProxyHook
from lmgate.observe.events import EventBus
from lmgate.settings import Settings
from lmgate.upstream.idle_sleep import IdleSleeper
from lmgate.upstreams.members import Upstreams
from lmgate.upstreams.waking import Reroute, Wakers


@dataclass(slots=True)
class UpstreamPower:
    wakers: Wakers | None = None
    sleeper: IdleSleeper | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        upstreams: Upstreams,
        bus: EventBus,
        *,
        alone: bool = True,
        run_dir: Path | None = None,
    ) -> UpstreamPower:
        """`alone`: one worker; else `run_dir` is where the workers agree who sends a wake."""
        wakers = Wakers(settings, upstreams, bus, run_dir=None if alone else run_dir)
        primary = upstreams.primary.watcher
        return cls(wakers, IdleSleeper.build(settings, primary, bus, alone=alone))

    def hooks(self) -> list[ProxyHook]:
        """Before the scheduler: a request is counted as activity, then waits for a wake.
        (The wakers stay in the chain while none is configured: an upstream added at runtime
        may bring a MAC address; with none, they cost one dictionary test.)"""
        return [part for part in (self.sleeper, self.wakers) if part is not None]

    def observers(self) -> list[Observer]:
        return [part for part in (self.sleeper, self.wakers) if part is not None]

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [self.sleeper.run] if self.sleeper is not None else []

    def rerouting(self, reroute: Reroute) -> Reroute:
        """The relay's second try, which may wait for the refusing upstream's wake."""
        return reroute if self.wakers is None else self.wakers.rerouting(reroute)

    async def close(self) -> None:
        if self.wakers is not None:
            await self.wakers.close()
