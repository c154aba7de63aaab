"""The shared scheduler's messages between workers: length-prefixed orjson frames.

A frame is a 4-byte big-endian length and an orjson object. Each side bounds what it accepts
(`MAX_REQUEST` from other workers, `MAX_REPLY` from the host, whose snapshots are larger): a
longer frame, or one that is not an object, ends the connection rather than being buffered.
Every value the core exchanges is a frozen dataclass, sent as its fields; `Request`'s
`upstreams` travels as a sorted list, its `keys` (`{upstream: key}`) as an object of strings.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson

from lmgate.schedule.types import Admit, QueueInfo, Reject, Request

MAX_REQUEST = 64 * 1024  # a submit is a few hundred bytes
MAX_REPLY = 8 * 1024 * 1024  # a snapshot of a long queue
_LEN = 4

# Message kinds. Worker -> host: submit, cancel, position query, snapshot query, loaded.
SUBMIT, CANCEL, POSITIONS, SNAPSHOT, LOADED = "s", "c", "p", "n", "l"
# Host -> worker: a verdict, queued (with its place), positions, a snapshot.
VERDICT, QUEUED, PLACES, SNAPPED = "v", "q", "P", "N"


class WireError(Exception):
    """A frame that breaks the protocol: the connection is closed."""


def frame(message: dict[str, Any]) -> bytes:
    body = orjson.dumps(message)
    return len(body).to_bytes(_LEN, "big") + body


async def read(reader: asyncio.StreamReader, limit: int) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream."""
    try:
        head = await reader.readexactly(_LEN)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("truncated frame") from None
        return None
    size = int.from_bytes(head, "big")
    if size > limit:
        raise WireError(f"frame of {size} bytes exceeds {limit}")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise WireError("truncated frame") from None
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WireError("frame is not JSON") from None
    if not isinstance(message, dict):
        raise WireError("frame is not an object")
    return message


def request_out(request: Request) -> dict[str, Any]:
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    if request.upstreams is not None:
        fields["upstreams"] = sorted(request.upstreams)
    if request.keys is not None:
        fields["keys"] = dict(request.keys)
    return fields


def request_in(fields: Any) -> Request:
    if not isinstance(fields, dict):
        raise WireError("request is not an object")
    upstreams, keys = fields.get("upstreams"), fields.get("keys")
    if keys is not None and not (
        isinstance(keys, dict) and all(isinstance(v, str) for v in keys.values())
    ):
        raise WireError("bad request keys")
    try:
        if upstreams is not None:
            fields = {**fields, "upstreams": frozenset(upstreams)}
        request = Request(**fields)
    except TypeError as exc:
        raise WireError(f"bad request: {exc}") from None
    if not isinstance(request.id, str) or not isinstance(request.model, str):
        raise WireError("bad request id or model")
    return request


def verdict_out(verdict: Admit | Reject) -> dict[str, Any]:
    fields = {f.name: getattr(verdict, f.name) for f in dataclasses.fields(verdict)}
    fields["admit"] = isinstance(verdict, Admit)
    return fields


def verdict_in(fields: Any) -> Admit | Reject:
    if not isinstance(fields, dict):
        raise WireError("verdict is not an object")
    fields = dict(fields)
    admit = fields.pop("admit", None)
    try:
        return Admit(**fields) if admit else Reject(**fields)
    except TypeError as exc:
        raise WireError(f"bad verdict: {exc}") from None


def info_out(info: QueueInfo | None) -> list[int] | None:
    return None if info is None else [info.position, info.eta_ms]


def info_in(value: Any) -> QueueInfo | None:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return QueueInfo(value[0], value[1])
    return None
