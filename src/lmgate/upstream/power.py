"""The upstream machine's power, as the gateway wires it: waking it (`wake.Waker`) and putting
it to sleep when idle (`idle_sleep.IdleSleeper`). Both are off unless configured, and then add
nothing to the request path."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmgate.exchange import Observer
from lmgate.hooks import ProxyHook
from lmgate.observe.events import EventBus
from lmgate.settings import Settings
from lmgate.upstream.client import UpstreamClient
from lmgate.upstream.idle_sleep import IdleSleeper
from lmgate.upstream.sync import UpstreamWatcher
from lmgate.upstream.wake import Waker


@dataclass(slots=True)
class UpstreamPower:
    waker: Waker | None = None
    sleeper: IdleSleeper | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        watcher: UpstreamWatcher,
        client: UpstreamClient,
        bus: EventBus,
        *,
        alone: bool = True,
        run_dir: Path | None = None,
    ) -> UpstreamPower:
        """`alone`: one worker; else `run_dir` is where the workers agree who sends a wake."""
        return cls(
            Waker.build(settings, watcher, client, bus, None if alone else run_dir),
            IdleSleeper.build(settings, watcher, bus, alone=alone),
        )

    def hooks(self) -> list[ProxyHook]:
        """Before the scheduler: a request is counted as activity, then waits for a wake."""
        return [part for part in (self.sleeper, self.waker) if part is not None]

    def observers(self) -> list[Observer]:
        return [part for part in (self.sleeper, self.waker) if part is not None]

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        return [self.sleeper.run] if self.sleeper is not None else []

    async def close(self) -> None:
        if self.waker is not None:
            await self.waker.close()
