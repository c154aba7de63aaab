"""Wake-on-LAN: the magic packet, and a gateway that holds requests while its upstream wakes.

Packets go only to a UDP listener on 127.0.0.1. The "sleeping machine" is an emulator that is
started on the upstream's port when that listener receives the packet.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from lmgate.upstream.wake import (
    format_mac,
    format_target,
    is_broadcast,
    magic_packet,
    parse_mac,
    parse_target,
    send_magic_packet,
)
from tests.observe.helpers import EventReader
from tests.servers import ADMIN_KEY, ServerProcess, clean_env, free_port, start_gateway

MAC = "3c:7c:3f:12:34:56"
CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
WAKE = [sys.executable, "-m", "lmgate", "wake"]


class UdpListener:
    """Receives datagrams on 127.0.0.1 in a thread; `on_packet` runs for the first one."""

    def __init__(self, on_packet: Callable[[], None] | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.packets: list[bytes] = []
        self.on_packet = on_packet
        self.first = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, _ = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.packets.append(data)
            if not self.first.is_set():
                self.first.set()
                if self.on_packet is not None:
                    self.on_packet()

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


def late_emulator(tmp: Path, port: int) -> ServerProcess:
    """The emulator as the upstream on `port`, not started yet (the machine is asleep)."""
    return ServerProcess(
        [sys.executable, "-m", "lmgate.emulator", "--port", str(port), "--token-delay", "0.001"],
        port=port,
        ready_path="/lmstudio-greeting",
        log=tmp / f"late-emulator-{port}.log",
    )


@pytest.fixture
def sleeping(tmp_path: Path) -> Iterator[tuple[ServerProcess, UdpListener]]:
    """An upstream that starts when the magic packet reaches the listener."""
    upstream = late_emulator(tmp_path, free_port())
    listener = UdpListener(lambda: threading.Thread(target=upstream.start, daemon=True).start())
    yield upstream, listener
    listener.close()
    upstream.stop()


def wake_env(listener: UdpListener, **extra: str) -> dict[str, str]:
    return {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_WAKE_MAC": MAC,
        "LMGATE_WAKE_BROADCAST": f"127.0.0.1:{listener.port}",
        **extra,
    }


# -- the packet ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling", [MAC, MAC.upper(), MAC.replace(":", "-"), "3c7c.3f12.3456", "3C7C3F123456"]
)
def test_mac_spellings(spelling: str) -> None:
    assert format_mac(parse_mac(spelling)) == MAC


@pytest.mark.parametrize("bad", ["", "3c:7c:3f:12:34", "3c:7c:3f:12:34:56:78", "zz:7c:3f:12:34:56"])
def test_bad_mac(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_mac(bad)


def test_targets() -> None:
    assert parse_target("255.255.255.255") == ("255.255.255.255", 9)
    assert parse_target("192.168.1.255:7") == ("192.168.1.255", 7)
    assert parse_target("[ff02::1]:9") == ("ff02::1", 9)
    assert format_target("ff02::1", 9) == "[ff02::1]:9"
    for bad in ("gpu-box", "1.2.3.4:0", "1.2.3.4:99999", "[::1", "1.2.3.4:x"):
        with pytest.raises(ValueError):
            parse_target(bad)
    assert is_broadcast("255.255.255.255")
    assert not is_broadcast("127.0.0.1") and not is_broadcast("::1")


def test_magic_packet_bytes_over_udp() -> None:
    listener = UdpListener()
    try:
        sent = send_magic_packet(parse_mac(MAC), "127.0.0.1", listener.port)
        assert listener.first.wait(5)
    finally:
        listener.close()
    packet = listener.packets[0]
    assert sent == len(packet) == 102
    assert packet == magic_packet(bytes.fromhex("3c7c3f123456"))
    assert packet[:6] == b"\xff" * 6
    assert all(packet[6 + 6 * i : 12 + 6 * i] == bytes.fromhex("3c7c3f123456") for i in range(16))


def test_lmgate_wake_command(tmp_path: Path) -> None:
    listener = UdpListener()
    try:
        out = subprocess.run(
            [*WAKE, "--mac", MAC.upper(), "--broadcast", f"127.0.0.1:{listener.port}"],
            env=clean_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert listener.first.wait(5)
    finally:
        listener.close()
    assert listener.packets == [magic_packet(parse_mac(MAC))]
    assert MAC in out.stdout and f"127.0.0.1:{listener.port}" in out.stdout
    # from the [wake] table of a config file
    listener = UdpListener()
    try:
        config = tmp_path / "lmgate.toml"
        config.write_text(f'[wake]\nmac = "{MAC}"\nbroadcast = "127.0.0.1:{listener.port}"\n')
        out = subprocess.run(
            [sys.executable, "-m", "lmgate", "wake", "--config", str(config)],
            env=clean_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert listener.first.wait(5)
    finally:
        listener.close()
    none = subprocess.run(
        [sys.executable, "-m", "lmgate", "wake"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert none.returncode == 2 and "LMGATE_WAKE_MAC" in none.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "lmgate", "wake", "--mac", "nope"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "'nope' is not a MAC address" in bad.stderr


# -- the gateway holds requests while the upstream wakes -------------------------------------


def test_burst_waits_for_one_wake_then_is_answered(
    tmp_path: Path, sleeping: tuple[ServerProcess, UdpListener]
) -> None:
    upstream, listener = sleeping
    gw = start_gateway(tmp_path, upstream.url, env=wake_env(listener))
    events = EventReader(gw.url, "?types=upstream_*")
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            started = time.monotonic()
            answers = list(
                pool.map(
                    lambda i: httpx.post(
                        gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=90
                    ),
                    range(8),
                )
            )
            elapsed = time.monotonic() - started
        assert [a.status_code for a in answers] == [200] * 8, answers[0].text
        assert all(a.json()["choices"][0]["message"]["content"] for a in answers)
        assert all(int(a.headers["x-upstream-wake-ms"]) > 0 for a in answers)
        assert elapsed < 60
        assert listener.packets == [magic_packet(parse_mac(MAC))]  # one packet for the burst
        waking = events.next("upstream_waking", timeout=10)
        assert waking["mac"] == MAC and waking["target"] == f"127.0.0.1:{listener.port}"
        awake = events.next("upstream_awake", timeout=10)
        assert 0 < awake["seconds"] < 60
        # awake now: the next request goes straight through, with no header and no packet
        again = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30)
        assert again.status_code == 200 and "x-upstream-wake-ms" not in again.headers
        assert len(listener.packets) == 1
    finally:
        events.close()
        gw.stop()


def test_stream_waits_for_the_wake(
    tmp_path: Path, sleeping: tuple[ServerProcess, UdpListener]
) -> None:
    """Without comments (`test_wake_comments` has them), a stream's answer starts only once
    the upstream answers, and says in a header how long it waited."""
    upstream, listener = sleeping
    gw = start_gateway(tmp_path, upstream.url, env=wake_env(listener))
    try:
        with httpx.stream(
            "POST",
            gw.url + "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={**AUTH, "X-Lmgate-Queue-Comments": "off"},
            timeout=90,
        ) as resp:
            body = b"".join(resp.iter_bytes())
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert "x-upstream-wake-ms" in resp.headers
        assert b"data: [DONE]" in body
        assert len(listener.packets) == 1
    finally:
        gw.stop()


def test_wake_timeout_fails_waiting_requests(tmp_path: Path) -> None:
    listener = UdpListener()  # the packet arrives, but nothing wakes
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(tmp_path, dead, env=wake_env(listener, LMGATE_WAKE_TIMEOUT="2"))
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            started = time.monotonic()
            answers = list(
                pool.map(
                    lambda _: httpx.post(
                        gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=60
                    ),
                    range(3),
                )
            )
            elapsed = time.monotonic() - started
        for answer in answers:
            assert answer.status_code == 503
            error = answer.json()["error"]
            assert error["code"] == "wake_timeout" and error["type"] == "server_error"
            assert "Retry-After" in answer.headers
        assert 1.5 < elapsed < 30
        assert len(listener.packets) == 1
    finally:
        gw.stop()
        listener.close()


def test_held_requests_are_bounded(tmp_path: Path) -> None:
    """A flood while the upstream sleeps: at most LMGATE_QUEUE_MAX wait, the rest are refused
    at once; memory stays flat and /health is served meanwhile."""
    listener = UdpListener()
    dead = f"http://127.0.0.1:{free_port()}"
    env = wake_env(listener, LMGATE_WAKE_TIMEOUT="10", LMGATE_QUEUE_MAX="20")
    gw = start_gateway(tmp_path, dead, env=env)
    assert gw.proc is not None
    proc = psutil.Process(gw.proc.pid)

    async def flood() -> tuple[list[httpx.Response], float, int]:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=gw.url, headers=AUTH, timeout=60, limits=limits
        ) as client:
            posts = [
                asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
                for _ in range(300)
            ]
            await asyncio.sleep(1.0)
            started = time.monotonic()
            health = await client.get("/health")
            health_s = time.monotonic() - started
            return list(await asyncio.gather(*posts)), health_s, health.status_code

    try:
        rss_before = proc.memory_info().rss
        started = time.monotonic()
        answers, health_s, health_status = asyncio.run(flood())
        elapsed = time.monotonic() - started
        rss_after = proc.memory_info().rss
        codes = [a.json()["error"]["code"] for a in answers]
        asleep = [a for a, code in zip(answers, codes, strict=True) if code == "upstream_asleep"]
        assert health_status == 200 and health_s < 5
        assert codes.count("wake_timeout") == 20 and len(asleep) == 280
        assert all(a.status_code == 503 and "Retry-After" in a.headers for a in answers)
        refused_within = max(a.elapsed.total_seconds() for a in asleep)
        assert refused_within < 8, refused_within  # refused at once, not after the wake
        assert elapsed < 40
        assert rss_after - rss_before < 40 * 1024 * 1024, (rss_before, rss_after)
        assert len(listener.packets) == 1
        print(
            f"held-flood: 300 requests, {elapsed:.1f} s, refused within {refused_within:.2f} s, "
            f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB, /health {health_s:.3f} s"
        )
    finally:
        gw.stop()
        listener.close()


def test_client_leaving_frees_its_place(tmp_path: Path) -> None:
    listener = UdpListener()
    dead = f"http://127.0.0.1:{free_port()}"
    env = wake_env(listener, LMGATE_WAKE_TIMEOUT="6", LMGATE_QUEUE_MAX="1")
    gw = start_gateway(tmp_path, dead, env=env)
    try:
        with pytest.raises(httpx.ReadTimeout):  # waits, then goes away
            httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=1.0)
        time.sleep(0.3)
        # its place is free again: this one waits (and times out) instead of being refused
        answer = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "wake_timeout"
    finally:
        gw.stop()
        listener.close()


def test_no_wake_configured_is_plain_503(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(tmp_path, dead, env={"LMGATE_ADMIN_KEY": ADMIN_KEY})
    try:
        answer = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30)
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "upstream_unavailable"
    finally:
        gw.stop()


# -- putting the upstream to sleep when idle -------------------------------------------------


def test_idle_sleep_runs_the_command_once(tmp_path: Path, emulator: ServerProcess) -> None:
    marker = tmp_path / "slept"
    script = (
        f"import pathlib; p = pathlib.Path({str(marker)!r}); "
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x')"
    )
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_IDLE_SLEEP_AFTER": "1.5s",
        "LMGATE_IDLE_SLEEP_COMMAND": json.dumps([sys.executable, "-c", script]),
    }
    gw = start_gateway(tmp_path, emulator.url, env=env)
    events = EventReader(gw.url, "?types=upstream_sleep")
    try:
        answer = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30)
        assert answer.status_code == 200
        asked = time.monotonic()
        slept = events.next("upstream_sleep", timeout=20)
        assert slept["via"] == "command" and slept["ok"] is True
        assert time.monotonic() - asked > 1.0
        assert marker.read_text() == "x"
        time.sleep(3)  # still idle: not again until a request comes
        assert marker.read_text() == "x"
    finally:
        events.close()
        gw.stop()


def test_idle_sleep_posts_to_the_url(tmp_path: Path, emulator: ServerProcess) -> None:
    import http.server

    posted: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/sleep?now=1"
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_IDLE_SLEEP_AFTER": "1",
        "LMGATE_IDLE_SLEEP_URL": url,
    }
    gw = start_gateway(tmp_path, emulator.url, env=env)
    try:
        deadline = time.monotonic() + 20
        while not posted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert posted == ["/sleep?now=1"]
    finally:
        gw.stop()
        server.shutdown()
        server.server_close()


def test_idle_sleep_settings_are_checked(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lmgate", "doctor", "--upstream", "http://127.0.0.1:9"],
        env=clean_env(
            LMGATE_IDLE_SLEEP_URL="ftp://x", LMGATE_WAKE_MAC="12:34", LMGATE_DATA_DIR=str(tmp_path)
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "LMGATE_WAKE_MAC=12:34" in out.stderr and "LMGATE_IDLE_SLEEP_URL=ftp://x" in out.stderr


def test_an_awake_upstream_is_never_woken(tmp_path: Path, emulator: ServerProcess) -> None:
    """Right after start (the watcher has not looked yet) and after: no packet, no header."""
    listener = UdpListener()
    gw = start_gateway(tmp_path, emulator.url, env=wake_env(listener))
    try:
        for _ in range(3):
            answer = httpx.post(
                gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30
            )
            assert answer.status_code == 200 and "x-upstream-wake-ms" not in answer.headers
        time.sleep(0.5)
        assert listener.packets == []
    finally:
        gw.stop()
        listener.close()


def test_upstream_that_falls_asleep_after_start_is_woken(tmp_path: Path) -> None:
    """The watcher saw it answer; then it went to sleep. The first failure makes the gateway
    look again at once, so the next request waits for a wake instead of failing too."""
    upstream = late_emulator(tmp_path, free_port()).start()
    listener = UdpListener(lambda: threading.Thread(target=upstream.start, daemon=True).start())
    env = wake_env(listener, LMGATE_SYNC_INTERVAL="60")  # the watcher will not notice itself
    gw = start_gateway(tmp_path, upstream.url, env=env)
    try:
        first = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30)
        assert first.status_code == 200
        upstream.stop()  # asleep
        failed = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30)
        assert failed.status_code in (502, 503, 504)
        time.sleep(1.0)  # the gateway looks again
        woken = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=90)
        assert woken.status_code == 200, woken.text
        assert "x-upstream-wake-ms" in woken.headers
        assert listener.packets == [magic_packet(parse_mac(MAC))]
    finally:
        gw.stop()
        listener.close()
        upstream.stop()
