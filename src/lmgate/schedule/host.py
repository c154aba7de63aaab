"""The primary worker's core, served to the other workers over a Unix socket.

With `serve --workers N` the primary (slot 0) hosts the one `Scheduler` of the gateway: its
own requests reach it in-process, the other workers' over `scheduler.sock` in the run
directory (0600, bound under a temporary name and renamed into place, so a stale socket of a
dead primary is replaced atomically). Why the primary: it already owns what must happen once
per gateway (reloading the active model), and a single owner keeps the core synchronous and
every decision in one place; the price is a round trip for a request that another worker
accepted (see `bench/scheduler.py`).

Each connection is a peer whose request ids are namespaced (`3/17`), so peers never collide
with each other or with the primary's own ids. A queued request of a peer waits on a future in
the shell's `_waiting`, exactly like a local one; when the core decides, the future's callback
sends the verdict. A peer that goes away (its worker died, or it broke the protocol) takes its
requests with it: waiting ones leave the queue, admitted ones free their slots.

Bounds: frames from peers are at most `wire.MAX_REQUEST` bytes; a peer holds at most
`queue_max` queued requests (the core's own bound, checked again per peer); a peer that stops
reading while more than `MAX_BUFFER` bytes of answers pile up is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from lmgate.schedule import wire
from lmgate.schedule.types import QUEUE_FULL, STATUS, Admit, Reject, Request

if TYPE_CHECKING:
    from lmgate.schedule.shell import SchedulerShell

log = structlog.get_logger("lmgate.schedule")

SOCKET = "scheduler.sock"
MAX_BUFFER = 4 * 1024 * 1024
SNAPSHOT_WAITING_MAX = 5000  # waiting entries sent to a peer's `/debug/queue`


class Peer:
    __slots__ = ("closed", "no", "running", "waiting", "writer")

    def __init__(self, no: int, writer: asyncio.StreamWriter) -> None:
        self.no = no
        self.writer = writer
        self.waiting: set[str] = set()  # core ids queued, a future in the shell's `_waiting`
        self.running: set[str] = set()  # core ids admitted
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        self.writer.write(wire.frame(message))
        if self.writer.transport.get_write_buffer_size() > MAX_BUFFER:
            log.warning("scheduler_peer_not_reading", peer=self.no)
            self.closed = True
            self.writer.transport.abort()


def bind(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, owner-only from the start."""
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(str(temp))
        finally:
            os.umask(old)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class CoreHost:
    def __init__(self, shell: SchedulerShell, path: Path) -> None:
        self.shell = shell
        self.path = path
        self.peers: set[Peer] = set()
        self._numbers = itertools.count(1)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(
            self._serve, sock=bind(self.path), limit=wire.MAX_REQUEST + 4
        )
        log.info("scheduler_hosting", socket=str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for peer in list(self.peers):
            peer.closed = True
            peer.writer.transport.abort()
            self._drop(peer)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(next(self._numbers), writer)
        self.peers.add(peer)
        try:
            while not peer.closed:
                message = await wire.read(reader, wire.MAX_REQUEST)
                if message is None:
                    break
                self._handle(peer, message)
        except (wire.WireError, ValueError, KeyError, TypeError) as exc:
            log.warning("scheduler_peer_refused", peer=peer.no, error=str(exc))
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop(peer)
            peer.closed = True
            writer.close()

    def _handle(self, peer: Peer, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == wire.SUBMIT:
            self._submit(peer, wire.request_in(message["r"]))
        elif kind == wire.CANCEL:
            self._cancel(peer, f"{peer.no}/{message['id']}")
        elif kind == wire.POSITIONS:
            self._positions(peer, message["ids"])
        elif kind == wire.SNAPSHOT:
            snap = self.shell.queue_local(waiting_max=SNAPSHOT_WAITING_MAX)
            peer.send({"t": wire.SNAPPED, "q": message["q"], "s": snap})
        elif kind == wire.LOADED:
            model = message["model"]
            if not isinstance(model, str):
                raise wire.WireError("bad model")
            self.shell.loaded(model)
        else:
            raise wire.WireError(f"unknown message {kind!r}")

    def _submit(self, peer: Peer, request: Request) -> None:
        shell, core = self.shell, self.shell.local
        cid: str = request.id
        sid = f"{peer.no}/{cid}"
        if sid in peer.waiting or sid in peer.running:
            raise wire.WireError(f"request id {cid!r} is already known")
        if len(peer.waiting) >= max(1, core.config.queue_max):
            refused = Reject(cid, STATUS[QUEUE_FULL], QUEUE_FULL, "the queue is full", 1.0)
            _send_verdict(peer, cid, refused)
            return
        shell.catch_up(request.upstreams)  # an upstream added a moment ago elsewhere
        now = shell.clock()
        verdict = shell._run(core.submit(replace(request, id=sid), now), sid)
        if verdict is not None:
            if isinstance(verdict, Admit):
                peer.running.add(sid)
            _send_verdict(peer, cid, verdict)
            return
        future: asyncio.Future[Admit | Reject] = asyncio.get_running_loop().create_future()
        shell._waiting[sid] = future
        peer.waiting.add(sid)
        future.add_done_callback(partial(self._decided, peer, sid, cid))
        info = core.position(sid, now)
        peer.send({"t": wire.QUEUED, "id": cid, "i": wire.info_out(info)})
        shell._wake.set()  # its queue timeout is a new deadline for the tick loop

    def _decided(self, peer: Peer, sid: str, cid: str, future: asyncio.Future[Any]) -> None:
        peer.waiting.discard(sid)
        if future.cancelled():
            return
        verdict: Admit | Reject = future.result()
        if isinstance(verdict, Admit):
            if peer.closed:  # nobody will forward it: free its slot
                self.shell._run(self.shell.local.finish(sid, self.shell.clock()))
                return
            peer.running.add(sid)
        _send_verdict(peer, cid, verdict)

    def _cancel(self, peer: Peer, sid: str) -> None:
        future = self.shell._waiting.pop(sid, None)
        if future is not None and not future.done():
            future.cancel()
        peer.waiting.discard(sid)
        peer.running.discard(sid)
        self.shell._run(self.shell.local.cancel(sid, self.shell.clock()))

    def _positions(self, peer: Peer, ids: Any) -> None:
        if not isinstance(ids, list):
            raise wire.WireError("bad position query")
        core, now = self.shell.local, self.shell.clock()
        places = {}
        for cid in ids:
            sid = f"{peer.no}/{cid}"
            if sid in peer.waiting:
                places[cid] = wire.info_out(core.position(sid, now))
        peer.send({"t": wire.PLACES, "p": places})

    def _drop(self, peer: Peer) -> None:
        """The peer is gone: its waiting requests leave the queue, its admitted ones end."""
        self.peers.discard(peer)
        gone = peer.waiting | peer.running
        peer.waiting.clear()
        peer.running.clear()
        for sid in gone:
            future = self.shell._waiting.pop(sid, None)
            if future is not None and not future.done():
                future.cancel()
        for sid in gone:
            self.shell._run(self.shell.local.cancel(sid, self.shell.clock()))


def _send_verdict(peer: Peer, cid: str, verdict: Admit | Reject) -> None:
    """Under the peer's own id, which the core knew namespaced."""
    out = wire.verdict_out(replace(verdict, request_id=cid))
    peer.send({"t": wire.VERDICT, "id": cid, "v": out})
