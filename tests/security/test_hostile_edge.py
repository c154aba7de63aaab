"""Hostile clients at the edge of the real server: head bytes, bodies before authorisation,
connections per address, body memory, pipelining.

Each attack is driven over real sockets into its limit while the gateway's resident memory
(psutil on its pid) and the time to the refusal are measured, and an ordinary client is served
meanwhile. Sources inside 127.0.0.0/8 play different machines.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests.security.tools import statuses
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, start_gateway, upstream_requests

MIB = 1024 * 1024
HEAD_LIMIT = 16 * 1024
CHAT = b'{"model":"qwen/qwen3-4b","messages":[{"role":"user","content":"hi"}],"max_tokens":3}'


def _head(method: str, path: str, *lines: str) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in lines) + "\r\n"
    ).encode("latin-1")


def _connect(server: ServerProcess, source: str = "127.0.0.1", timeout: float = 5) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", server.port), timeout=timeout, source_address=(source, 0)
    )


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset after its answer counts as closing)."""
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _rss(server: ServerProcess) -> int:
    assert server.proc is not None
    return int(psutil.Process(server.proc.pid).memory_info().rss)


class Peak:
    """The gateway's largest RSS while the block runs, sampled every 20 ms."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.start = self.peak = _rss(server)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, _rss(self.server))

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss(self.server))

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / MIB


def _health_times(server: ServerProcess, count: int, source: str = "127.0.0.1") -> list[float]:
    """How long each of `count` fresh `/health` requests took, from another client."""
    times = []
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.url, transport=transport, timeout=30) as client:
        for _ in range(count):
            started = time.monotonic()
            assert client.get("/health", headers={"Connection": "close"}).status_code == 200
            times.append(time.monotonic() - started)
            time.sleep(0.05)
    return times


def _gateway(tmp: Path, emulator: ServerProcess, **env: str) -> Iterator[ServerProcess]:
    server = start_gateway(tmp, emulator.url, env=env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def guarded(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    """Keys on, the default head limit (64 KiB) and body limit (32 MiB)."""
    yield from _gateway(tmp_root, emulator, LMGATE_ADMIN_KEY=ADMIN_KEY, LMGATE_API_KEYS=API_KEY)


@pytest.fixture(scope="module")
def small(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    """Keys on, small limits: a 16 KiB head sent within 3 s, 4 MiB bodies, 16 MiB of bodies
    at once, 5 connections per address, a trusted proxy at 127.0.0.9."""
    yield from _gateway(
        tmp_root,
        emulator,
        LMGATE_ADMIN_KEY=ADMIN_KEY,
        LMGATE_API_KEYS=API_KEY,
        LMGATE_MAX_HEADER_BYTES=str(HEAD_LIMIT),
        LMGATE_HEADER_TIMEOUT="3",
        LMGATE_MAX_BODY_BYTES=str(4 * MIB),
        LMGATE_MAX_BODY_MEMORY_BYTES=str(16 * MIB),
        LMGATE_BODY_TIMEOUT="20",
        LMGATE_MAX_CONNECTIONS_PER_CLIENT="5",
        LMGATE_TRUSTED_PROXIES="127.0.0.9",
        LMGATE_AUTH_FAIL_LIMIT="0",
    )


# --- head bytes ---------------------------------------------------------------------------


def _endless_header(server: ServerProcess, source: str) -> tuple[int, bytes, float]:
    """Send one header line without end until the server stops it: bytes the kernel took,
    the answer, and the seconds until the server closed."""
    sock = _connect(server, source, timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    started = time.monotonic()
    sent = 0
    piece = b"a" * 16384
    with sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
            while sent < 512 * MIB:
                sent += sock.send(piece)
        except OSError:  # reset or broken pipe: the server closed
            pass
        answer = _read_all(sock)
    return sent, answer, time.monotonic() - started


def test_endless_header_line_is_cut_at_the_limit(guarded: ServerProcess) -> None:
    """Several attackers at once, each sending one endless header line as fast as it can."""
    sources = ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"]
    with Peak(guarded) as peak, ThreadPoolExecutor(len(sources) + 1) as pool:
        attacks = [pool.submit(_endless_header, guarded, s) for s in sources]
        health = pool.submit(_health_times, guarded, 10)
        results = [a.result(timeout=60) for a in attacks]
        times = health.result(timeout=60)
    for sent, answer, elapsed in results:
        assert statuses(answer) == [431], answer[:200]
        error = orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "request_headers_too_large" and error["message"]
        assert elapsed < 5  # not the 10 s head timeout: cut at the limit
        assert sent < 32 * MIB  # the limit plus what the kernels' buffers took, not ~100 MB
    assert peak.growth_mib < 30, peak.growth_mib
    assert max(times) < 1.5, times


@pytest.mark.parametrize("limit", [HEAD_LIMIT, 64 * 1024])
def test_one_byte_past_the_head_limit_is_431_at_once(
    small: ServerProcess, guarded: ServerProcess, limit: int
) -> None:
    """The line is never ended: the count is of bytes received, not of headers parsed."""
    server = small if limit == HEAD_LIMIT else guarded
    start = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: "
    with _connect(server) as sock:
        sock.sendall(start + b"a" * (limit - len(start)))
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # exactly at the limit: still waiting for the rest
        sock.settimeout(5)
        started = time.monotonic()
        sock.sendall(b"a")
        answer = _read_all(sock)
        assert statuses(answer) == [431] and time.monotonic() - started < 2


@pytest.mark.parametrize(
    "tail",
    [
        "".join(f"X-H{i}: {'b' * 50}\r\n" for i in range(3000)) + "\r\n",  # many headers
        "X-Long: " + "c" * 300_000 + "\r\n\r\n",  # one long line, ended
        "X-Long: " + "d" * 300_000,  # one long line, never ended
    ],
    ids=["many-headers", "long-line", "endless-line"],
)
def test_an_oversized_head_sent_whole_still_reads_its_431(
    guarded: ServerProcess, tail: str
) -> None:
    """The client has sent far more than the limit before the answer: the answer must not be
    lost to a reset because unread bytes were pending when the gateway closed."""
    with _connect(guarded) as sock:
        sock.settimeout(10)
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + tail.encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway stopped reading: what it answered is still to be read
        answer = _read_all(sock)
    assert statuses(answer) == [431], answer[:200]
    assert b'"code":"request_headers_too_large"' in answer


def test_a_malformed_request_is_a_json_400(small: ServerProcess) -> None:
    for junk in (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00"):
        with _connect(small) as sock:
            sock.sendall(junk)
            answer = _read_all(sock)
        assert statuses(answer) == [400]
        assert b"\r\ncontent-type: application/json\r\n" in answer
        error = orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "invalid_http_request" and error["type"] == "invalid_request_error"


def test_a_head_with_its_body_in_one_write(small: ServerProcess) -> None:
    """A head just under the limit arriving with a large body (and a pipelined request with
    a head as large) in one write: the body and the next head are not counted as this head."""
    pad = "X-Pad: " + "p" * (HEAD_LIMIT - 400)
    body = b'{"model":"qwen/qwen3-4b","max_tokens":3,"messages":[{"role":"user","content":"'
    body += b"w" * 200_000 + b'"}]}'
    post = _head(
        "POST",
        "/v1/chat/completions",
        f"Authorization: Bearer {API_KEY}",
        pad,
        f"Content-Length: {len(body)}",
    )
    get = _head("GET", "/health", pad)
    last = _head("GET", "/health", pad, "Connection: close")
    assert len(post) < HEAD_LIMIT and len(get) < HEAD_LIMIT
    with _connect(small, timeout=10) as sock:
        sock.sendall(post + body + get + get + last)
        assert statuses(_read_all(sock)) == [200, 200, 200, 200]


def test_pipelined_requests_are_answered_in_order(small: ServerProcess) -> None:
    key = f"Authorization: Bearer {API_KEY}"
    post = _head("POST", "/v1/chat/completions", key, f"Content-Length: {len(CHAT)}") + CHAT
    batch = _head("GET", "/health") + post + _head("GET", "/v1/models", key)
    batch += _head("GET", "/nope", key) + _head("GET", "/health", "Connection: close")
    with _connect(small, timeout=10) as sock:
        sock.sendall(batch)
        assert statuses(_read_all(sock)) == [200, 200, 200, 404, 200]


def test_a_flood_of_pipelined_requests_is_cut_off(small: ServerProcess) -> None:
    """Tens of thousands of tiny requests in one write: a few dozen are queued at most."""
    flood = _head("GET", "/health") * 50_000
    with Peak(small) as peak, _connect(small, "127.0.2.1", timeout=10) as sock:
        started = time.monotonic()
        try:
            sock.sendall(flood)
        except OSError:
            pass
        answered = statuses(_read_all(sock))
    assert 1 <= len(answered) <= 64 and set(answered) == {200}
    assert time.monotonic() - started < 10
    assert peak.growth_mib < 30, peak.growth_mib
    assert max(_health_times(small, 3)) < 1.5


# --- bodies before authorisation ------------------------------------------------------------


class Upload:
    """A client that sends a head and `sent` bytes of the body it declares, then stalls."""

    def __init__(self, server: ServerProcess, source: str, head: bytes, sent: int = 0) -> None:
        self.sock = _connect(server, source, timeout=10)
        self.send(head)
        chunk = b"x" * 65536
        for _ in range(sent // len(chunk)):
            if not self.send(chunk):
                break

    def send(self, data: bytes) -> bool:
        """False once the server has answered and closed."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def answer(self) -> bytes:
        with self.sock:
            return _read_all(self.sock)

    def abandon(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        ("GET /health", 200),
        ("POST /health", 405),
        ("GET /dashboard/x", 404),
        ("POST /dashboard/app.js", 405),
        ("POST /v1/chat/completions", 401),  # keys are on: no key, no body read
        ("GET /v1/models", 200),  # with a valid key: GET takes no body
        ("HEAD /v1/models", 200),
    ],
)
def test_bodies_before_authorisation_are_not_read(
    guarded: ServerProcess, request_line: str, status: int
) -> None:
    """30 connections declare 32 MiB bodies where no body is read, send 1 MiB and stall:
    each is answered at once, as if it had no body, and closed, and the gateway's memory
    does not follow."""
    method, path = request_line.split()
    key = [f"Authorization: Bearer {API_KEY}"] if method in ("GET", "HEAD") else []
    head = _head(method, path, *key, f"Content-Length: {32 * MIB}")
    with Peak(guarded) as peak:
        started = time.monotonic()
        with ThreadPoolExecutor(30) as pool:
            sources = [f"127.0.3.{i}" for i in range(1, 31)]
            uploads = list(pool.map(lambda s: Upload(guarded, s, head, MIB), sources))
            answers = list(pool.map(Upload.answer, uploads))
        elapsed = time.monotonic() - started
    for answer in answers:
        assert statuses(answer) == [status], answer[:300]
    assert elapsed < 15  # answered at once and closed, not at the 60 s body timeout
    assert peak.growth_mib < 50, peak.growth_mib


def test_no_key_mode_drops_bodies_where_none_is_read(
    open_gateway: ServerProcess, upstream: httpx.Client
) -> None:
    """Without keys every route is open; still, a GET or a public route holds no body, and
    what goes upstream is a request without one."""
    for line, status in (("GET /v1/models", 200), ("GET /health", 200), ("POST /dashboard/", 405)):
        method, path = line.split()
        head = _head(method, path, f"Content-Length: {8 * MIB}")
        answer = Upload(open_gateway, "127.0.0.1", head, 256 * 1024).answer()
        assert statuses(answer) == [status], line
    forwarded = [r for r in upstream_requests(upstream) if r["path"] == "/v1/models"]
    assert forwarded and forwarded[-1]["body"] is None
    framing = {"content-length", "transfer-encoding"}
    assert not framing & {k.lower() for k in forwarded[-1]["headers"]}  # type: ignore[union-attr]
    # a small body right behind a GET is dropped and the connection serves the next request
    with _connect(open_gateway) as sock:
        sock.sendall(_head("GET", "/v1/models", "Content-Length: 5") + b"hello")
        sock.sendall(_head("GET", "/health", "Connection: close"))
        assert statuses(_read_all(sock)) == [200, 200]
    # and a body where one belongs is read and relayed as ever
    with httpx.Client(base_url=open_gateway.url, timeout=30) as client:
        resp = client.post("/v1/chat/completions", content=CHAT)
        assert resp.status_code == 200 and resp.json()["choices"]


def test_a_refused_large_body_closes_its_connection(small: ServerProcess) -> None:
    """A 401 answered before the body was read: the connection is not kept alive for the
    rest of a large body (which could be endless) to be parsed and thrown away."""
    head = _head("POST", "/v1/chat/completions", f"Content-Length: {10**12}")
    with _connect(small, "127.0.4.1") as sock:
        sock.sendall(head + b"x" * 1000)
        started = time.monotonic()
        answer = _read_all(sock)
        assert statuses(answer) == [401] and time.monotonic() - started < 2


def test_the_rest_of_an_unread_body_is_bounded(small: ServerProcess) -> None:
    """What declares no size (chunked) or never ends is thrown away only so far and so long."""
    head = _head("POST", "/v1/chat/completions", "Transfer-Encoding: chunked")
    chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
    with _connect(small, "127.0.4.2") as sock:
        sock.sendall(head)
        assert statuses(sock.recv(65536)) == [401]
        sent = 0
        started = time.monotonic()
        try:
            while sent < 256 * MIB:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        assert sent < 16 * MIB and time.monotonic() - started < 5
    head = _head("POST", "/v1/chat/completions", "Content-Length: 100")
    with _connect(small, "127.0.4.3") as sock:
        sock.sendall(head + b"x" * 10)  # and the other 90 bytes never come
        started = time.monotonic()
        answer = _read_all(sock)
        assert statuses(answer) == [401] and 2 < time.monotonic() - started < 8


def test_small_bodies_keep_the_connection_alive(small: ServerProcess) -> None:
    key = f"Authorization: Bearer {API_KEY}"
    with httpx.Client(base_url=small.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        for _ in range(3):
            assert c.post("/v1/chat/completions", content=CHAT).status_code == 200
        for _ in range(3):  # answered before the small body was read: kept alive all the same
            refused = c.post("/v1/chat/completions", content=CHAT, headers={"Authorization": "x"})
            assert refused.status_code == 401
            assert c.get("/v1/models").status_code == 200
    with _connect(small) as sock:  # and on one connection, explicitly
        post = _head("POST", "/v1/chat/completions", key, f"Content-Length: {len(CHAT)}")
        sock.sendall(post + CHAT)
        time.sleep(0.3)
        refused = _head("POST", "/v1/chat/completions", f"Content-Length: {len(CHAT)}")
        sock.sendall(refused)
        time.sleep(0.3)  # the 401 goes out before the body arrives
        sock.sendall(CHAT + _head("GET", "/health", "Connection: close"))
        assert statuses(_read_all(sock)) == [200, 401, 200]


# --- body memory --------------------------------------------------------------------------


def _upload_head(size: int | None = None) -> bytes:
    framing = "Transfer-Encoding: chunked" if size is None else f"Content-Length: {size}"
    return _head("POST", "/v1/chat/completions", f"Authorization: Bearer {API_KEY}", framing)


def _budget_is_whole(server: ServerProcess) -> None:
    """Four uploads of the largest size at once need every byte of the 16 MiB budget."""
    body = b'{"model":"qwen/qwen3-4b","max_tokens":3,"messages":[{"role":"user","content":"'
    body += b"z" * (4 * MIB - len(body) - 4) + b'"}]}'
    assert len(body) == 4 * MIB

    def post(_: int) -> int:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        url = server.url + "/v1/chat/completions"
        return httpx.post(url, content=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(post, range(4))) == [200] * 4


def _check_busy(answer: bytes) -> None:
    assert statuses(answer) == [503], answer[:300]
    assert b"\r\nretry-after: 1\r\n" in answer.lower()
    error = orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "server_busy" and "try again" in error["message"]


def test_body_memory_cap_refuses_uploads_beyond_it(small: ServerProcess) -> None:
    """With a valid key, uploads of 4 MiB stall just short of their end: 4 fit in the 16 MiB
    budget, the next 8 are refused at once with 503, and memory stays near the budget."""
    head = _upload_head(4 * MIB)
    with Peak(small) as peak:
        started = time.monotonic()
        held = [Upload(small, "127.0.5.1", head, 4 * MIB - 65536) for _ in range(4)]
        time.sleep(0.5)  # the four are being read, and their bytes reserved
        for i in range(2, 10):
            _check_busy(Upload(small, f"127.0.5.{i}", head).answer())
        assert time.monotonic() - started < 10
    assert peak.growth_mib < 16 + 30, peak.growth_mib
    # Abandoned mid-body, the four give back every byte they reserved.
    for upload in held:
        upload.abandon()
    time.sleep(0.3)
    _budget_is_whole(small)


def test_chunked_uploads_reserve_as_they_arrive(small: ServerProcess) -> None:
    """Chunked bodies declare nothing: each chunk is reserved as it comes, and the upload
    that would pass the budget is cut off with 503 midway."""
    chunk = b"%x\r\n%s\r\n" % (MIB, b"c" * MIB)
    held = []
    for i in range(5):  # 5 x 3 MiB of the 16 MiB
        upload = Upload(small, f"127.0.6.{i + 1}", _upload_head())
        for _ in range(3):
            assert upload.send(chunk)
        held.append(upload)
    time.sleep(0.5)
    last = Upload(small, "127.0.6.9", _upload_head())
    for _ in range(3):
        last.send(chunk)
    _check_busy(last.answer())
    for upload in held:
        upload.abandon()
    time.sleep(0.3)
    _budget_is_whole(small)


def test_many_abandoned_uploads_give_the_budget_back(small: ServerProcess) -> None:
    """Uploads abandoned at every stage (before the body, midway, after a refusal, at the
    limit): afterwards the whole budget is free again."""
    for round_ in range(3):
        uploads = [
            Upload(small, f"127.0.7.{i + 1}", _upload_head(4 * MIB), sent)
            for i, sent in enumerate((0, 65536, MIB, 2 * MIB, 4 * MIB - 65536))
        ]
        uploads += [Upload(small, "127.0.7.9", _upload_head(), 0) for _ in range(2)]
        uploads[-1].send(b"%x\r\n%s\r\n" % (MIB, b"c" * MIB))
        time.sleep(0.2 * round_)
        for upload in uploads:
            upload.abandon()
    time.sleep(0.5)
    _budget_is_whole(small)


# --- connections per address --------------------------------------------------------------


def _served(server: ServerProcess, sock: socket.socket) -> bool:
    try:
        sock.sendall(_head("GET", "/health"))
        return sock.recv(65536).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _check_too_many(answer: bytes) -> None:
    assert statuses(answer) == [429], answer[:300]
    assert b"\r\nretry-after: 1\r\n" in answer.lower()
    error = orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "too_many_connections" and error["type"] == "rate_limit_error"


def test_connection_cap_per_address(small: ServerProcess) -> None:
    """5 connections per address: the 6th is answered 429 before it sends a byte, others
    are served meanwhile, and a closed connection frees its place."""
    opened = [_connect(small, "127.0.8.1") for _ in range(5)]
    try:
        assert all(_served(small, sock) for sock in opened)
        with _connect(small, "127.0.8.1") as extra:
            started = time.monotonic()
            _check_too_many(_read_all(extra))  # without sending anything
            assert time.monotonic() - started < 1
        with _connect(small, "127.0.8.1") as extra:  # a client that sends its request anyway
            extra.sendall(_head("GET", "/health"))
            _check_too_many(_read_all(extra))
        assert max(_health_times(small, 3, source="127.0.8.2")) < 1.5  # another address
        opened.pop().close()
        time.sleep(0.2)
        with _connect(small, "127.0.8.1") as again:
            assert _served(small, again)
    finally:
        for sock in opened:
            sock.close()


def test_connection_count_is_exact_under_churn(small: ServerProcess) -> None:
    """Hundreds of connections opened and dropped every which way: the count comes back to
    exactly what is open, so the cap still admits 5 and refuses the 6th."""

    def churn(n: int) -> None:
        for i in range(n):
            try:
                with _connect(small, "127.0.9.1") as sock:
                    if i % 3 == 0:
                        sock.sendall(_head("GET", "/health"))
                        sock.recv(100)
                    elif i % 3 == 1:
                        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # half a head
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            except OSError:
                pass  # refused at the cap: fine, that is counted too

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(churn, [40] * 8))
    time.sleep(0.5)
    opened = [_connect(small, "127.0.9.1") for _ in range(5)]
    try:
        assert all(_served(small, sock) for sock in opened)
        with _connect(small, "127.0.9.1") as extra:
            _check_too_many(_read_all(extra))
    finally:
        for sock in opened:
            sock.close()


def test_a_trusted_proxy_is_not_capped(small: ServerProcess) -> None:
    """Every client behind a trusted proxy shares its address: it is not held to the cap."""
    opened = [_connect(small, "127.0.0.9") for _ in range(12)]
    try:
        assert all(_served(small, sock) for sock in opened)
    finally:
        for sock in opened:
            sock.close()


def test_loopback_is_not_capped_by_default(guarded: ServerProcess) -> None:
    opened = [_connect(guarded, "127.0.0.1") for _ in range(80)]
    try:
        assert all(_served(guarded, sock) for sock in opened[-20:])
    finally:
        for sock in opened:
            sock.close()


# --- peers no allowlist admits ------------------------------------------------------------


@pytest.fixture(scope="module")
def fenced(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    """Only 127.0.10.1 may use the models, 127.0.10.2 administer; 127.0.10.3 is a proxy."""
    yield from _gateway(
        tmp_root,
        emulator,
        LMGATE_API_KEYS=API_KEY,
        LMGATE_ADMIN_KEY=ADMIN_KEY,
        LMGATE_ALLOW="127.0.10.1",
        LMGATE_ADMIN_ALLOW="127.0.10.2",
        LMGATE_TRUSTED_PROXIES="127.0.10.3",
    )


def test_a_peer_no_allowlist_admits_is_refused_on_connecting(fenced: ServerProcess) -> None:
    with _connect(fenced, "127.0.10.7") as stranger:
        started = time.monotonic()
        answer = _read_all(stranger)  # before it sends a byte
        assert statuses(answer) == [403] and time.monotonic() - started < 1
        assert b"address_not_allowed" in answer
    # an endless header or a large body from there costs nothing either
    with Peak(fenced) as peak:
        for source in ("127.0.10.7", "127.0.10.8"):
            _, answer, elapsed = _endless_header(fenced, source)
            assert statuses(answer) == [403] and elapsed < 5
    assert peak.growth_mib < 20
    # the others are judged per request, as before
    with httpx.Client(
        base_url=fenced.url, transport=httpx.HTTPTransport(local_address="127.0.10.1")
    ) as user:
        assert user.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).is_success
        assert (
            user.get("/admin/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code
            == 403
        )
    with httpx.Client(
        base_url=fenced.url, transport=httpx.HTTPTransport(local_address="127.0.10.2")
    ) as operator:
        assert operator.get(
            "/admin/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ).is_success
        assert (
            operator.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).status_code
            == 403
        )
    with httpx.Client(
        base_url=fenced.url, transport=httpx.HTTPTransport(local_address="127.0.10.3")
    ) as proxy:
        key = {"Authorization": f"Bearer {API_KEY}"}
        assert proxy.get("/v1/models", headers={**key, "X-Forwarded-For": "127.0.10.1"}).is_success
        denied = proxy.get("/v1/models", headers={**key, "X-Forwarded-For": "127.0.10.7"})
        assert denied.status_code == 403
