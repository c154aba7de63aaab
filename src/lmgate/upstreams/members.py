"""Every upstream of one gateway: a pooled client, a watcher and a model manager for each.

The primary (the first configured, or the one zero-config upstream) is the gateway's
`upstream`/`watcher`/`models` as before; the others are built the same way from their own
settings (URL and token), so none ever sends another's token. With one upstream this is a
list of one and the request path never looks at it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from lmgate.admin.models import ModelManager
from lmgate.loading.choose import build_surfaces
from lmgate.observe.events import EventBus
from lmgate.observe.stats import Stats
from lmgate.settings import Settings
from lmgate.store.state import StateStore
from lmgate.upstream.client import UpstreamClient
from lmgate.upstream.sync import UpstreamWatcher
from lmgate.upstreams.config import UpstreamConfig

Loop = Callable[[], Coroutine[Any, Any, None]]


def settings_for(settings: Settings, config: UpstreamConfig) -> Settings:
    """The gateway's settings as one upstream's parts see them: its URL, its token, its
    limits. Built without validation: every value was validated already."""
    return settings.model_copy(
        update={
            "upstream": config.url,
            "upstream_token": config.token,
            "upstreams": [],
            "max_loaded_models": config.max_loaded_models,
            "model_memory_budget": config.memory_budget,
            "model_slots": config.slots,
        }
    )


@dataclass(slots=True)
class Member:
    config: UpstreamConfig
    client: UpstreamClient
    watcher: UpstreamWatcher
    models: ModelManager
    draining: bool = False  # takes no new requests; what runs there finishes

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def up(self) -> bool:
        """Listed at least once, and its last model-list read worked."""
        watcher = self.watcher
        return watcher.synced_at is not None and watcher.last_error is None

    def offers(self, model: str) -> str | None:
        """The key this upstream knows `model` by, when it lists it and may serve it."""
        found = self.watcher.find(model)
        if found is None or not self.config.allows(found.key):
            return None
        return found.key

    def loaded(self, key: str) -> bool:
        return self.watcher.is_loaded(key)


class Upstreams:
    def __init__(self, members: list[Member]) -> None:
        self.members: dict[str, Member] = {m.name: m for m in members}
        self.primary = members[0]

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self.members.values()))

    def __len__(self) -> int:
        return len(self.members)

    @property
    def several(self) -> bool:
        return len(self.members) > 1

    def get(self, name: str) -> Member | None:
        return self.members.get(name)

    def client_of(self, name: str) -> UpstreamClient:
        member = self.members.get(name)
        return self.primary.client if member is None else member.client

    def offering(self, model: str) -> list[tuple[Member, str]]:
        """Upstreams that may take a request for `model` now, with the key each knows it by:
        listed there, allowed there, up, and not draining."""
        found: list[tuple[Member, str]] = []
        for member in self.members.values():
            if member.draining or not member.up:
                continue
            key = member.offers(model)
            if key is not None:
                found.append((member, key))
        return found

    def others(self) -> list[Member]:
        """Every upstream but the primary (whose parts the gateway starts and stops itself)."""
        return [m for m in self.members.values() if m is not self.primary]

    async def start(self) -> None:
        for member in self.others():
            await member.client.start()

    async def close(self) -> None:
        await asyncio.gather(*(m.client.close() for m in self.others()), return_exceptions=True)

    def loops(self) -> list[Loop]:
        return [m.watcher.run for m in self.others()]

    @classmethod
    def build(
        cls,
        settings: Settings,
        primary: tuple[UpstreamClient, UpstreamWatcher, ModelManager],
        state: StateStore,
        bus: EventBus,
        stats: Stats,
    ) -> Upstreams:
        configs = settings.upstream_configs()
        members = [Member(configs[0], *primary)]
        for config in configs[1:]:
            members.append(member_of(settings, config, state, bus, stats))
        return cls(members)


def member_of(
    settings: Settings, config: UpstreamConfig, state: StateStore, bus: EventBus, stats: Stats
) -> Member:
    own = settings_for(settings, config)
    client = UpstreamClient(own)
    watcher = UpstreamWatcher(client, bus, interval=settings.sync_interval)
    models = ModelManager(
        client,
        watcher,
        state,
        bus,
        stats,
        load_timeout=settings.load_timeout,
        surfaces=build_surfaces(own, client, watcher),
    )
    return Member(config, client, watcher, models)
