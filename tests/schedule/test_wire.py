"""The shared core's socket, in one process: frames are bounded, a hostile peer is cut off
while others are served, and a peer cannot hold more than `queue_max` waiting requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lmgate.gateway import Gateway
from lmgate.schedule import wire
from lmgate.schedule.host import SOCKET
from lmgate.schedule.types import Request
from lmgate.settings import Settings
from lmgate.upstream.capabilities import Capabilities
from lmgate.upstream.inventory import Instance, UpstreamModel
from lmgate.workers.slot import Worker


async def _read(data: bytes, limit: int = 100) -> dict[str, Any] | None:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await wire.read(reader, limit)


async def test_frames_are_bounded_objects() -> None:
    assert await _read(wire.frame({"t": "c", "id": "1"})) == {"t": "c", "id": "1"}
    assert await _read(b"") is None
    with pytest.raises(wire.WireError, match="exceeds"):
        await _read((10**9).to_bytes(4, "big") + b"{}")
    with pytest.raises(wire.WireError, match="object"):
        await _read(wire.frame([1, 2]))  # type: ignore[arg-type]
    with pytest.raises(wire.WireError, match="truncated"):
        await _read(wire.frame({"t": "c"})[:-1])
    request = Request("7", "k", "m", upstreams=frozenset({"b", "a"}))
    assert wire.request_in(wire.request_out(request)) == request
    with pytest.raises(wire.WireError):
        wire.request_in({"id": "7", "evil": True})


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Gateway]:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    settings = Settings(data_dir=tmp_path / "data", queue_max=2, _env_file=None)
    gw = Gateway.build(settings, Worker(0, 2, run_dir, primary=True))
    watcher = gw.watcher
    watcher.caps = Capabilities(reachable=True, native_v1=True)
    hot = Instance("hot", "hot", {"parallel": 1})
    watcher.models = {"hot": UpstreamModel("hot", "llm", (hot,))}
    watcher.instances = {"hot": hot}
    gw.scheduler.synced()
    task = asyncio.get_running_loop().create_task(gw.scheduler.run())
    for _ in range(500):
        if (run_dir / SOCKET).exists():
            break
        await asyncio.sleep(0.01)
    yield gw
    task.cancel()
    await gw.scheduler.close()
    gw.db.close()


async def _peer(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert gw.worker.run_dir is not None
    return await asyncio.open_unix_connection(str(gw.worker.run_dir / SOCKET))


def _submit(writer: asyncio.StreamWriter, rid: str) -> None:
    writer.write(wire.frame({"t": wire.SUBMIT, "r": wire.request_out(Request(rid, "k", "hot"))}))


async def _next(reader: asyncio.StreamReader) -> dict[str, Any]:
    message = await asyncio.wait_for(wire.read(reader, wire.MAX_REPLY), 5)
    assert message is not None
    return message


async def test_a_hostile_peer_is_cut_off_and_others_are_served(host: Gateway) -> None:
    assert host.worker.run_dir is not None
    assert (host.worker.run_dir / SOCKET).stat().st_mode & 0o777 == 0o600
    for hostile in (
        (wire.MAX_REQUEST + 1).to_bytes(4, "big"),  # announces more than a peer may send
        wire.frame({"t": "no such kind"}),
        wire.frame({"t": wire.SUBMIT, "r": {"id": 1}}),
    ):
        reader, writer = await _peer(host)
        writer.write(hostile)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the host
        writer.close()
    reader, writer = await _peer(host)
    _submit(writer, "a")
    verdict = await _next(reader)
    assert verdict["t"] == wire.VERDICT and verdict["v"]["admit"] is True
    assert verdict["v"]["request_id"] == "a"
    writer.close()


async def test_a_peer_holds_at_most_queue_max_waiting_and_leaving_frees_everything(
    host: Gateway,
) -> None:
    reader, writer = await _peer(host)
    _submit(writer, "run")
    assert (await _next(reader))["v"]["admit"] is True
    for rid in ("w1", "w2"):
        _submit(writer, rid)
        assert (await _next(reader))["t"] == wire.QUEUED
    _submit(writer, "w3")
    full = await _next(reader)
    assert full["t"] == wire.VERDICT and full["v"]["code"] == "queue_full"
    assert len(host.scheduler.local.queue) == 2
    writer.close()  # the worker went away: its places and its slot are freed
    for _ in range(500):
        if not host.scheduler.local.queue and not host.scheduler.local.running:
            break
        await asyncio.sleep(0.01)
    assert not host.scheduler.local.queue and not host.scheduler.local.running
    reader, writer = await _peer(host)
    _submit(writer, "again")
    assert (await _next(reader))["v"]["admit"] is True
    writer.close()
