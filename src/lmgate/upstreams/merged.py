"""One model list over every upstream: each model once, with where it is offered and loaded.

`/v1/models`, `/api/v0/models` and `/api/v1/models` are read from every upstream that is up,
at once, and merged by model id. Each entry keeps the shape of the first upstream that listed
it (an SDK reads it as ever) and gains lmgate's own field, `lmgate`: `{"upstreams": [...],
"loadedOn": [...]}`. An upstream that fails to answer is left out; none answering is a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from lmgate.errors import GatewayError, UpstreamUnavailable

if TYPE_CHECKING:
    from lmgate.upstreams.members import Member, Upstreams

LIST_LIMIT_S = 10.0
_HEADERS = [(b"content-type", b"application/json")]


@dataclass(slots=True)
class MergedAnswer:
    """Shaped like `UpstreamResponse` for the relay: a status, headers and the body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    event_stream: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.body


class MergedListing:
    """Takes the place of an upstream client for one model-list request."""

    auth_header = None  # each upstream's own token is added by its own client

    def __init__(self, upstreams: Upstreams, path: str, field: str, id_field: str) -> None:
        self.upstreams = upstreams
        self.path = path
        self.field = field
        self.id_field = id_field

    @asynccontextmanager
    async def open(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        streaming: bool = False,
    ) -> AsyncIterator[MergedAnswer]:
        merged = await self.merge([m for m in self.upstreams if m.up and not m.draining])
        payload = b"" if method == "HEAD" else orjson.dumps(merged)
        yield MergedAnswer(200, list(_HEADERS), payload)

    async def _read(self, member: Member) -> Any:
        return await member.client.call("GET", self.path, limit_s=LIST_LIMIT_S)

    async def merge(self, members: list[Member]) -> dict[str, Any]:
        answers = await asyncio.gather(*(self._read(m) for m in members), return_exceptions=True)
        shape: dict[str, Any] | None = None
        entries: dict[str, dict[str, Any]] = {}
        for member, answer in zip(members, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, GatewayError):
                    raise answer
                continue
            if not isinstance(answer, dict) or not isinstance(answer.get(self.field), list):
                continue
            shape = shape or answer
            here: dict[str, dict[str, Any]] = {}
            for entry in answer[self.field]:
                if not isinstance(entry, dict) or not isinstance(entry.get(self.id_field), str):
                    continue
                model = entry[self.id_field]
                if member.config.allows(model):
                    here[model] = entry
                    self._add(entries, model, entry, member, model)
            for alias, target in member.config.aliases.items():
                if target in here:
                    self._add(entries, alias, here[target], member, target)
        if shape is None:
            raise UpstreamUnavailable("no upstream answered with its model list")
        return {**shape, self.field: list(entries.values())}

    def _add(
        self,
        entries: dict[str, dict[str, Any]],
        name: str,
        entry: dict[str, Any],
        member: Member,
        key: str,
    ) -> None:
        """`name` is offered by `member` as its `key` (the same, or an alias's target)."""
        if name not in entries:
            entries[name] = {**entry, self.id_field: name, "lmgate": _where()}
        where = entries[name]["lmgate"]
        where["upstreams"].append(member.name)
        if member.loaded(key):
            where["loadedOn"].append(member.name)
        if key != name:
            where.setdefault("aliasOf", {})[member.name] = key


def _where() -> dict[str, Any]:
    return {"upstreams": [], "loadedOn": []}
