"""The upstream on a bad day, attacked through a real gateway process with a real stalling
upstream (`tests/stalling_upstream.py`): bodies it never reads, answers it never finishes,
connections it closes. Memory (the gateway's RSS), time and connections stay bounded, nothing
is sent upstream twice, and other clients are served meanwhile."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx
import psutil
import pytest

from lmgate.errors import UpstreamError
from lmgate.settings import Settings
from lmgate.upstream import pool
from lmgate.upstream.client import UpstreamClient
from tests.servers import ServerProcess, start_gateway
from tests.stalling_upstream import StallingUpstream, stalling_upstream

MiB = 1024 * 1024
QUIET = {"LMGATE_SYNC_INTERVAL": "3600", "LMGATE_LOG_LEVEL": "warning"}


def _chat(size: int, *, stream: bool) -> bytes:
    """A chat request of about `size` bytes, most of them one long message."""
    head = b'{"model":"m","stream":' + (b"true" if stream else b"false")
    return head + b',"messages":[{"role":"user","content":"' + b"x" * size + b'"}]}'


def _rss(server: ServerProcess) -> float:
    assert server.proc is not None
    return float(psutil.Process(server.proc.pid).memory_info().rss) / MiB


def _established_ports(server: ServerProcess, upstream: StallingUpstream) -> set[int]:
    """The gateway's local ports of its ESTABLISHED connections to the upstream."""
    assert server.proc is not None
    return {
        c.laddr.port
        for c in psutil.Process(server.proc.pid).net_connections("tcp")
        if c.raddr and c.raddr.port == upstream.port and c.status == psutil.CONN_ESTABLISHED
    }


def _eventually(check: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _block(seconds: float) -> None:
    """Sleep without letting an event loop run meanwhile."""
    time.sleep(seconds)


def _served_quickly(server: ServerProcess) -> None:
    """Another, normal client: answered at once while the attack goes on."""
    for path in ("/health", "/debug/status"):
        started = time.monotonic()
        resp = httpx.get(server.url + path, timeout=5)
        assert resp.status_code == 200, (path, resp.text)
        assert time.monotonic() - started < 2.0  # a loaded 2-core machine: generous


class Upload(threading.Thread):
    """A client that sends a big request, waits `hold` seconds for an answer, and leaves."""

    def __init__(self, port: int, path: str, body: bytes, hold: float) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.body, self.hold = port, path, body, hold
        self.sent = threading.Event()
        self.answer = b""

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            head = (
                f"POST {self.path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.body)}\r\n\r\n"
            ).encode()
            sock.sendall(head + self.body)
            self.sent.set()
            sock.settimeout(self.hold)
            try:
                self.answer = sock.recv(65536)
            except TimeoutError:
                pass


@pytest.mark.parametrize(
    ("path", "stream"),
    [
        ("/api/v0/anything", False),  # passed through as the client sent it
        ("/v1/chat/completions", True),  # parsed and re-encoded (usage is asked for)
    ],
)
def test_abandoned_uploads_to_a_stalled_upstream_free_memory_and_connections(
    tmp_path: Path, path: str, stream: bool
) -> None:
    clients, size, rounds = 3, 20 * MiB, 3
    body = _chat(size, stream=stream)
    with stalling_upstream("stall") as upstream:
        gw = start_gateway(tmp_path, upstream.url, env=QUIET)
        try:
            _served_quickly(gw)
            baseline = _rss(gw)
            bound = clients * size / MiB * 1.5 + 16
            earlier: set[int] = set()  # connections of earlier rounds
            for _ in range(rounds):
                uploads = [Upload(gw.port, path, body, hold=6.0) for _ in range(clients)]
                for upload in uploads:
                    upload.start()

                def stalled(earlier: set[int] = earlier) -> set[int]:
                    unread = upstream.unread().items()
                    return {port for port, n in unread if n > 16 * 1024} - earlier

                # every body reached the upstream, which reads none of it
                assert _eventually(lambda: len(stalled()) == clients, within=10)
                held = stalled()
                earlier |= held
                # one copy of each body in the gateway while it waits, not three
                assert _eventually(lambda: _rss(gw) - baseline < bound, 3.0), _rss(gw) - baseline
                _served_quickly(gw)
                for upload in uploads:
                    upload.join(timeout=15)
                    assert upload.answer == b""  # nothing to answer with yet
                # the clients left: their upstream connections are reset at once
                assert _eventually(lambda: not stalled(set()) & _established_ports(gw, upstream), 3)
            assert upstream.seen.count("POST") == 0
            back = _eventually(lambda: _rss(gw) - baseline < 25, 5.0)
            assert back, f"RSS stayed {_rss(gw) - baseline:.0f} MiB above its baseline"
            _served_quickly(gw)
        finally:
            gw.stop()


def test_a_body_the_upstream_has_read_is_not_kept_while_it_answers(tmp_path: Path) -> None:
    clients, size = 3, 20 * MiB
    with stalling_upstream("trickle", interval=0.5, length=16) as upstream:
        gw = start_gateway(tmp_path, upstream.url, env=QUIET)
        try:
            baseline = _rss(gw)
            answers: list[httpx.Response] = []

            def send() -> None:
                answers.append(
                    httpx.post(
                        gw.url + "/v1/chat/completions",
                        content=_chat(size, stream=True),  # parsed, edited, re-encoded
                        headers={"content-type": "application/json"},
                        timeout=30,
                    )
                )

            senders = [threading.Thread(target=send) for _ in range(clients)]
            for sender in senders:
                sender.start()
            assert _eventually(lambda: upstream.seen.count("POST") == clients, 10)
            # every answer is still on its way, and no body is held for it any more
            assert _eventually(lambda: _rss(gw) - baseline < 20, 4.0), _rss(gw) - baseline
            assert any(sender.is_alive() for sender in senders)
            for sender in senders:
                sender.join(timeout=30)
            assert [resp.status_code for resp in answers] == [200] * clients
        finally:
            gw.stop()


@pytest.mark.parametrize("mode", ["stall", "slow"])
def test_an_upload_the_upstream_does_not_take_in_time_is_a_504(tmp_path: Path, mode: str) -> None:
    size = 16 * MiB
    with stalling_upstream(mode, rate=256 * 1024) as upstream:
        gw = start_gateway(tmp_path, upstream.url, env={**QUIET, "LMGATE_SEND_TIMEOUT": "1.5"})
        try:
            baseline = _rss(gw)
            answers: list[httpx.Response] = []

            def send() -> None:
                answers.append(
                    httpx.post(
                        gw.url + "/v1/chat/completions",
                        content=_chat(size, stream=False),
                        headers={"content-type": "application/json"},
                        timeout=30,
                    )
                )

            started = time.monotonic()
            senders = [threading.Thread(target=send) for _ in range(3)]
            for sender in senders:
                sender.start()
            held: set[int] = set()  # the connections the bodies went up on
            while time.monotonic() - started < 1.2:
                held |= {port for port, n in upstream.unread().items() if n > 16 * 1024}
                time.sleep(0.05)
            assert held
            _served_quickly(gw)
            for sender in senders:
                sender.join(timeout=30)
            elapsed = time.monotonic() - started
            assert 1.4 < elapsed < 10
            assert len(answers) == 3
            for resp in answers:
                assert resp.status_code == 504
                error = resp.json()["error"]
                assert error["code"] == "upstream_timeout"
                assert "request body" in error["message"] and "1.5 s" in error["message"]
            assert upstream.seen.count("POST") == 0  # none was taken whole
            assert _eventually(lambda: not held & _established_ports(gw, upstream), 3.0)
            assert _eventually(lambda: _rss(gw) - baseline < 25, 5.0), _rss(gw) - baseline
        finally:
            gw.stop()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "m", "messages": [], "stream": False}),
        ("/v1/chat/completions", {"model": "m", "messages": [], "stream": True}),
        ("/v1/embeddings", {"model": "m", "input": "x"}),
        ("/api/v0/anything", {"x": 1}),
    ],
)
def test_a_post_the_upstream_hangs_up_on_is_sent_once(
    tmp_path: Path, path: str, body: dict[str, object]
) -> None:
    with stalling_upstream("hangup") as upstream:
        gw = start_gateway(tmp_path, upstream.url, env=QUIET)
        try:
            for n in range(1, 4):
                started = time.monotonic()
                resp = httpx.post(gw.url + path, json=body, timeout=30)
                assert time.monotonic() - started < 5
                assert upstream.seen.count("POST") == n  # one generation, not two
                assert resp.status_code == 502
                error = resp.json()["error"]
                assert error["code"] == "upstream_error"
                assert "closed the connection without answering" in error["message"]
            _served_quickly(gw)
        finally:
            gw.stop()


def test_an_upstream_closing_after_every_answer_costs_no_failure_and_no_replay(
    tmp_path: Path,
) -> None:
    """llama.cpp announces keep-alive and closes after every answer, at once. (A close that
    comes late, after a next request went out on the connection, is a race no client can
    win: an idempotent request is then tried again, a POST fails; see the test below.)"""
    with stalling_upstream("oneshot") as upstream:
        gw = start_gateway(tmp_path, upstream.url, env=QUIET)
        try:
            with httpx.Client(base_url=gw.url, timeout=30) as http:
                for i in range(30):
                    post = http.post("/v1/chat/completions", json={"model": "m", "i": i})
                    assert post.status_code == 200, post.text
                    _block(0.02)  # this process's upstream thread closes the connection
                    get = http.get("/v1/files")
                    assert get.status_code == 200, get.text
                    _block(0.02)
            assert upstream.seen.count("POST") == 30
            assert sum(line.startswith("GET /v1/files") for line in upstream.seen.requests) == 30
            assert upstream.seen.connections >= 60  # a connection each: every one was closed
        finally:
            gw.stop()


def test_a_plain_answer_whose_head_trickles_gets_a_504_at_the_request_timeout(
    tmp_path: Path,
) -> None:
    with stalling_upstream("trickle-head", interval=1.0) as upstream:
        env = {**QUIET, "LMGATE_REQUEST_TIMEOUT": "2"}
        gw = start_gateway(tmp_path, upstream.url, env=env)
        try:
            started = time.monotonic()
            resp = httpx.post(gw.url + "/v1/chat/completions", json={"model": "m"}, timeout=30)
            elapsed = time.monotonic() - started
            assert resp.status_code == 504
            error = resp.json()["error"]
            assert error["code"] == "upstream_timeout" and "within 2 s" in error["message"]
            assert 1.8 < elapsed < 4.5
            _served_quickly(gw)
        finally:
            gw.stop()


def test_a_plain_answer_whose_body_trickles_is_cut_at_the_request_timeout(
    tmp_path: Path,
) -> None:
    with stalling_upstream("trickle", interval=1.0, length=60) as upstream:
        env = {**QUIET, "LMGATE_REQUEST_TIMEOUT": "2", "LMGATE_LOG_LEVEL": "info"}
        gw = start_gateway(tmp_path, upstream.url, env=env)
        try:
            started = time.monotonic()
            received = b""
            with (
                pytest.raises(httpx.RemoteProtocolError),
                httpx.stream(
                    "POST",
                    gw.url + "/v1/chat/completions",
                    json={"model": "m"},
                    headers={"x-request-id": "trickled"},
                    timeout=30,
                ) as resp,
            ):
                assert resp.status_code == 200  # the head had come: only the body can be cut
                for chunk in resp.iter_raw():
                    received += chunk
            elapsed = time.monotonic() - started
            assert 1.8 < elapsed < 4.5
            assert len(received) < 60
            line = next(
                json.loads(text)
                for text in gw.logs().splitlines()
                if text.startswith("{") and '"request_id":"trickled"' in text
            )
            assert "did not finish its answer within 2 s" in line["error"]
        finally:
            gw.stop()


@pytest.mark.parametrize("stream", [True, False])
def test_streams_are_held_to_silences_not_to_the_request_timeout(
    tmp_path: Path, stream: bool
) -> None:
    """A stream (asked for, or only announced by the answer's content type) may run past
    LMGATE_REQUEST_TIMEOUT while it keeps sending; a silence past LMGATE_STREAM_TIMEOUT ends it."""
    sse = {"content_type": "text/event-stream"}
    env = {**QUIET, "LMGATE_REQUEST_TIMEOUT": "1", "LMGATE_STREAM_TIMEOUT": "2.5"}
    body = {"model": "m", "stream": stream}
    with stalling_upstream("trickle", interval=0.7, length=5, **sse) as upstream:
        gw = start_gateway(tmp_path, upstream.url, env=env)
        try:
            started = time.monotonic()
            resp = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
            assert resp.status_code == 200
            assert resp.content == b"xxxxx"
            assert time.monotonic() - started > 3.0  # well past the request timeout
        finally:
            gw.stop()
    with stalling_upstream("trickle", interval=6.0, length=2, **sse) as upstream:
        gw = start_gateway(tmp_path, upstream.url, env=env)
        try:
            started = time.monotonic()
            with httpx.stream(
                "POST", gw.url + "/v1/chat/completions", json=body, timeout=30
            ) as resp:
                assert resp.status_code == 200
                text = resp.read().decode()
            elapsed = time.monotonic() - started
            assert 2.3 < elapsed < 5.5
            assert "went silent" in text and "upstream_timeout" in text
        finally:
            gw.stop()


@pytest.mark.parametrize("checked", [True, False])
async def test_a_pooled_connection_found_closed_is_not_written_to(checked: bool) -> None:
    """The upstream closed a pooled connection and the FIN is here, but the event loop has not
    run since: aiohttp's own connector still takes it, and a POST on it fails (it must not be
    retried: it may have been read). The checked connector takes a fresh one instead."""
    connector = pool.connector(keepalive_timeout=30) if checked else aiohttp.TCPConnector()
    with stalling_upstream("oneshot") as upstream:
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(upstream.url + "/v1/chat/completions", data=b"{}") as first:
                assert first.status == 200
                await first.read()
            # blocking on purpose: the upstream closes (its FIN arrives), the loop does not run
            assert _eventually(lambda: upstream.seen.connections == 1 and not upstream.unread(), 5)
            _block(0.2)
            second = session.post(upstream.url + "/v1/chat/completions", data=b"{}")
            if checked:
                async with second as resp:
                    assert resp.status == 200
                assert upstream.seen.connections == 2
            else:
                with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
                    async with second:
                        pass
        assert upstream.seen.count("POST") == (2 if checked else 1)


async def _back_to_back(client: UpstreamClient, n: int) -> list[int | str]:
    """`n` streamed chat requests, each sent the moment the previous answer ended."""
    outcomes: list[int | str] = []
    for _ in range(n):
        try:
            async with client.open(
                "POST", "/v1/chat/completions", [], b'{"stream":true}', streaming=True
            ) as answer:
                await answer.read()
                outcomes.append(answer.status)
        except UpstreamError as exc:
            outcomes.append(exc.message)
    return outcomes


async def test_the_pool_learns_an_upstream_that_closes_after_every_stream(
    tmp_path: Path,
) -> None:
    """llama.cpp closes its connection a moment after each stream: back to back, the next
    request would be written on a connection about to close, and a POST must not be repeated.
    A plain pool fails some; lmgate's waits for the first, learns, and fails none."""
    with stalling_upstream("oneshot", linger=0.005) as upstream:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector()) as plain:
            failed = 0
            for _ in range(10):
                try:
                    async with plain.post(upstream.url + "/v1/chat/completions") as resp:
                        await resp.read()
                except aiohttp.ClientError:
                    failed += 1
            assert failed > 0  # the race is real
        client = UpstreamClient(Settings(upstream=upstream.url, data_dir=tmp_path))
        await client.start()
        try:
            before = upstream.seen.count("POST")
            assert await _back_to_back(client, 30) == [200] * 30
            assert upstream.seen.count("POST") == before + 30  # no replay
            checked = client.session.connector
            assert isinstance(checked, pool.CheckedConnector)
            assert checked.after_streams == "closed"
        finally:
            await client.close()


async def test_the_pool_learns_an_upstream_that_keeps_connections_after_streams(
    tmp_path: Path,
) -> None:
    with stalling_upstream("answer") as upstream:
        client = UpstreamClient(Settings(upstream=upstream.url, data_dir=tmp_path))
        await client.start()
        try:
            assert await _back_to_back(client, 20) == [200] * 20
            checked = client.session.connector
            assert isinstance(checked, pool.CheckedConnector)
            assert checked.after_streams == "kept"
            assert upstream.seen.connections == 1  # every request on the same connection
        finally:
            await client.close()
