"""Which surface loads: per upstream, the ones that work; per request, the best that applies
every requested field (SDK > lms > REST), else the one that applies the most.

`build_surfaces` is the one list of surfaces a gateway has, best first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from lmgate.loading.errors import SurfaceUnavailable
from lmgate.loading.fields import PREFERENCE, table
from lmgate.loading.lms import LmsSurface
from lmgate.loading.rest import RestSurface
from lmgate.loading.sdk import SdkSurface
from lmgate.loading.surface import LoadSurface
from lmgate.settings import Settings
from lmgate.upstream.capabilities import Capabilities
from lmgate.upstream.client import UpstreamClient
from lmgate.upstream.sync import UpstreamWatcher


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Every secret value in the settings, to be masked in a tool's messages."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, SecretStr) and item.get_secret_value():
                found.append(item.get_secret_value())
    return tuple(found)


def build_surfaces(
    settings: Settings, client: UpstreamClient, watcher: UpstreamWatcher
) -> list[LoadSurface]:
    """The gateway's load surfaces, best first: LM Studio's SDK, then `lms`, then REST."""
    return surfaces_for(settings, client, watcher.capabilities)


def surfaces_for(
    settings: Settings,
    client: UpstreamClient,
    capabilities: Callable[[], Awaitable[Capabilities]],
) -> list[LoadSurface]:
    """The load surfaces for an upstream whose capabilities `capabilities` tells (the
    gateway's watcher, or one probe for `lmgate doctor`)."""

    async def rest_offered() -> bool:
        return (await capabilities()).native_v1

    async def is_lmstudio() -> bool:
        return (await capabilities()).lmstudio

    return [
        SdkSurface(settings),
        LmsSurface(
            settings.lms_path,
            settings.upstream_url,
            is_lmstudio,
            load_timeout=settings.load_timeout,
            secrets=secrets_of(settings),
        ),
        RestSurface(client, rest_offered, load_timeout=settings.load_timeout),
    ]


@dataclass(frozen=True, slots=True)
class Choice:
    surface: LoadSurface
    missing: frozenset[str]  # requested fields the chosen surface cannot set


def _rank(surface: LoadSurface) -> int:
    return PREFERENCE.index(surface.name) if surface.name in PREFERENCE else len(PREFERENCE)


class Chooser:
    def __init__(self, surfaces: Iterable[LoadSurface]) -> None:
        self.surfaces = sorted(surfaces, key=_rank)

    async def available(self) -> list[LoadSurface]:
        return [s for s in self.surfaces if await s.available()]

    def named(self, name: str) -> LoadSurface | None:
        return next((s for s in self.surfaces if s.name == name), None)

    async def choose(self, wanted: Iterable[str], forced: str | None = None) -> Choice:
        """The surface for a load asking for `wanted` fields (dotted names)."""
        asked = frozenset(wanted)
        if forced is not None:
            surface = self.named(forced)
            if surface is None or not await surface.available():
                why = getattr(surface, "why_not", None) if surface is not None else None
                raise SurfaceUnavailable(
                    f"the {forced!r} load surface is not available for this upstream"
                    + (f": {why}" if why else ""),
                    param="surface",
                )
            return Choice(surface, asked - surface.fields())
        candidates = await self.available()
        if not candidates:
            raise SurfaceUnavailable("no load surface is available for this upstream")
        best = max(candidates, key=lambda s: (len(asked & s.fields()), -_rank(s)))
        return Choice(best, asked - best.fields())

    async def summary(self) -> str:
        """One line for people: the surfaces that work, and why each other one does not."""
        described = await self.describe()
        works = [name for name, entry in described.items() if entry["available"]]
        not_here = [
            f"{name}: {entry.get('reason') or 'not available'}"
            for name, entry in described.items()
            if not entry["available"]
        ]
        head = "load surfaces " + (", ".join(works) if works else "none")
        return head + (f" (not {'; '.join(not_here)})" if not_here else "")

    async def describe(self) -> dict[str, Any]:
        """For `GET /admin/upstream`: each surface and whether (or why not) it works."""
        out: dict[str, Any] = {}
        for surface in self.surfaces:
            ok = await surface.available()
            entry: dict[str, Any] = {"available": ok}
            why = getattr(surface, "why_not", None)
            if not ok and why:
                entry["reason"] = why
            out[surface.name] = entry
        return out


async def load_surfaces(chooser: Chooser) -> dict[str, Any]:
    """`GET /admin/upstream`'s `loadSurfaces`: the surfaces that work here, best first, each
    surface's state, and for each load field the surfaces that can set it."""
    surfaces = await chooser.describe()
    available = [name for name, entry in surfaces.items() if entry["available"]]
    return {"available": available, "surfaces": surfaces, "fields": table(available)}
