"""Wake-on-LAN for every upstream: which sleeping machine a request waits for.

Each upstream with a MAC address (its `wake` entry; the primary also `LMGATE_WAKE_MAC`) has
its own `Waker`: its own packet, target, wait, held requests and power state. A request
waits only for the upstream it would go to, so the others' requests are never held:

- a request naming a model, when an upstream that is up offers it, goes on at once (an up
  upstream is always preferred, even busy). Else an upstream that does not answer, has a MAC
  address, is not draining and may serve the model is woken, and the request waits for it
  (one such upstream, the same for a whole burst): one whose last model list had the model,
  else one never listed yet (asleep since the gateway started) whose `models` patterns allow
  it, the one already waking first, then the heavier. Nothing to wake: the scheduler answers
  as ever (404 saying where the model is and why not);
- a model list is merged from the upstreams that answer, and waits for none;
- anything else goes to the primary, and waits for it as with one upstream;
- a request admitted on an upstream that then refuses its connection (it fell asleep since
  its watcher last looked) goes to another that may serve it, else waits for that upstream's
  wake and goes there (`rerouting`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmgate.classify import classify
from lmgate.errors import GatewayError
from lmgate.exchange import Exchange, clip
from lmgate.hooks import ProxyRequest, ResponseTap
from lmgate.observe.events import EventBus
from lmgate.settings import Settings
from lmgate.upstream.wake import Waker
from lmgate.upstreams.members import Member, Upstreams
from lmgate.upstreams.routing import ROUTE

if TYPE_CHECKING:
    from lmgate.gateway import Gateway

Reroute = Callable[[Exchange, ProxyRequest, str], Awaitable[str | None]]


class Wakers:
    """A proxy hook and observer over one `Waker` per upstream that has a MAC address."""

    def __init__(
        self,
        settings: Settings,
        upstreams: Upstreams,
        bus: EventBus,
        *,
        run_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self.bus = bus
        self.run_dir = run_dir  # with several workers: where they agree who sends a packet
        self.wakers: dict[str, Waker] = {}
        for member in upstreams:
            self._build(member)
        upstreams.added.append(self._build)

    def _build(self, member: Member) -> None:
        primary = member is self.upstreams.primary
        self.wakers.pop(member.name, None)  # added again: its new table (a wake under way goes on)
        waker = Waker.build(
            self.settings,
            member.watcher,
            member.client,
            self.bus,
            self.run_dir,
            config=member.config,
            primary=primary,
            name=member.name,
        )
        if waker is not None:
            self.wakers[member.name] = waker

    def __bool__(self) -> bool:
        return bool(self.wakers)

    def of(self, name: str) -> Waker | None:
        member = self.upstreams.get(name)
        return self.wakers.get(name) if member is not None else None

    # -- the request path --------------------------------------------------------------------

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        if not self.wakers:
            return None
        ups = self.upstreams
        if not ups.routed:  # one upstream, as ever
            waker = self.wakers.get(ups.primary.name)
            return None if waker is None else await waker.before_forward(ex, request)
        model = ex.model if request.kind is not None else None
        if model is None and request.method in ("GET", "HEAD"):
            route = classify(request.path)
            if route.listing is not None:
                return None  # merged from the upstreams that answer
            model = route.model
        if not model:
            waker = self.wakers.get(ups.primary.name)
            return None if waker is None else await waker.before_forward(ex, request)
        return await self._for_model(model, request)

    async def _for_model(self, model: str, request: ProxyRequest) -> ResponseTap | None:
        if self.upstreams.offering(model):  # the first lists were read before serving began
            return None
        member = self.sleeper_for(model)
        if member is None:
            return None
        waker = self.wakers[member.name]
        tap = await waker.hold(waker.announce(request) if waker.announce else None)
        self.upstreams.answered(member.name)  # it answers: an open breaker closes
        return tap

    def sleeper_for(self, model: str) -> Member | None:
        """The upstream to wake for `model`, when no upstream that is up offers it."""
        found: list[tuple[bool, bool, float, int, Member]] = []
        for order, member in enumerate(self.upstreams):
            waker = self.wakers.get(member.name)
            if waker is None or member.draining or member.watcher.caps.reachable:
                continue
            listed = self._may_serve(member, model)
            if listed is None:
                continue
            found.append((not waker.waking, not listed, -member.config.weight, order, member))
        return min(found, key=lambda entry: entry[:4])[4] if found else None

    @staticmethod
    def _may_serve(member: Member, model: str) -> bool | None:
        """True: its last model list had `model` (allowed); False: it was never listed and
        its patterns allow it; None: it may not serve it."""
        config = member.config
        key = config.key_of(model)
        found = member.watcher.find(key)
        if found is not None:
            return True if config.allows(found.key) else None
        if member.watcher.synced_at is None and config.allows(key):
            return False
        return None

    def rerouting(self, reroute: Reroute) -> Reroute:
        """The relay's second try: elsewhere if any upstream may take the request, else once
        the upstream that refused it (asleep, with a MAC address) has been woken."""

        async def again(ex: Exchange, request: ProxyRequest, failed: str) -> str | None:
            other = await reroute(ex, request, failed)
            waker = self.of(failed)
            if other is not None or waker is None or request.kind is None:
                return other
            try:
                await waker.hold(request.early)
            except GatewayError:
                return None  # the relay answers with the first try's failure
            self.upstreams.answered(failed)
            return await reroute(ex, request, "")  # admitted anew, now where it woke

        return again

    # -- noticing a sleep the watchers have not seen yet -------------------------------------

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        if not self.wakers:
            return
        chosen = ex.attributes.get(ROUTE)
        name = chosen if isinstance(chosen, str) else self.upstreams.primary.name
        waker = self.wakers.get(name)
        if waker is not None:
            waker.on_finish(ex)

    # -- the admin routes --------------------------------------------------------------------

    def state(self, member: Member) -> dict[str, Any]:
        """Its power and wake settings, for `/admin/upstreams`."""
        waker = self.wakers.get(member.name)
        if waker is not None:
            return waker.state()
        caps = member.watcher.caps
        power = "unknown" if not caps.checked_at else "awake" if caps.reachable else "asleep"
        return {"power": power, "wake": None, "wakeStatus": None}

    async def close(self) -> None:
        for waker in self.wakers.values():
            await waker.close()


class WakeNotConfigured(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "wake_not_configured"


def power(gw: Gateway, member: Member) -> dict[str, Any]:
    """An upstream's power state and wake settings, for `/admin/upstreams`."""
    wakers = gw.power.wakers
    if wakers is None:  # pragma: no cover - always built so
        return {"power": "unknown", "wake": None, "wakeStatus": None}
    return wakers.state(member)


def wake_upstream(gw: Gateway, member: Member) -> dict[str, Any]:
    """`POST /admin/upstreams/NAME/wake`: its packet now (unless a wake is under way, whose
    packet went already: `started` false), and the watch for it to answer."""
    wakers = gw.power.wakers
    waker = wakers.of(member.name) if wakers is not None else None
    if waker is None:
        raise WakeNotConfigured(
            f"upstream '{clip(member.name)}' has no MAC address to wake it by: give its table "
            "a wake entry (the primary: or LMGATE_WAKE_MAC)"
        )
    started = waker.wake_now()
    return {"upstream": member.name, "started": started, **waker.state()}
