"""Wake-on-LAN for the upstream machine: a GPU box that sleeps when no one uses it.

When the upstream does not answer and a MAC address is configured, one `Waker` (one per
upstream that has one: `lmgate.upstreams.waking` picks which a request waits for) sends a
magic packet and holds the requests that arrive meanwhile, in a set bounded
like the scheduler's queue, until the upstream answers `/v1/models` or the wake timeout passes;
then they go on, or fail with 503 `wake_timeout`. One wake runs at a time: a burst of requests
sends one packet. With several workers, each holds its own requests but only the one that
takes an `flock` on the run directory's `wake.lock` sends the packet and announces the wake;
the others wait for the same upstream to answer. Packets for one upstream are at least
`PACKET_GAP_S` apart, however many requests or admin calls ask. The hook costs one attribute
read while the upstream is known to answer.

A request that waited says so in a header. A stream that waits longer than a second is told
in the stream instead, as the scheduler's queue tells its own (`lmgate.schedule.notify`): its
answer starts (200, an event stream) and `: waking upstream waited_ms=N` comments follow every
couple of seconds, which every SSE client skips; a client (or a proxy in between) that hears
nothing for the minute a machine takes to wake may give up. A failed wake then ends the answer
as the endpoint's error event (`lmgate.proxy.early`).

This module is imported by the settings (MAC and address parsing): what it needs from the
rest of the gateway at run time is handed to `Waker`, never imported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import math
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import structlog

from lmgate.errors import GatewayError
from lmgate.exchange import Exchange
from lmgate.hooks import EarlyAnswer, ProxyRequest, ResponseTap

if TYPE_CHECKING:
    from lmgate.observe.events import EventBus
    from lmgate.settings import Settings
    from lmgate.upstream.client import UpstreamClient
    from lmgate.upstream.sync import UpstreamWatcher
    from lmgate.upstreams.config import UpstreamConfig

log = structlog.get_logger("lmgate.wake")

DEFAULT_PORT = 9  # the discard port, Wake-on-LAN's usual target
LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
FIRST_POLL_S = 0.25  # the upstream is polled this soon after the packet, then ever less often
MAX_POLL_S = 5.0
FIRST_PROBE_S = 1.0  # the one look before a wake, when the watcher has not looked yet
WAITED_HEADER = b"x-upstream-wake-ms"
WOKEN_LATELY_S = 60.0  # a worker's watcher may not know of another's wake for this long
WAKING_HEADER = b"x-upstream-waking"  # on an answer started while the upstream wakes
EARLY_AFTER_S = 1.0  # as the queue's: a stream waiting longer has its answer started
HEARTBEAT_S = 2.0  # and hears a comment this often
PACKET_GAP_S = 2.0  # the least time between two packets for one upstream

_MAC = re.compile(r"[0-9a-f]{12}")


def parse_mac(text: str) -> bytes:
    """Six bytes from `aa:bb:cc:dd:ee:ff`, `aa-bb-...`, `aabb.ccdd.eeff` or `aabbccddeeff`."""
    digits = re.sub(r"[:\-. ]", "", text.strip().lower())
    if not _MAC.fullmatch(digits) or not re.fullmatch(r"[0-9a-fA-F:\-. ]+", text.strip()):
        raise ValueError(f"{text.strip()!r} is not a MAC address such as 3c:7c:3f:12:34:56")
    return bytes.fromhex(digits)


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def magic_packet(mac: bytes) -> bytes:
    """Six 0xFF bytes, then the MAC sixteen times: what a sleeping network card listens for."""
    if len(mac) != 6:
        raise ValueError("a MAC address has 6 bytes")
    return b"\xff" * 6 + mac * 16


def parse_target(text: str) -> tuple[str, int]:
    """(address, port) from `address[:port]`; IPv6 as `[addr]:port` or a bare address."""
    raw = text.strip()
    host, port = raw, DEFAULT_PORT
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{raw!r} is not address[:port]")
        if rest:
            port = _port(rest[1:], raw)
    elif raw.count(":") == 1:
        host, _, given = raw.partition(":")
        port = _port(given, raw)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{raw!r} is not an IP address[:port] such as 255.255.255.255:9 or 192.168.1.255"
        ) from None
    return str(address), port


def _port(text: str, raw: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{raw!r}: the port must be a number from 1 to 65535")
    return int(text)


def format_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_broadcast(host: str) -> bool:
    """255.255.255.255, or the broadcast address of one of this machine's networks: only
    then may the socket broadcast (a unicast address never needs it)."""
    address = ipaddress.ip_address(host)
    if address.version != 4:
        return False
    if address == LIMITED_BROADCAST:
        return True
    try:
        interfaces = psutil.net_if_addrs().values()
    except OSError:
        return False
    return any(
        entry.family == socket.AF_INET and entry.broadcast == host
        for entries in interfaces
        for entry in entries
    )


def send_magic_packet(mac: bytes, host: str, port: int) -> int:
    """One magic packet for `mac` to host:port over UDP; the bytes sent."""
    packet = magic_packet(mac)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if is_broadcast(host):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        return sock.sendto(packet, (host, port))


def _mark_woken(lock: int) -> None:
    """Note in the shared lock file when a wake succeeded (wall time: workers share no clock)."""
    with contextlib.suppress(OSError):
        os.pwrite(lock, b"%-32.3f" % time.time(), 0)


def _woken_lately(lock: int) -> bool:
    try:
        woken = float(os.pread(lock, 32, 0) or b"0")
    except (OSError, ValueError):
        return False
    return abs(time.time() - woken) < WOKEN_LATELY_S


class UpstreamAsleep(GatewayError):
    """The upstream is asleep and being woken, and no more requests may wait for it."""

    status = 503
    type = "server_error"
    code = "upstream_asleep"


class WakeTimeout(UpstreamAsleep):
    code = "wake_timeout"


class WakeTap:
    """Tells the client its request waited for the upstream to wake, and how long."""

    __slots__ = ("header",)

    def __init__(self, waited_s: float) -> None:
        self.header = (WAITED_HEADER, str(round(waited_s * 1000.0)).encode())

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [*headers, self.header]

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def end(self) -> bytes:
        return b""


Sender = Callable[[bytes, str, int], int]
Announce = Callable[[ProxyRequest], EarlyAnswer | None]  # the answer to start early, if any


class Waker:
    """Wakes one upstream and holds its requests meanwhile (a proxy hook), and notices an
    upstream that stopped answering since the watcher last looked (an observer)."""

    def __init__(
        self,
        *,
        mac: bytes,
        target: tuple[str, int],
        timeout: float,
        hold_max: int,
        watcher: UpstreamWatcher,
        client: UpstreamClient,
        bus: EventBus,
        send: Sender = send_magic_packet,
        clock: Callable[[], float] = time.monotonic,
        lock_path: Path | None = None,
        announce: Announce | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name  # the upstream's, in events and logs (None: the one upstream)
        self.mac = mac
        self.target = target
        self.timeout = timeout
        self.hold_max = hold_max
        self.watcher = watcher
        self.client = client
        self.bus = bus
        self.send = send
        self.clock = clock
        self.lock_path = lock_path  # shared by every worker; None with one worker
        self.announce = announce  # None: no stream is told in the stream
        self.held = 0  # requests waiting for the wake now
        self.packets = 0  # magic packets sent since start
        self.last_packet_at: float | None = None  # wall time of the last one
        self._last_packet: float | None = None  # and on `clock`
        self._wake: asyncio.Task[bool] | None = None
        self._sent = False  # the wake in progress sent a packet (not just looked)
        self._ends_at = 0.0
        self._recheck: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        watcher: UpstreamWatcher,
        client: UpstreamClient,
        bus: EventBus,
        run_dir: Path | None = None,
        *,
        config: UpstreamConfig | None = None,
        primary: bool = True,
        name: str | None = None,
    ) -> Waker | None:
        """An upstream's waker, or None when it has no MAC address. `config`: its table,
        whose `wake*` entries override the gateway's `LMGATE_WAKE_*` (the primary alone
        falls back to `LMGATE_WAKE_MAC`: the others are other machines). `run_dir`: the
        workers' shared directory, when there are several."""
        mac = config.wake if config is not None else None
        if mac is None and primary:
            mac = settings.wake_mac
        if mac is None:
            return None
        from lmgate.schedule.notify import wants_comments  # run time only: see the module's note

        broadcast = (config.wake_broadcast if config else None) or settings.wake_broadcast
        timeout = (config.wake_timeout if config else None) or settings.wake_timeout
        lock = "wake.lock" if primary else f"wake-{name}.lock"  # names are file-name safe
        return cls(
            mac=parse_mac(mac),
            target=parse_target(broadcast),
            timeout=timeout,
            hold_max=settings.queue_max,
            watcher=watcher,
            client=client,
            bus=bus,
            lock_path=run_dir / lock if run_dir is not None else None,
            announce=wants_comments if settings.queue_sse_comments else None,
            name=name,
        )

    @property
    def waking(self) -> bool:
        return self._wake is not None and not self._wake.done()

    def state(self) -> dict[str, Any]:
        """What `/admin/upstreams` shows: the wake settings (a MAC is no secret) and power."""
        caps = self.watcher.caps
        power = (
            "waking"
            if self.waking
            else "unknown"
            if not caps.checked_at
            else "awake"
            if caps.reachable
            else "asleep"
        )
        return {
            "power": power,
            "wake": format_mac(self.mac),
            "wakeStatus": {
                "mac": format_mac(self.mac),
                "target": format_target(*self.target),
                "timeoutSeconds": self.timeout,
                "waiting": self.held,
                "packets": self.packets,
                "lastPacketAt": self.last_packet_at,
            },
        }

    # -- the request path ------------------------------------------------------------------

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        if self.watcher.caps.reachable:
            return None
        early = self.announce(request) if self.announce is not None else None
        return await self.hold(early)

    async def hold(self, early: EarlyAnswer | None = None) -> ResponseTap | None:
        """Wait for the (one) wake in progress, starting it if none is; a client that goes
        away leaves the set at once. `early`: a stream's answer, to start if the wait is long."""
        wake = self._wake if self.waking else self._begin(look_first=True)
        assert wake is not None
        if self.held >= self.hold_max:
            wait = max(1.0, self._ends_at - self.clock())
            raise UpstreamAsleep(
                f"the upstream is asleep and being woken; {self.held} requests already wait "
                "for it: try again shortly",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        started = self.clock()
        self.held += 1
        try:
            if early is None:
                awake = await asyncio.shield(wake)
            else:
                awake = await self._announcing(wake, early, started)
        finally:
            self.held -= 1
        if not awake:
            raise WakeTimeout(  # after an early start: the relay sends it as an error event
                f"the upstream did not wake within {self.timeout:g} s of a Wake-on-LAN packet",
                headers={"Retry-After": "10"},
            )
        if early is not None and early.started:
            return None  # the stream told it: no header can follow the start
        return WakeTap(self.clock() - started) if self._sent else None

    def _begin(self, *, look_first: bool) -> asyncio.Task[bool]:
        self._sent = False
        wake = self._wake = asyncio.get_running_loop().create_task(self._run(look_first))
        self._ends_at = self.clock() + self.timeout
        return wake

    def wake_now(self) -> bool:
        """A wake asked for by hand (`POST /admin/upstreams/NAME/wake`): a packet and a watch
        for the upstream to answer, as for a request, unless one is under way already (its
        packet went then): False."""
        if self.waking:
            return False
        self._begin(look_first=False)
        return True

    async def _announcing(self, wake: asyncio.Task[bool], early: EarlyAnswer, since: float) -> bool:
        """Await `wake` (never cancelling it: others wait for it too); past `EARLY_AFTER_S`,
        start the stream's answer and say how long it has waited, every `HEARTBEAT_S`."""
        done, _ = await asyncio.wait((wake,), timeout=EARLY_AFTER_S)
        if done:
            return wake.result()
        if not early.started:
            await early.start([(WAKING_HEADER, b"1")])
        while True:
            waited_ms = round((self.clock() - since) * 1000.0)
            await early.write(b": waking upstream waited_ms=%d\n\n" % waited_ms)
            done, _ = await asyncio.wait((wake,), timeout=HEARTBEAT_S)
            if done:
                return wake.result()

    # -- the wake ----------------------------------------------------------------------------

    async def _answers(self, limit: float) -> bool:
        """Any HTTP answer, an error too, means the machine and its server are up."""
        probe = await self.client.probe("/v1/models", limit_s=max(0.05, limit))
        return probe.status != 0

    async def _run(self, look_first: bool = True) -> bool:
        started = self.clock()
        deadline = started + self.timeout
        # The watcher has not looked yet (just started): look once before waking anything.
        checked = self.watcher.caps.checked_at
        if look_first and not checked and await self._answers(FIRST_PROBE_S):
            await self._refresh()
            return True
        self._sent = True
        sender, lock = self._claim()
        try:
            # Another worker woke it moments ago, before this one's watcher looked again.
            lately = lock is not None and _woken_lately(lock)
            if look_first and lately and await self._answers(FIRST_PROBE_S):
                self._sent = False
                await self._refresh()
                return True
            awake = await self._wake_and_wait(started, deadline, sender=sender)
            if awake and lock is not None:
                _mark_woken(lock)
            return awake
        finally:
            if lock is not None:
                os.close(lock)  # the next wake, in any worker, may send again

    def _claim(self) -> tuple[bool, int | None]:
        """Whether this worker sends the packet, and the lock it then holds for the wake (None
        with one worker); False when another worker's wake is already under way."""
        if self.lock_path is None:
            return True, None
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return True, None  # no run directory left to agree in: wake rather than not at all
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False, None
        return True, fd

    async def _wake_and_wait(self, started: float, deadline: float, *, sender: bool) -> bool:
        """Send the packet (the `sender` only, who also announces the wake), then poll the
        upstream, ever less often, until it answers or the deadline passes."""
        target = format_target(*self.target)
        named = {"upstream": self.name} if self.name else {}
        if sender:
            sent = self._send(target)
            self.bus.publish(
                "upstream_waking",
                mac=format_mac(self.mac),
                target=target,
                waiting=self.held,
                timeoutSeconds=self.timeout,
                sent=sent,
                **named,
            )
            log.info("upstream_waking", mac=format_mac(self.mac), target=target, sent=sent, **named)
        delay = FIRST_POLL_S
        while (left := deadline - self.clock()) > 0:
            await asyncio.sleep(min(delay, left))
            left = deadline - self.clock()
            if left > 0 and await self._answers(min(self.client.connect_timeout, left)):
                seconds = round(self.clock() - started, 3)
                await self._refresh()
                if sender:
                    self.bus.publish("upstream_awake", seconds=seconds, waiting=self.held, **named)
                    log.info("upstream_awake", seconds=seconds, **named)
                return True
            delay = min(delay * 2, MAX_POLL_S)
        seconds = round(self.clock() - started, 3)
        if sender:
            self.bus.publish("upstream_wake_failed", seconds=seconds, waiting=self.held, **named)
            log.warning("upstream_wake_failed", seconds=seconds, **named)
        return False

    def _send(self, target: str) -> bool:
        """One magic packet, unless the last went less than `PACKET_GAP_S` ago: however
        often wakes begin (a wake that timed out, then another at once), the machine's
        network hears one packet per gap at most."""
        now = self.clock()
        if self._last_packet is not None and now - self._last_packet < PACKET_GAP_S:
            return False
        host, port = self.target
        try:
            self.send(self.mac, host, port)
        except OSError as exc:
            log.warning("wake_send_failed", target=target, error=str(exc), upstream=self.name)
            return False
        self._last_packet = now
        self.last_packet_at = time.time()
        self.packets += 1
        return True

    async def _refresh(self) -> None:
        """The watcher learns at once that the upstream answers (and what it has), so the
        requests released now and those after them go straight on to the scheduler."""
        with contextlib.suppress(GatewayError):
            await self.watcher.capabilities(refresh=True)
            await self.watcher.poll()

    # -- noticing a sleep the watcher has not seen yet ---------------------------------------

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        """An upstream failure while the watcher still thinks all is well: look again now, so
        the next request waits for a wake instead of failing too."""
        if ex.status not in (502, 503, 504) or not self.watcher.caps.reachable:
            return
        if self._recheck is None or self._recheck.done():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to look with
                self._recheck = asyncio.get_running_loop().create_task(self._look())

    async def _look(self) -> None:
        with contextlib.suppress(GatewayError):
            await self.watcher.capabilities(refresh=True)

    async def close(self) -> None:
        for task in (self._wake, self._recheck):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
