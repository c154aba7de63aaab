"""Wake-on-LAN under pressure: several workers send one packet between them, and a flood of
requests at an upstream that never wakes gets clean 503s, a bounded number of packets, and a
gateway whose memory and time stay bounded. Packets go only to a UDP listener on 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
import math
import time
from pathlib import Path

import httpx
import psutil

from lmgate.upstream.wake import magic_packet, parse_mac
from tests.servers import ServerProcess, free_port, start_gateway
from tests.upstream.test_wake import AUTH, CHAT, MAC, UdpListener, sleeping, wake_env

__all__ = ["sleeping"]  # the fixture, shared with the single-worker tests


def chat(url: str, timeout: float = 90) -> httpx.Response:
    with httpx.Client(timeout=timeout) as client:  # a connection of its own: any worker
        return client.post(url + "/v1/chat/completions", json=CHAT, headers=AUTH)


def test_several_workers_send_one_packet(
    tmp_path: Path, sleeping: tuple[ServerProcess, UdpListener]
) -> None:
    upstream, listener = sleeping
    gw = start_gateway(tmp_path, upstream.url, "--workers", "3", env=wake_env(listener))
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: chat(gw.url), range(24)))
        assert [a.status_code for a in answers] == [200] * 24, answers[0].text
        assert sum("x-upstream-wake-ms" in a.headers for a in answers) >= 8  # they waited
        time.sleep(1.0)  # a late second packet would have arrived by now
        assert listener.packets == [magic_packet(parse_mac(MAC))]
    finally:
        gw.stop()


def test_a_wake_flood_is_bounded(tmp_path: Path) -> None:
    listener = UdpListener()  # nothing ever wakes: the upstream port stays closed
    timeout_s = 3.0
    env = wake_env(listener, LMGATE_WAKE_TIMEOUT=str(timeout_s), LMGATE_QUEUE_MAX="8")
    gw = start_gateway(tmp_path, f"http://127.0.0.1:{free_port()}", env=env)
    try:
        proc = psutil.Process(gw.proc.pid if gw.proc else 0)
        rss_before = proc.memory_info().rss
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda _: chat(gw.url, timeout=60), range(240)))
        elapsed = time.monotonic() - started
        rss_after = proc.memory_info().rss
        codes = [a.json()["error"]["code"] for a in answers]
        assert {a.status_code for a in answers} == {503}
        assert set(codes) <= {"upstream_asleep", "wake_timeout"} and "upstream_asleep" in codes
        assert all("retry-after" in a.headers for a in answers)
        # one packet per wake at most, and a wake lasts the timeout
        assert 1 <= len(listener.packets) <= math.ceil(elapsed / timeout_s) + 1
        assert elapsed < 90, elapsed
        assert rss_after - rss_before < 40 * 1024 * 1024, (rss_before, rss_after)
        # the gateway still answers everything else at once
        with httpx.Client(base_url=gw.url, timeout=10) as other:
            assert other.get("/health").status_code in (200, 503)
            assert other.get("/admin/keys", headers=AUTH).status_code == 200
    finally:
        gw.stop()
        listener.close()
