"""An upstream having a bad day, for tests: a small real HTTP server on loopback.

Each mode is one way an upstream fails a gateway:

- `stall`: accepts connections and never reads a byte (its receive window fills, then the
  sender's writes block);
- `slow`: reads requests at `rate` bytes per second, then answers;
- `hangup`: reads a whole request, then closes the connection without answering;
- `trickle`: reads a request, sends the head of its answer at once, then the body one byte
  every `interval` seconds (`trickle-head`: the head too, byte by byte);
- `oneshot`: answers every request (announcing keep-alive), then closes the connection
  (`linger` seconds later), as llama.cpp's server does after a stream;
- `answer`: answers every request and keeps the connection, as a healthy upstream does.

It counts connections and the requests it read whole (the generations it would have
started), so a test can tell one request from a replay, and it reports how many bytes wait
unread on each connection, by the peer's port. Every socket has a small receive buffer: a
stalled reader stops the sender after a few hundred KiB rather than after megabytes.
"""

from __future__ import annotations

import fcntl
import socket
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

MODES = ("stall", "slow", "hangup", "trickle", "trickle-head", "oneshot", "answer")
RECEIVE_BUFFER = 64 * 1024
ANSWER = b'{"id":"x","object":"chat.completion","choices":[],"usage":null}'


@dataclass
class Seen:
    connections: int = 0
    requests: list[str] = field(default_factory=list)  # request lines of whole requests
    bytes_read: int = 0

    def count(self, method: str) -> int:
        return sum(1 for line in self.requests if line.startswith(method + " "))


class StallingUpstream:
    def __init__(
        self,
        mode: str,
        *,
        rate: int = 64 * 1024,
        interval: float = 1.0,
        length: int = 60,
        content_type: str = "application/json",
        linger: float = 0.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.rate = rate  # bytes per second, `slow`
        self.interval = interval  # seconds between bytes, `trickle`
        self.length = length  # answer body length, `trickle`
        self.content_type = content_type
        self.linger = linger  # seconds between an answer and the close, `oneshot`
        self.seen = Seen()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._open: dict[int, socket.socket] = {}  # peer port -> connection
        self._threads: list[threading.Thread] = []
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> StallingUpstream:
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        with self._lock:
            held, self._open = list(self._open.values()), {}
        for conn in held:
            conn.close()
        self._server.close()

    def unread(self) -> dict[int, int]:
        """Bytes waiting unread on each open connection, by the peer's (the gateway's) port."""
        out = {}
        with self._lock:
            items = list(self._open.items())
        for port, conn in items:
            try:
                out[port] = int.from_bytes(
                    fcntl.ioctl(conn.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little"
                )
            except OSError:
                continue
        return out

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.seen.connections += 1
                self._open[peer[1]] = conn
            if self.mode != "stall":
                self._spawn(self._serve, conn, peer[1])

    def _read(self, conn: socket.socket, size: int) -> bytes:
        """Up to `size` bytes (at `rate` per second in `slow` mode); b"" at the end or on stop."""
        if self.mode == "slow":
            size = min(size, max(1, self.rate // 20))
        while not self._stop.is_set():
            try:
                data = conn.recv(size)
            except TimeoutError:
                continue
            except OSError:
                return b""
            with self._lock:
                self.seen.bytes_read += len(data)
            if self.mode == "slow" and data:
                time.sleep(len(data) / self.rate)
            return data
        return b""

    def _request(self, conn: socket.socket, buffered: bytes) -> tuple[str | None, bytes]:
        """Read one whole request: (its request line or None, what was read past it)."""
        while b"\r\n\r\n" not in buffered:
            data = self._read(conn, 65536)
            if not data:
                return None, b""
            buffered += data
        head, _, rest = buffered.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(rest) < length:
            data = self._read(conn, min(65536, length - len(rest)))
            if not data:
                return None, b""
            rest += data
        with self._lock:
            self.seen.requests.append(lines[0])
        return lines[0], rest[length:]

    def _serve(self, conn: socket.socket, port: int) -> None:
        conn.settimeout(0.1)
        buffered = b""
        try:
            while not self._stop.is_set():
                line, buffered = self._request(conn, buffered)
                if line is None or self.mode == "hangup":
                    return
                if self.mode.startswith("trickle"):
                    self._trickle(conn)
                    return
                head = (
                    f"HTTP/1.1 200 OK\r\ncontent-type: {self.content_type}\r\n"
                    f"content-length: {len(ANSWER)}\r\nconnection: keep-alive\r\n\r\n"
                )
                conn.sendall(head.encode() + ANSWER)
                if self.mode == "oneshot":
                    if self.linger:
                        time.sleep(self.linger)
                    return
        except OSError:
            return
        finally:
            conn.close()
            with self._lock:
                self._open.pop(port, None)

    def _trickle(self, conn: socket.socket) -> None:
        # a stream's end is the connection's, as LM Studio's streams have no length
        framing = (
            "connection: close"
            if self.content_type.startswith("text/event-stream")
            else f"content-length: {self.length}"
        )
        head = (
            f"HTTP/1.1 200 OK\r\ncontent-type: {self.content_type}\r\n{framing}\r\n\r\n"
        ).encode()
        if self.mode == "trickle":
            conn.sendall(head)
            head = b""
        for byte in [head[i : i + 1] for i in range(len(head))] + [b"x"] * self.length:
            if self._stop.wait(self.interval):
                return
            conn.sendall(byte)


@contextmanager
def stalling_upstream(mode: str, **options: Any) -> Iterator[StallingUpstream]:
    upstream = StallingUpstream(mode, **options).start()
    try:
        yield upstream
    finally:
        upstream.stop()
