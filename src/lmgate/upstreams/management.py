"""Which upstream an admin load acts on: the one named (`"upstream": NAME`), else, among
those that list the model, may serve it, are up and not draining, those that can load models
(none: those that cannot, where the load is stored for the operator to do): one where it is
loaded already, else the one with fewest models loaded, the heavier among equals. With one
upstream, always it."""

from __future__ import annotations

from lmgate.admin.models import ModelManager
from lmgate.errors import NotFound
from lmgate.exchange import clip
from lmgate.upstreams.members import Member, Upstreams
from lmgate.upstreams.routing import ModelNotAvailable


def _unknown(name: str) -> NotFound:
    return NotFound(f"no upstream is named '{clip(name)}'", code="upstream_not_found")


def manager_for(ups: Upstreams, model: str, name: str | None) -> tuple[ModelManager, str]:
    if name is not None:
        member = ups.get(name)
        if member is None:
            raise _unknown(name)
        return member.models, member.name
    if not ups.routed:
        return ups.primary.models, ups.primary.name
    offering = ups.offering(model)
    able = [(m, key) for m, key in offering if m.watcher.caps.model_management] or offering
    if not able:
        raise ModelNotAvailable(f"no upstream offers '{clip(model)}'")

    def rank(entry: tuple[Member, str]) -> tuple[bool, int, float, str]:
        member, key = entry
        loaded = len({i.model_key for i in member.watcher.instances.values()})
        return (not member.loaded(key), loaded, -member.config.weight, member.name)

    chosen = min(able, key=rank)[0]
    return chosen.models, chosen.name
