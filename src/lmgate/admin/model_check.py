"""Is a model the upstream has? Asked before it becomes the active model.

Activating a name the upstream does not know would make every model-less request fail
later, far from the mistake; refusing at once, with the names it probably meant, puts the
error where it was made. `force` skips the check (a model about to be downloaded). When the
upstream cannot be asked, activation goes ahead with a warning rather than being blocked by
an outage.
"""

from __future__ import annotations

import difflib

import structlog

from lmgate.errors import NotFound
from lmgate.upstream.sync import UpstreamWatcher

log = structlog.get_logger("lmgate.admin")
_SHOWN = 10


async def check_known(watcher: UpstreamWatcher, key: str) -> str | None:
    """Raise 404 `model_not_found` naming close matches when the upstream lacks `key`;
    returns a warning when the upstream could not be asked, else None."""
    if watcher.find(key) is not None:
        return None
    try:
        await watcher.poll()  # maybe downloaded or loaded since the last look
    except Exception as exc:  # unreachable, or an answer that is not a model list
        log.warning("model_check_skipped", model=key, error=str(exc))
        return f"the upstream could not be asked whether it has '{key}': {exc}"
    if watcher.find(key) is not None:
        return None
    names = sorted({*watcher.models, *watcher.instances})
    close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
    if close:
        hint = "did you mean " + ", ".join(f"'{n}'" for n in close) + "?"
    elif names:
        more = f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
        hint = "it has " + ", ".join(f"'{n}'" for n in names[:_SHOWN]) + more + "."
    else:
        hint = "it lists no models."
    raise NotFound(
        f"the upstream has no model '{key}': {hint} Send \"force\": true to activate it anyway.",
        code="model_not_found",
    )
