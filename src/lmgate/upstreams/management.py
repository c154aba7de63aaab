"""Which upstream a piece of model management acts on, when there are several.

Every choice takes `"upstream": NAME` first (an unknown name: 404 `upstream_not_found`).
Without one:

- a load (admin route, `LMGATE_PRELOAD`) goes, among the upstreams that list the model, may
  serve it, are up and not draining, to those that can load models (none: those that cannot,
  where the load is stored for the operator to do), ranked by the scheduler's own placement
  (`schedule.placement`): where it is loaded already, else the core's plan for a load there
  (`plan_room`: the victims its memory budget and `max_loaded_models` call for) at the core's
  cost (`plan_cost`: no busy model to drain, then the fewest evictions, then the heavier
  upstream). An upstream whose limits leave no room for it (a model larger than its memory
  budget, only pinned or others' models to evict) comes last;
- an unload goes to every upstream where the model (or the instance) is loaded, each reported;
- a download goes to the heaviest upstream that is up, not draining, and has LM Studio 0.4's
  download API.

With one upstream, every choice is that upstream, as before there were several.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmgate.errors import GatewayError, NotFound
from lmgate.exchange import clip
from lmgate.schedule.placement import plan_cost, plan_room
from lmgate.schedule.types import ModelPolicy, UpstreamSpec
from lmgate.schedule.upstreams import UpstreamState
from lmgate.upstreams.members import Member, Upstreams
from lmgate.upstreams.routing import ModelNotAvailable

if TYPE_CHECKING:
    from lmgate.schedule.shell import SchedulerShell

__all__ = [
    "Placing",
    "download_target",
    "load_target",
    "manager_for",
    "named",
    "preload_target",
    "unload_targets",
]


class DownloadsUnavailable(GatewayError):
    status = 501
    type = "invalid_request_error"
    code = "not_implemented"


def _unknown(name: str) -> NotFound:
    return NotFound(f"no upstream is named '{clip(name)}'", code="upstream_not_found")


def named(ups: Upstreams, name: str) -> Member:
    member = ups.get(name)
    if member is None:
        raise _unknown(name)
    return member


# -- loads: the scheduler's placement ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placing:
    """What the placement rules read: each upstream's state as the scheduler's core keeps it,
    the models' policies, the active model (evicted last), whether models lmgate did not load
    may make room, and the core's clock."""

    states: Mapping[str, UpstreamState]
    policies: Mapping[str, ModelPolicy]
    active: str | None
    manage_all: bool
    now: float

    @classmethod
    def of(cls, shell: SchedulerShell) -> Placing:
        """The hosted core's own state; a worker that does not host it builds the same from its
        watchers' listings (it cannot tell who loaded what, so any loaded model may count as
        one that makes room, and nothing counts as busy)."""
        core = shell.local
        if shell.remote is None:
            return cls(core.ups, core.policies, core.active, core.config.manage_all, shell.clock())
        states = {m.name: _view(m, shell.specs.get(m.name), core.policies) for m in shell.upstreams}
        return cls(states, core.policies, shell.state.state.active_model, True, shell.clock())


def _view(
    member: Member, spec: UpstreamSpec | None, policies: Mapping[str, ModelPolicy]
) -> UpstreamState:
    """An upstream's state built from its watcher's last listing, as the core builds its own."""
    c = member.config
    up = UpstreamState(
        spec
        or UpstreamSpec(
            c.name,
            max_loaded_models=c.max_loaded_models,
            memory_budget=c.memory_budget,
            weight=c.weight,
        )
    )
    loaded: dict[str, int | None] = {i.model_key: None for i in member.watcher.instances.values()}
    sizes = {
        m.key: m.size_bytes for m in member.watcher.models.values() if m.size_bytes is not None
    }
    up.apply_listing(loaded, sizes, 0.0, policies, 1)
    return up


def load_rank(
    member: Member, key: str, placing: Placing | None
) -> tuple[int, int, int, float, str]:
    """Lower is better: loaded already, then the core's plan for a load there (`plan_room`:
    the victims its count and memory limits call for, none if no allowed set makes room) at
    the core's cost (`plan_cost`: drains, evictions, weight)."""
    weight = member.config.weight
    if member.loaded(key):
        return (0, 0, 0, -weight, member.name)
    up = placing.states.get(member.name) if placing is not None else None
    if up is None or placing is None:  # an upstream the core does not know yet: as found
        return (1, 0, 0, -weight, member.name)
    size = up.size_of(key, placing.policies.get(key))
    plan = plan_room(
        up,
        key,
        size,
        policy_of=placing.policies.get,
        active=placing.active,
        manage_all=placing.manage_all,
        now=placing.now,
    )
    if plan is None:
        return (2, 0, 0, -weight, member.name)
    return (1, *plan_cost(up, plan))


def load_target(
    ups: Upstreams, model: str, name: str | None, placing: Placing | None = None
) -> tuple[Member, str]:
    """The upstream a load of `model` goes to, and the key it knows the model by there."""
    if name is not None:
        member = named(ups, name)
        return member, member.config.key_of(model)
    if not ups.routed:
        return ups.primary, model
    offering = ups.offering(model)
    able = [(m, key) for m, key in offering if m.watcher.caps.model_management] or offering
    if not able:
        raise ModelNotAvailable(f"no upstream offers '{clip(model)}'")
    return min(able, key=lambda entry: load_rank(entry[0], entry[1], placing))


def manager_for(
    ups: Upstreams, model: str, name: str | None, placing: Placing | None = None
) -> tuple[Member, str]:
    """`load_target`, under the name the admin load route has always called."""
    return load_target(ups, model, name, placing)


def preload_target(ups: Upstreams, entry: str, placing: Placing | None) -> tuple[Member, str] | str:
    """Where an `LMGATE_PRELOAD` entry loads: `NAME:model` on upstream NAME (when NAME is one),
    else as an admin load without `upstream` would. A string: why it cannot be placed."""
    name, sep, rest = entry.partition(":")
    if sep and rest and ups.get(name) is not None:
        member = ups.members[name]
        key = member.offers(rest)
        if key is None:
            return f"upstream '{name}' does not offer this model"
        return member, key
    if not ups.routed:
        found = ups.primary.watcher.find(entry)
        return (
            (ups.primary, found.key)
            if found is not None
            else "the upstream does not offer this model"
        )
    try:
        return load_target(ups, entry, None, placing)
    except ModelNotAvailable:
        return "no upstream that is up offers this model"


# -- unloads: where it is loaded --------------------------------------------------------------


def _where_loaded(ups: Upstreams, model_key: str | None, instance_id: str | None) -> list[Member]:
    found = []
    for member in ups:
        watcher = member.watcher
        if instance_id is not None:
            if instance_id in watcher.instances:
                found.append(member)
        elif model_key is not None:
            model = watcher.find(member.config.key_of(model_key))
            if model is not None and model.instances:
                found.append(member)
    return found


async def _relist(members: list[Member]) -> None:
    """Read every model list once more (a load or unload may have happened since)."""

    async def poll(member: Member) -> None:
        with contextlib.suppress(GatewayError):
            await member.watcher.poll()

    await asyncio.gather(*(poll(m) for m in members))


async def unload_targets(
    ups: Upstreams,
    *,
    model_key: str | None,
    instance_id: str | None,
    everything: bool,
    name: str | None,
) -> list[Member]:
    """The upstreams an unload acts on: the one named; every one for `all`; else every one
    where the instance (or the model) is loaded, read again when none is. A model loaded
    nowhere goes to the first upstream that lists it (nothing to unload: an empty answer);
    listed nowhere, or an instance loaded nowhere: 404."""
    if name is not None:
        return [named(ups, name)]
    if not ups.routed:
        return [ups.primary]
    if everything:
        return [m for m in ups if m.up] or list(ups)
    found = _where_loaded(ups, model_key, instance_id)
    if not found:
        await _relist(list(ups))
        found = _where_loaded(ups, model_key, instance_id)
    if found:
        return found
    if instance_id is not None:
        raise NotFound(
            f"no upstream has a loaded instance '{clip(instance_id)}'", code="instance_not_found"
        )
    key = model_key or ""
    listing = [m for m in ups if m.watcher.find(m.config.key_of(key)) is not None]
    if not listing:
        raise ModelNotAvailable(f"no upstream has a model '{clip(key)}'")
    return listing[:1]


def loaded_anywhere(ups: Upstreams, model: str) -> bool:
    """Whether `model` is loaded on any upstream (the active model stays while it is)."""
    return any(m.loaded(m.config.key_of(model)) for m in ups)


# -- downloads: an upstream with LM Studio's download API -------------------------------------


def _cannot_download(member: Member) -> str | None:
    """Why `member` cannot download models now; None: it can."""
    caps = member.watcher.caps
    if member.draining:
        return "draining"
    if not member.up:
        return "down"
    if not caps.native_v1:
        return f"{caps.kind}: no model download API (LM Studio 0.4 or later has it)"
    return None


def download_target(ups: Upstreams, name: str | None) -> Member:
    """The upstream a download runs on: the one named, else the heaviest that can download
    (then the first configured). With one upstream, it (its download manager says why not)."""
    if name is not None:
        member = named(ups, name)
        why = _cannot_download(member) if ups.routed else None
        if why is not None:
            raise DownloadsUnavailable(f"upstream '{member.name}' cannot download models: {why}")
        return member
    if not ups.routed:
        return ups.primary
    reasons: list[str] = []
    able: list[Member] = []
    for member in ups:
        why = _cannot_download(member)
        if why is None:
            able.append(member)
        else:
            reasons.append(f"{member.name} ({why})")
    if not able:
        raise DownloadsUnavailable("no upstream can download models: " + "; ".join(reasons))
    return max(able, key=lambda m: m.config.weight)  # `max` keeps the first among equals
