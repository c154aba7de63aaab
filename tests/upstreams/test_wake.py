"""Wake-on-LAN per upstream: two emulators behind one gateway, the second asleep. A request
only the second can serve wakes it (its own packet, its own target) and waits; requests for
the first are served meanwhile; an up upstream is always preferred; the admin route and CLI
wake one by name; a flood for a sleeping upstream sends one packet and holds a bounded set.

Every magic packet goes to a UDP listener on 127.0.0.1 (the gateway-wide target too, so none
could ever leave this machine); the "sleeping machine" is an emulator started on its port
when its listener receives the packet.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from lmgate.settings import Settings
from lmgate.upstream.wake import magic_packet, parse_mac
from lmgate.upstreams.config import UpstreamConfig
from tests.observe.helpers import EventReader
from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    free_port,
    start_emulator,
    start_gateway,
    upstream_requests,
)
from tests.upstream.test_wake import UdpListener
from tests.upstreams.conftest import catalog, wait_for

ONLY_A = "alpha/only-a"
SHARED = "alpha/shared-7b"
ONLY_B = "beta/only-b"
MAC_B = "3c:7c:3f:00:00:0b"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
WAKING = re.compile(rb"^: waking upstream waited_ms=(\d+)$", re.MULTILINE)
WAKE_DELAY_S = 2.0  # the sleeping machine takes this long after the packet (plus its start)


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


@dataclass
class Pair:
    gw: ServerProcess
    a: ServerProcess
    b: ServerProcess  # started by `listener` (after WAKE_DELAY_S), unless `b_wakes` was False
    listener: UdpListener  # b's Wake-on-LAN target
    fallback: UdpListener  # the gateway-wide LMGATE_WAKE_BROADCAST: must hear nothing


def emulator_b(tmp: Path, port: int) -> ServerProcess:
    return ServerProcess(
        [
            sys.executable,
            "-m",
            "lmgate.emulator",
            "--port",
            str(port),
            "--no-sdk",
            "--token-delay",
            "0.002",
            "--models",
            catalog(tmp, "b", ONLY_B, SHARED),
        ],
        port=port,
        ready_path="/lmstudio-greeting",
        log=tmp / f"b-{port}.log",
    )


def _later(server: ServerProcess, delay: float) -> Callable[[], None]:
    def start() -> None:
        time.sleep(delay)
        server.start(timeout=60)

    return lambda: threading.Thread(target=start, daemon=True).start()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Callable[..., Pair]]:
    """`make(b_wakes=True, b_awake=False, wake_timeout="60s", **env)`: gateway, a up, b
    asleep (or up, and asleep once stopped); b wakes when its packet arrives, if `b_wakes`."""
    made: list[Pair] = []

    def make(
        *, b_wakes: bool = True, b_awake: bool = False, wake_timeout: str = "60s", **env: str
    ) -> Pair:
        a = start_emulator(
            tmp_path,
            "--no-sdk",
            "--token-delay",
            "0.002",
            "--models",
            catalog(tmp_path, "a", ONLY_A, SHARED),
            name="a",
        )
        b = emulator_b(tmp_path, free_port())
        if b_awake:
            b.start()
        listener = UdpListener(_later(b, WAKE_DELAY_S) if b_wakes else None)
        fallback = UdpListener()
        config = tmp_path / "lmgate.toml"
        config.write_text(
            f"""
[[upstreams]]
name = "a"
url = "{a.url}"

[[upstreams]]
name = "b"
url = "{b.url}"
models = ["beta/*", "{SHARED}"]
wake = {{ mac = "{MAC_B}", broadcast = "127.0.0.1:{listener.port}", timeout = "{wake_timeout}" }}
"""
        )
        gw = start_gateway(
            tmp_path,
            a.url,
            "--config",
            str(config),
            env={
                "LMGATE_ADMIN_KEY": ADMIN_KEY,
                "LMGATE_SYNC_INTERVAL": "0.5",
                "LMGATE_WAKE_BROADCAST": f"127.0.0.1:{fallback.port}",
                **env,
            },
        )
        made.append(pair := Pair(gw, a, b, listener, fallback))
        return pair

    yield make
    for p in made:
        p.gw.stop()
        p.listener.close()
        p.fallback.close()
        p.a.stop()
        p.b.stop()


def upstreams_of(gw: ServerProcess) -> dict[str, dict[str, object]]:
    answer = httpx.get(gw.url + "/admin/upstreams", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return {u["name"]: u for u in answer.json()["upstreams"]}


def power_of(gw: ServerProcess, name: str) -> object:
    return upstreams_of(gw)[name]["power"]


def chats_on(server: ServerProcess, model: str) -> int:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        return sum(
            1
            for r in upstream_requests(client)
            if str(r.get("path", "")).endswith("/chat/completions")
            and model in str(r.get("body", ""))
        )


# -- configuration ---------------------------------------------------------------------------


def test_wake_entry_spellings(tmp_path: Path) -> None:
    config = tmp_path / "lmgate.toml"
    config.write_text(
        """
[[upstreams]]
name = "a"
url = "http://127.0.0.1:9"

[[upstreams]]
name = "b"
url = "http://127.0.0.1:10"
wake = { mac = "3C-7C-3F-00-00-0B", broadcast = "127.0.0.1:7", timeout = "2m" }

[[upstreams]]
name = "c"
url = "http://127.0.0.1:11"
wake = "3c7c.3f00.000c"
wakeBroadcast = "127.0.0.1"
"""
    )
    settings = Settings(config=config)
    a, b, c = settings.upstreams
    assert a.wake is None and a.wake_broadcast is None
    assert (b.wake, b.wake_broadcast, b.wake_timeout) == (MAC_B, "127.0.0.1:7", 120.0)
    assert (c.wake, c.wake_broadcast, c.wake_timeout) == ("3c:7c:3f:00:00:0c", "127.0.0.1:9", None)
    shown = b.public()
    assert shown["wake"] == MAC_B and shown["wakeBroadcast"] == "127.0.0.1:7"
    for bad in (
        {"wake": "12:34"},
        {"wake": {"mac": MAC_B, "port": 9}},
        {"wake": MAC_B, "wake_broadcast": "gpu-box"},
        {"wake": MAC_B, "wake_timeout": "soon"},
        {"wake": MAC_B, "wake_timeout": 0},
    ):
        with pytest.raises(ValueError):
            UpstreamConfig.model_validate({"name": "x", "url": "http://127.0.0.1:9", **bad})


# -- a request waits only for the upstream it would go to -------------------------------------


def test_only_b_wakes_b_and_a_is_served_meanwhile(pair: Callable[..., Pair]) -> None:
    p = pair()
    events = EventReader(p.gw.url, "?types=upstream_*")
    try:
        wait_for(lambda: power_of(p.gw, "b") == "asleep")
        ups = upstreams_of(p.gw)
        assert ups["a"]["power"] == "awake" and ups["a"]["wake"] is None
        assert ups["a"]["wakeStatus"] is None and ups["b"]["wake"] == MAC_B
        wake = ups["b"]["wakeStatus"]
        assert isinstance(wake, dict)
        assert wake["mac"] == MAC_B and wake["target"] == f"127.0.0.1:{p.listener.port}"
        assert wake["timeoutSeconds"] == 60 and wake["packets"] == 0

        # a model an up upstream offers goes there, though b (asleep) may serve it too
        shared = httpx.post(p.gw.url + "/v1/chat/completions", json=chat(SHARED), headers=AUTH)
        assert shared.status_code == 200 and "x-upstream-wake-ms" not in shared.headers
        time.sleep(0.5)
        assert p.listener.packets == []

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            started = time.monotonic()
            stream = pool.submit(stream_for_b, p.gw)
            plain = [
                pool.submit(
                    httpx.post,
                    p.gw.url + "/v1/chat/completions",
                    json=chat(ONLY_B),
                    headers=AUTH,
                    timeout=120,
                )
                for _ in range(3)
            ]
            time.sleep(0.5)  # b is waking now: a's requests go on meanwhile
            assert power_of(p.gw, "b") == "waking"
            for _ in range(5):
                asked = time.monotonic()
                answer = httpx.post(
                    p.gw.url + "/v1/chat/completions", json=chat(ONLY_A), headers=AUTH, timeout=30
                )
                assert answer.status_code == 200, answer.text
                assert "x-upstream-wake-ms" not in answer.headers
                assert time.monotonic() - asked < 5
            body, headers = stream.result(timeout=120)
            answers = [f.result(timeout=120) for f in plain]
            elapsed = time.monotonic() - started
        assert [a.status_code for a in answers] == [200] * 3, answers[0].text
        assert all(int(a.headers["x-upstream-wake-ms"]) >= 1000 for a in answers)
        assert headers.get("x-upstream-waking") == "1"
        assert WAKING.search(body) and b"data: [DONE]" in body
        assert elapsed >= WAKE_DELAY_S
        assert p.listener.packets == [magic_packet(parse_mac(MAC_B))]  # one, for the burst
        assert p.fallback.packets == []  # nothing for the primary, which has no wake entry
        assert chats_on(p.b, ONLY_B) == 4

        waking = events.next("upstream_waking", timeout=10)
        assert waking["upstream"] == "b" and waking["mac"] == MAC_B
        assert waking["target"] == f"127.0.0.1:{p.listener.port}" and waking["sent"] is True
        awake = events.next("upstream_awake", timeout=10)
        assert awake["upstream"] == "b" and awake["seconds"] >= WAKE_DELAY_S

        # awake now: no header, no packet; /admin/upstreams says so
        again = httpx.post(p.gw.url + "/v1/chat/completions", json=chat(ONLY_B), headers=AUTH)
        assert again.status_code == 200 and "x-upstream-wake-ms" not in again.headers
        b = upstreams_of(p.gw)["b"]
        assert b["power"] == "awake" and b["state"] == "up"
        assert isinstance(b["wakeStatus"], dict) and b["wakeStatus"]["packets"] == 1
        assert len(p.listener.packets) == 1
    finally:
        events.close()


def stream_for_b(gw: ServerProcess) -> tuple[bytes, dict[str, str]]:
    with httpx.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        json=chat(ONLY_B, stream=True),
        headers=AUTH,
        timeout=120,
    ) as resp:
        assert resp.status_code == 200
        return b"".join(resp.iter_bytes()), dict(resp.headers)


def test_a_model_no_upstream_may_serve_wakes_nothing(pair: Callable[..., Pair]) -> None:
    """b's patterns (it was never listed) decide what it may serve: not this."""
    p = pair()
    wait_for(lambda: power_of(p.gw, "b") == "asleep")
    answer = httpx.post(
        p.gw.url + "/v1/chat/completions", json=chat("gamma/none"), headers=AUTH, timeout=30
    )
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_not_found"
    time.sleep(0.5)
    assert p.listener.packets == [] and p.fallback.packets == []


def test_placed_on_an_upstream_that_fell_asleep(pair: Callable[..., Pair]) -> None:
    """b was up when the scheduler placed the request there; its connection is refused (it
    fell asleep since its watcher looked): the request waits for b's wake and goes there."""
    p = pair(b_awake=True, LMGATE_SYNC_INTERVAL="120")
    wait_for(lambda: upstreams_of(p.gw)["b"]["state"] == "up")
    first = httpx.post(p.gw.url + "/v1/chat/completions", json=chat(ONLY_B), headers=AUTH)
    assert first.status_code == 200
    p.b.stop()  # asleep; the watcher will not look for two minutes
    woken = httpx.post(
        p.gw.url + "/v1/chat/completions", json=chat(ONLY_B), headers=AUTH, timeout=120
    )
    assert woken.status_code == 200, woken.text
    assert p.listener.packets == [magic_packet(parse_mac(MAC_B))]
    assert chats_on(p.b, ONLY_B) == 1  # the restarted emulator's own log
    # a's requests never waited for any of it
    answer = httpx.post(p.gw.url + "/v1/chat/completions", json=chat(ONLY_A), headers=AUTH)
    assert answer.status_code == 200 and p.fallback.packets == []


# -- waking by hand --------------------------------------------------------------------------


def test_admin_route_and_cli_wake_one_by_name(pair: Callable[..., Pair]) -> None:
    p = pair()
    events = EventReader(p.gw.url, "?types=upstream_waking")
    env = {**os.environ, "LMGATE_ADMIN_KEY": ADMIN_KEY, "COLUMNS": "200"}
    try:
        wait_for(lambda: power_of(p.gw, "b") == "asleep")
        table = subprocess.run(
            [sys.executable, "-m", "lmgate", "upstreams", "list", "--url", p.gw.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert table.returncode == 0 and "asleep" in table.stdout, table.stderr

        out = subprocess.run(
            [sys.executable, "-m", "lmgate", "upstreams", "wake", "b", "--url", p.gw.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert MAC_B in out.stdout and f"127.0.0.1:{p.listener.port}" in out.stdout
        assert p.listener.first.wait(10)
        waking = events.next("upstream_waking", timeout=10)
        assert waking["upstream"] == "b" and waking["mac"] == MAC_B

        # while that wake runs, asking again sends nothing more
        again = httpx.post(p.gw.url + "/admin/upstreams/b/wake", headers=AUTH, timeout=10)
        assert again.status_code == 202
        assert again.json()["started"] is False and again.json()["power"] == "waking"

        wait_for(lambda: power_of(p.gw, "b") == "awake", timeout=60)
        assert p.listener.packets == [magic_packet(parse_mac(MAC_B))]

        none = httpx.post(p.gw.url + "/admin/upstreams/a/wake", headers=AUTH, timeout=10)
        assert none.status_code == 409
        assert none.json()["error"]["code"] == "wake_not_configured"
        unknown = httpx.post(p.gw.url + "/admin/upstreams/zz/wake", headers=AUTH, timeout=10)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "upstream_not_found"
        anonymous = httpx.post(p.gw.url + "/admin/upstreams/b/wake", timeout=10)
        assert anonymous.status_code == 401

        # an upstream added at runtime brings its own wake entry
        third = UdpListener()
        try:
            added = subprocess.run(
                [
                    *(sys.executable, "-m", "lmgate", "upstreams", "add", "c"),
                    f"http://127.0.0.1:{free_port()}",
                    *("--wake", "3C7C3F00000C", "--wake-broadcast", f"127.0.0.1:{third.port}"),
                    *("--url", p.gw.url),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert added.returncode == 0, added.stderr
            c = httpx.post(p.gw.url + "/admin/upstreams/c/wake", headers=AUTH, timeout=10)
            assert c.status_code == 202 and c.json()["started"] is True
            assert c.json()["wake"] == "3c:7c:3f:00:00:0c"
            assert c.json()["wakeStatus"]["target"] == f"127.0.0.1:{third.port}"
            assert third.first.wait(10)
            assert third.packets == [magic_packet(parse_mac("3c:7c:3f:00:00:0c"))]
        finally:
            third.close()
        assert p.fallback.packets == []
        assert p.listener.packets == [magic_packet(parse_mac(MAC_B))]
    finally:
        events.close()


def test_wake_floods_send_one_packet_per_gap(pair: Callable[..., Pair]) -> None:
    """b never wakes and each wake gives up after 0.5 s: admin calls and requests for b over
    five seconds begin wake after wake, yet b's network hears one packet per 2 s at most."""
    p = pair(b_wakes=False, wake_timeout="0.5")
    wait_for(lambda: power_of(p.gw, "b") == "asleep")

    async def hammer() -> tuple[list[int], list[int], float]:
        calls: list[int] = []
        codes: list[int] = []
        async with httpx.AsyncClient(base_url=p.gw.url, headers=AUTH, timeout=30) as client:
            started = time.monotonic()
            while time.monotonic() - started < 5.0:
                admin, answer = await asyncio.gather(
                    client.post("/admin/upstreams/b/wake"),
                    client.post("/v1/chat/completions", json=chat(ONLY_B)),
                )
                calls.append(admin.status_code)
                codes.append(answer.status_code)
            return calls, codes, time.monotonic() - started

    calls, codes, elapsed = asyncio.run(hammer())
    assert set(calls) == {202} and set(codes) == {503}
    assert len(calls) >= 5
    time.sleep(0.3)  # the listener's thread has every packet sent
    sent = len(p.listener.packets)
    assert 2 <= sent <= elapsed / 2.0 + 1, (sent, elapsed)
    assert set(p.listener.packets) == {magic_packet(parse_mac(MAC_B))}
    assert upstreams_of(p.gw)["b"]["wakeStatus"]["packets"] == sent  # type: ignore[index]
    assert p.fallback.packets == []


# -- bounds ----------------------------------------------------------------------------------


async def _raw_post(port: int, body: bytes, limit: float) -> bytes:
    """One request over a raw socket; the status line and body, or b"" on a timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        async with asyncio.timeout(limit):
            return await reader.read()
    except TimeoutError:
        return b""
    finally:
        writer.close()


def test_flood_for_a_sleeping_upstream_is_bounded(pair: Callable[..., Pair]) -> None:
    """b never wakes. 300 raw-socket requests for its model: LMGATE_QUEUE_MAX wait (then
    `wake_timeout`), the rest are refused at once with `upstream_asleep`; one packet; memory
    flat; a's requests are served meanwhile."""
    p = pair(b_wakes=False, wake_timeout="5s", LMGATE_QUEUE_MAX="20")
    assert p.gw.proc is not None
    proc = psutil.Process(p.gw.proc.pid)
    wait_for(lambda: power_of(p.gw, "b") == "asleep")
    body = httpx.Request("POST", "/", json=chat(ONLY_B)).content

    async def flood() -> tuple[list[bytes], list[float]]:
        posts = [asyncio.create_task(_raw_post(p.gw.port, body, 90.0)) for _ in range(300)]
        await asyncio.sleep(1.0)
        served: list[float] = []
        async with httpx.AsyncClient(base_url=p.gw.url, headers=AUTH, timeout=30) as client:
            for _ in range(5):
                asked = time.monotonic()
                answer = await client.post("/v1/chat/completions", json=chat(ONLY_A))
                assert answer.status_code == 200, answer.text
                served.append(time.monotonic() - asked)
        return list(await asyncio.gather(*posts)), served

    rss_before = proc.memory_info().rss
    started = time.monotonic()
    answers, served = asyncio.run(flood())
    elapsed = time.monotonic() - started
    rss_after = proc.memory_info().rss
    refused = [a for a in answers if b"upstream_asleep" in a]
    timed_out = [a for a in answers if b"wake_timeout" in a]
    assert len(timed_out) == 20, [a[:200] for a in answers if a not in refused][:3]
    assert len(refused) == 280
    assert all(a.startswith(b"HTTP/1.1 503") and b"retry-after" in a.lower() for a in answers)
    assert max(served) < 5, served
    assert elapsed < 120
    assert rss_after - rss_before < 40 * 1024 * 1024, (rss_before, rss_after)
    assert p.listener.packets == [magic_packet(parse_mac(MAC_B))]
    assert p.fallback.packets == []
    print(
        f"b-flood: 300 requests, {elapsed:.1f} s, a served within {max(served):.3f} s, "
        f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB"
    )
