"""An upstream that has a bad day, for tests: a small real HTTP server on loopback.

Each mode is one way an upstream fails a gateway:

- `stall`: accepts connections and never reads a byte (its receive window fills, then the
  sender's writes block);
- `slow`: reads the request at `rate` bytes per second, then answers;
- `hangup`: reads the whole request, then closes the connection without answering;
- `trickle`: reads the request, sends the head of a JSON answer, then its body one byte every
  `interval` seconds;
- `oneshot`: answers every request (announcing keep-alive), then closes the connection, as
  llama.cpp's server does after a stream;
- `answer`: answers every request and keeps the connection, as a healthy upstream does.

It counts connections, whole requests (generations it would have started) and bytes read, so
a test can tell one request from a replay. Every socket gets a small receive buffer: a stalled
reader stops the sender after a few hundred KiB rather than after the kernel's megabytes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

MODES = ("stall", "slow", "hangup", "trickle", "oneshot", "answer")
RECEIVE_BUFFER = 64 * 1024
ANSWER = b'{"id":"x","object":"chat.completion","choices":[],"usage":null}'


@dataclass
class Seen:
    connections: int = 0
    requests: int = 0  # whole requests read (head and body)
    heads: int = 0  # request heads read
    bytes_read: int = 0
    paths: list[str] = field(default_factory=list)


class StallingUpstream:
    def __init__(
        self, mode: str, *, rate: int = 64 * 1024, interval: float = 1.0, length: int = 60
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.rate = rate  # bytes per second, `slow`
        self.interval = interval  # seconds between bytes, `trickle`
        self.length = length  # answer body length, `trickle`
        self.seen = Seen()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []

    def start(self) -> StallingUpstream:
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()
        self._server.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.seen.connections += 1
                self._held.append(conn)
            if self.mode != "stall":
                self._spawn(self._serve, conn)

    def _read(self, conn: socket.socket, size: int) -> bytes:
        """Up to `size` bytes, at `rate` per second in `slow` mode; b"" at the end or on stop."""
        if self.mode == "slow":
            size = min(size, max(1, self.rate // 10))
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

    def _request(self, conn: socket.socket, buffered: bytes) -> tuple[bool, bytes]:
        """Read one request; (whether it was whole, what was read past it)."""
        while b"\r\n\r\n" not in buffered:
            data = self._read(conn, 65536)
            if not data:
                return False, b""
            buffered += data
        head, _, rest = buffered.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        with self._lock:
            self.seen.heads += 1
            self.seen.paths.append(lines[0])
        while len(rest) < length:
            data = self._read(conn, min(65536, length - len(rest)))
            if not data:
                return False, b""
            rest += data
        with self._lock:
            self.seen.requests += 1
        return True, rest[length:]

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buffered = b""
        try:
            while not self._stop.is_set():
                whole, buffered = self._request(conn, buffered)
                if not whole:
                    return
                if self.mode == "hangup":
                    return
                if self.mode == "trickle":
                    self._trickle(conn)
                    return
                head = (
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(ANSWER)}\r\nconnection: keep-alive\r\n\r\n"
                )
                conn.sendall(head.encode() + ANSWER)
                if self.mode == "oneshot":
                    return
        except OSError:
            return
        finally:
            with self._lock:
                if conn in self._held:
                    self._held.remove(conn)
            conn.close()

    def _trickle(self, conn: socket.socket) -> None:
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {self.length}\r\n\r\n"
        )
        conn.sendall(head.encode())
        for _ in range(self.length):
            if self._stop.wait(self.interval):
                return
            conn.sendall(b" ")


@contextmanager
def stalling_upstream(mode: str, **options: float) -> Iterator[StallingUpstream]:
    upstream = StallingUpstream(mode, **options).start()  # type: ignore[arg-type]
    try:
        yield upstream
    finally:
        upstream.stop()
