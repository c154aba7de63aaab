"""Every upstream of one gateway: a pooled client, a watcher and a model manager for each.

The primary (the first configured, or the one zero-config upstream) is the gateway's
`upstream`/`watcher`/`models` as before; the others are built the same way from their own
settings (URL and token), so none ever sends another's token. With one upstream this is a
list of one and the request path never looks at it.

Runtime changes (`/admin/upstreams`) are stored first (`registry.py`), then applied by making
the list the stored one (`follow`): the worker that took the call does so at once, and with
several workers every other one does the same when it sees the table change, through the state
store's `PRAGMA data_version` check (on each request's start, and every `FOLLOW_S` when idle).
Each worker then adds, drains, resumes or removes members exactly alike, and tells its
scheduler shell (`added`, `changed`, `removed`), so the core in the primary follows too.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry

from lmgate.admin.models import ModelManager
from lmgate.loading.choose import build_surfaces
from lmgate.observe.events import EventBus
from lmgate.observe.stats import Stats
from lmgate.settings import Settings
from lmgate.store.state import StateStore
from lmgate.upstream.client import UpstreamClient
from lmgate.upstream.sync import UpstreamWatcher
from lmgate.upstreams.config import UpstreamConfig
from lmgate.upstreams.health import Breaker
from lmgate.upstreams.metrics import UpstreamMetrics
from lmgate.upstreams.registry import Listed, Query, Raw, UpstreamRegistry

log = structlog.get_logger("lmgate.upstreams")
FOLLOW_S = 0.5  # an idle worker looks for other workers' upstream changes this often
FIRST_READ_S = 3.0  # requests wait this long at most for a new upstream's first model list
RETIRE_CHECK_S = 0.25  # a removed upstream's client closes this soon after its last answer
Change = tuple[str, "Member"]  # (event, the member it is about)


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
    breaker: Breaker = field(default_factory=Breaker)
    was_up: bool | None = None  # as last reported (`upstream_up` / `upstream_down`)
    born: float = field(default_factory=time.monotonic)
    first_read: asyncio.Event = field(default_factory=asyncio.Event)  # read, or failed

    def __post_init__(self) -> None:
        self.watcher.synced.append(self.first_read.set)
        self.watcher.failed.append(self.first_read.set)

    async def read_once(self) -> None:
        """Until its first model-list read worked or failed, or `FIRST_READ_S` have passed
        since it was added (a read that hangs delays nobody for longer)."""
        left = self.born + FIRST_READ_S - time.monotonic()
        if left > 0 and not self.first_read.is_set() and self.watcher.synced_at is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.first_read.wait(), left)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def up(self) -> bool:
        """Listed at least once, its last model-list read worked, and its breaker is not open."""
        watcher = self.watcher
        listed = watcher.synced_at is not None and watcher.last_error is None
        return listed and not self.breaker.is_open

    def offers(self, model: str) -> str | None:
        """The key this upstream knows `model` by, when it lists it and may serve it."""
        found = self.watcher.find(self.config.key_of(model))
        if found is None or not self.config.allows(found.key):
            return None
        return found.key

    def loaded(self, key: str) -> bool:
        return self.watcher.is_loaded(key)


class Upstreams:
    def __init__(self, members: list[Member], parts: Parts | None = None) -> None:
        self.members: dict[str, Member] = {m.name: m for m in members}
        self.primary = members[0]
        self.parts = parts  # what building another member takes (None: no runtime changes)
        # Requests are routed once there were ever several (a removed upstream stays known to
        # the scheduler, so a request must say where it may go).
        self.routed = len(members) > 1
        if self.routed:
            self._name_watchers()
        for member in members:
            self._watch_health(member)
        self.added: list[Callable[[Member], None]] = []  # told of each runtime addition
        self.changed: list[Callable[[Member], None]] = []  # told of each drain and resume
        self.removed: list[Callable[[Member], None]] = []  # told of each removal
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._removed: dict[str, Member] = {}  # until what was admitted there has ended
        self._started = False
        self._raw: Raw | None = None  # the stored table as this list last followed it
        self._stale = False  # the last look at the table failed: look again
        self._looks = 0  # reads of the table started
        self._taken = 0  # the latest read followed
        self._follower: asyncio.Task[None] | None = None
        self.settled = False  # every member's first model list was read (or failed, or late)

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self.members.values()))

    def __len__(self) -> int:
        return len(self.members)

    @property
    def several(self) -> bool:
        return len(self.members) > 1

    def get(self, name: str) -> Member | None:
        return self.members.get(name)

    async def settle(self) -> None:
        """Until every upstream's first model list is read, or has failed, or `FIRST_READ_S`
        have passed since it was added: a worker starting, or an upstream just added (here or
        through another worker), would otherwise know none of its models, so a request would
        pass the scheduler unseen or hear that no upstream offers its model. Once settled this
        costs the caller one attribute read (`settled`)."""
        if self.settled:
            return
        for member in list(self.members.values()):
            await member.read_once()
        self.settled = True

    def client_of(self, name: str) -> UpstreamClient:
        """The client of upstream `name`; one just removed still serves what was admitted
        there before (a request that waited in its queue)."""
        member = self.members.get(name) or self._removed.get(name)
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

    # -- health: `upstream_up` / `upstream_down` -------------------------------------------------

    def _watch_health(self, member: Member) -> None:
        def check() -> None:
            self.health_changed(member)

        member.watcher.synced.append(check)
        member.watcher.failed.append(check)

    def health_changed(self, member: Member, why: str | None = None) -> None:
        """Publish a change of `member.up` (the first look reports only a down upstream)."""
        now_up = member.up
        if not self.routed:  # one upstream: `upstream_state` and /ready say it, as ever
            member.was_up = now_up
            return
        if now_up == member.was_up or (member.was_up is None and now_up):
            if member.was_up is None and self.parts is not None and self.parts.metrics:
                self.parts.metrics.up(member.name, now_up)
            member.was_up = now_up
            return
        member.was_up = now_up
        if not now_up:
            breaker = member.breaker
            why = why or ("circuit open" if breaker.is_open else member.watcher.last_error)
        kind = "upstream_up" if now_up else "upstream_down"
        (log.info if now_up else log.warning)(kind, upstream=member.name, reason=why)
        if self.parts is not None:
            self.parts.bus.publish(kind, upstream=member.name, reason=why)
        if self.parts is not None and self.parts.metrics is not None:
            self.parts.metrics.up(member.name, now_up)

    def metrics(self, registry: CollectorRegistry) -> None:
        """Per-upstream Prometheus series, in this registry."""
        if self.parts is not None:
            self.parts.metrics = UpstreamMetrics(registry)

    def sent(self, name: str, outcome: str) -> None:
        if self.parts is not None and self.parts.metrics is not None:
            self.parts.metrics.sent(name, outcome)

    def retried(self, model: str | None, failed: str, to: str, why: str) -> None:
        log.warning("request_retried", model=model, upstream=failed, to=to, reason=why)
        if self.parts is not None:
            self.parts.bus.publish(
                "request_retried", model=model, upstream=failed, to=to, reason=why
            )

    def failed(self, name: str, why: str) -> None:
        """A request to `name` failed before its answer (refused, lost, or a 5xx)."""
        member = self.members.get(name)
        if member is not None and member.breaker.failure():
            self.health_changed(member, f"circuit open: {why}")

    def answered(self, name: str) -> None:
        member = self.members.get(name)
        if member is not None and member.breaker.success():
            self.health_changed(member)

    def _name_watchers(self) -> None:
        """Events and logs name the upstream once there are several."""
        for member in self.members.values():
            member.watcher.name = member.name

    async def start(self) -> None:
        self._started = True
        for member in self.others():
            self._run(member)
        if self.parts is not None and self.parts.state.follows:
            self._follower = asyncio.get_running_loop().create_task(self._follow_loop())

    def _run(self, member: Member) -> None:
        member.client.start_now()
        self._tasks[member.name] = asyncio.get_running_loop().create_task(member.watcher.run())

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *self._retiring]
        if self._follower is not None:
            tasks.append(self._follower)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        others = [*self.others(), *self._removed.values()]
        await asyncio.gather(*(m.client.close() for m in others), return_exceptions=True)

    # -- runtime changes (`/admin/upstreams`, here or through another worker) ---------------

    def stored(self, raw: Raw | None = None) -> Listed:
        """The configured list with the stored changes (`raw`: the table as read already)."""
        if self.parts is None or self.parts.registry is None:
            return [(m.config, m.draining) for m in self.members.values()]
        return self.parts.registry.apply(self.parts.settings.upstream_configs(), raw)

    def follow(self, listed: Listed) -> list[Change]:
        """Make this worker's list `listed` (the stored one): add, replace, drain, resume and
        remove members; the changes made, as (event, member). The primary stays, whatever."""
        changes: list[Change] = []
        wanted = {config.name: config for config, _ in listed}
        for other in self.others():
            if other.name not in wanted:
                changes.append(("upstream_removed", self.remove(other.name)))
        for config, draining in listed:
            member: Member | None = self.members.get(config.name)
            if member is not None and member is not self.primary and member.config != config:
                changes.append(("upstream_removed", self.remove(config.name)))  # replaced
                member = None
            if member is None:
                member = self.add(config)
                changes.append(("upstream_added", member))
            if member.draining != draining:
                if draining:
                    changes.append(("upstream_draining", self.drain(config.name)))
                else:
                    changes.append(("upstream_resumed", self.resume(config.name)))
        return changes

    def look(self) -> int:
        """A number for a read of the table about to start: later reads, higher numbers."""
        self._looks += 1
        return self._looks

    def take(self, raw: Raw, look: int, **event: object) -> list[Change]:
        """Follow the stored table `raw` (read as `look`) unless it is what was followed last,
        or older than it: a read that ran in a thread may end after a later one, and must not
        undo what that one found. Each change is published (`event`: extra fields, e.g. no
        request id for another worker's change)."""
        if look < self._taken:
            return []
        self._taken = look
        self._stale = False
        if raw == self._raw:
            return []
        self._raw = raw
        changes = self.follow(self.stored(raw))
        if self.parts is not None:
            for kind, member in changes:
                more = {"url": member.config.public()["url"]} if kind == "upstream_added" else {}
                self.parts.bus.publish(kind, upstream=member.name, **more, **event)
        return changes

    def _moved(self, read: Query) -> None:
        """The database moved (the state store's check): another worker may have changed the
        list. Reading the small table costs tens of microseconds; parsing it, only when it
        changed."""
        if self.parts is None or self.parts.registry is None:
            return
        look = self.look()
        try:
            raw = self.parts.registry.raw(read)
        except sqlite3.Error as exc:
            self._stale = True  # the loop reads it again
            log.warning("upstreams_unreadable", error=str(exc))
            return
        self.take(raw, look, requestId=None)

    async def _follow_loop(self) -> None:
        """An idle worker follows too: the state store's check every `FOLLOW_S`."""
        parts = self.parts
        assert parts is not None and parts.registry is not None
        while True:
            await asyncio.sleep(FOLLOW_S)
            try:
                if self._stale:
                    look = self.look()
                    self.take(await asyncio.to_thread(parts.registry.raw), look, requestId=None)
                else:
                    parts.state.refresh()
            except Exception:  # a bug or a busy database must not end following
                log.exception("upstreams_follow_failed")

    def add(self, config: UpstreamConfig) -> Member:
        """A new upstream, listed and taking requests from its first model-list read."""
        if self.parts is None:
            raise RuntimeError("upstreams cannot be added to this gateway")
        self._removed.pop(config.name, None)  # added again before it was retired: it retires
        member = member_of(self.parts.settings, config, *self.parts.shared())
        self.members[member.name] = member
        self.settled = False
        self.routed = True
        self._name_watchers()
        self._watch_health(member)
        if self._started:
            self._run(member)
        for told in self.added:
            told(member)
        return member

    def drain(self, name: str) -> Member:
        """No new requests; what runs there ends normally."""
        member = self.members[name]
        member.draining = True
        for told in self.changed:
            told(member)
        return member

    def resume(self, name: str) -> Member:
        """A drained upstream takes new requests again."""
        member = self.members[name]
        member.draining = False
        for told in self.changed:
            told(member)
        return member

    def remove(self, name: str) -> Member:
        """Gone from the list at once; its connections close once this worker's answers
        through it have ended."""
        member = self.members.pop(name)
        member.draining = True
        self._removed[name] = member
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        for told in self.removed:
            told(member)
        retire = asyncio.get_running_loop().create_task(self._retire(member))
        self._retiring.add(retire)
        retire.add_done_callback(self._retiring.discard)
        return member

    async def _retire(self, member: Member, *, most_s: float = 3600.0) -> None:
        """Close its client once this worker's answers through it have ended (a request just
        admitted there gets a moment to open its answer first)."""
        waited = 0.0
        while waited < most_s:
            await asyncio.sleep(RETIRE_CHECK_S)
            waited += RETIRE_CHECK_S
            if not member.client.active:
                break
        if self._removed.get(member.name) is member:
            del self._removed[member.name]
        await member.client.close()

    @classmethod
    def build(
        cls,
        settings: Settings,
        primary: tuple[UpstreamClient, UpstreamWatcher, ModelManager],
        state: StateStore,
        bus: EventBus,
        stats: Stats,
    ) -> Upstreams:
        parts = Parts(settings, state, bus, stats)
        configs = settings.upstream_configs()
        registry = parts.registry
        raw = registry.raw() if registry else None
        listed = registry.apply(configs, raw) if registry else [(c, False) for c in configs]
        members = [Member(configs[0], *primary, draining=listed[0][1])]
        for config, draining in listed[1:]:
            members.append(member_of(settings, config, state, bus, stats))
            members[-1].draining = draining
        ups = cls(members, parts)
        ups._raw = raw
        if state.follows:  # other workers' changes, seen when the database moves
            state.moved.append(ups._moved)
        return ups


@dataclass(slots=True)
class Parts:
    """What every member shares: settings, state, events, statistics, the stored changes."""

    settings: Settings
    state: StateStore
    bus: EventBus
    stats: Stats
    registry: UpstreamRegistry | None = None
    metrics: UpstreamMetrics | None = None

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = UpstreamRegistry(self.state.db)

    def shared(self) -> tuple[StateStore, EventBus, Stats]:
        return self.state, self.bus, self.stats


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
