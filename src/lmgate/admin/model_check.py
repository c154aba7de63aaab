"""Is a model the upstream has? Asked before it becomes the active model.

Activating a name the upstream does not know would make every model-less request fail
later, far from the mistake; refusing at once, with the names it probably meant, puts the
error where it was made. `force` skips the check (a model about to be downloaded). When the
upstream cannot be asked, activation goes ahead with a warning rather than being blocked by
an outage.
"""

from __future__ import annotations

import asyncio
import difflib
from typing import TYPE_CHECKING

import structlog

from lmgate.errors import NotFound
from lmgate.upstream.sync import UpstreamWatcher

if TYPE_CHECKING:
    from lmgate.upstreams.members import Member, Upstreams

log = structlog.get_logger("lmgate.admin")
_SHOWN = 10


async def check_known(watcher: UpstreamWatcher, key: str) -> str | None:
    """Raise 404 `model_not_found` naming close matches when the upstream lacks `key`;
    returns a warning when the upstream could not be asked, else None."""
    return await _check([(watcher, key)], key)


async def check_known_on(ups: Upstreams, key: str) -> str | None:
    """`check_known` over every upstream: known when one of them lists it (under its own key
    for a gateway-level alias) and may serve it; a warning when one that could not be asked
    may have it."""
    if not ups.routed:
        return await check_known(ups.primary.watcher, key)
    members = list(ups)
    return await _check([(m.watcher, m.config.key_of(key)) for m in members], key, members)


def _lists(pairs: list[tuple[UpstreamWatcher, str]], members: list[Member] | None) -> bool:
    for index, (watcher, name) in enumerate(pairs):
        found = watcher.find(name)
        if found is not None and (members is None or members[index].config.allows(found.key)):
            return True
    return False


async def _check(
    pairs: list[tuple[UpstreamWatcher, str]], key: str, members: list[Member] | None = None
) -> str | None:
    if _lists(pairs, members):
        return None
    failures: list[str] = []

    async def poll(watcher: UpstreamWatcher) -> None:  # maybe downloaded or loaded since
        try:
            await watcher.poll()
        except Exception as exc:  # unreachable, or an answer that is not a model list
            log.warning("model_check_skipped", model=key, error=str(exc), upstream=watcher.name)
            failures.append(str(exc))

    await asyncio.gather(*(poll(watcher) for watcher, _ in pairs))
    if _lists(pairs, members):
        return None
    if failures:  # it may be on one that could not be asked
        return f"the upstream could not be asked whether it has '{key}': {failures[0]}"
    names = sorted({n for watcher, _ in pairs for n in (*watcher.models, *watcher.instances)})
    close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
    if close:
        hint = "did you mean " + ", ".join(f"'{n}'" for n in close) + "?"
    elif names:
        more = f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
        hint = "it has " + ", ".join(f"'{n}'" for n in names[:_SHOWN]) + more + "."
    else:
        hint = "it lists no models."
    subject = (
        f"the upstream has no model '{key}'"
        if len(pairs) == 1
        else f"no upstream offers a model '{key}'"
    )
    raise NotFound(
        f'{subject}: {hint} Send "force": true to activate it anyway.', code="model_not_found"
    )
