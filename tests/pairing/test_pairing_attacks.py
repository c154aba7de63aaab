"""Hostile clients against the public pairing routes of a real gateway, over real sockets.

Every spelling of a code's path (case, slashes, dots, percent-encoding, unicode, length) and
every method is answered cleanly by the pairing routes; no record, log line, event, metric or
echoed request id ever carries a code; guessing from one address or rotating through an IPv6
/64 is damped, with the gateway's memory and time bounded and a normal phone served meanwhile;
only one of many parallel redemptions (across workers) wins; admins cannot flood pending
codes; the allowlist holds for /pair/ too.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from lmgate.guard.paths import shown_path
from tests.server_fixtures import emulator_fixture, gateway_fixture
from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    admin_headers,
    raw_http,
    start_gateway,
)

ENV = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_AUTH_FAIL_LIMIT": "4",
    "LMGATE_AUTH_FAIL_EXEMPT": "",  # loopback clients are counted like any other
}
HOSTILE = "127.0.0.2"  # a second loopback address: the attacker, apart from the normal phone


emulator = emulator_fixture(name="pair-attack-emu")
gateway = gateway_fixture("emulator", env=ENV, scope="function")
# a gateway that never blocks for wrong codes: every spelling reaches the routes
lenient = gateway_fixture("emulator", env={**ENV, "LMGATE_AUTH_FAIL_LIMIT": "0"}, scope="function")


def new_code(gw: ServerProcess, name: str = "phone") -> str:
    with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=30) as admin:
        made = admin.post("/admin/pairing", json={"name": name})
    assert made.status_code == 201, made.text
    code: str = made.json()["code"]
    return code


def raw(port: int, request: bytes, source: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    return raw_http(port, request, timeout, source=source)


def ask(port: int, method: str, path: str, code: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request as given, the code also offered as the request id to be echoed."""
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"X-Request-ID: {code}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answer = raw(port, request)
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1]), answer


def spellings(code: str) -> list[str]:
    encoded = "".join(f"%{ord(c):02X}" for c in code)
    return [
        f"/PAIR/{code}",
        f"/Pair/{code}/",
        f"/pair/{code}/",
        f"//pair/{code}",
        f"/pair//{code}",
        f"/pair/./{code}",
        f"/v1/../pair/{code}",
        f"/pair/{encoded}",
        f"/%70%61%69%72/{code}",
        f"/%2570air/{code}",
        f"/pair%2F{code}",
        f"/pair\\{code}",
        f"/pair/{code}.",
        f"/pair/{code}%2F",
        f"/pair/{code}/extra",
        f"/pair/{code};x",
        f"/pair/{code}?code={code}",
        f"/pair/{code}%00",
        f"/pair/{code}%0A",
        f"/pair/{code}%25252525252541",
        f"/pair/{code}%EF%BC%A1",  # a fullwidth letter after the code
        f"/pair/{code}{'A' * 9000}",
    ]


def test_no_spelling_or_method_leaks_a_code_or_answers_badly(lenient: ServerProcess) -> None:
    gateway = lenient
    code = new_code(gateway)
    body = b'{"key": "x"}'
    seen: dict[str, int] = {}
    for path in spellings(code):
        for method in ("GET", "HEAD", "POST", "PUT", "OPTIONS", "DELETE", "PATCH"):
            status, answer = ask(gateway.port, method, path, code, body)
            seen[f"{method} {path[:40]}"] = status
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert status != 500 and status < 600, (method, path, answer[:300])
            if status == 200:
                continue  # the one redemption (or the page): the code is the client's own
            assert code.encode() not in answer, (method, path, answer[:400])
            if method != "HEAD" and b"text/html" not in head:
                error = orjson.loads(payload)["error"]
                assert error["message"] and error["type"] and error["code"], error
    # the code was redeemed exactly once, whatever spelling got there first
    assert sum(1 for k, v in seen.items() if k.startswith("POST") and v == 200) == 1
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        records = [
            admin.get("/debug/requests", params={"limit": 500}).text,
            admin.get("/debug/metrics").text,
            admin.get("/debug/status").text,
            admin.get("/metrics").text,
            admin.get("/admin/pairing").text,
        ]
    for record in records:
        assert code not in record
    assert "/pair/[code]" in records[0]
    assert code not in gateway.logs()


def test_the_page_answers_head_and_stays_out_of_caches(gateway: ServerProcess) -> None:
    code = new_code(gateway)
    with httpx.Client(base_url=gateway.url, timeout=30) as phone:
        for method in ("HEAD", "GET"):
            page = phone.request(method, f"/pair/{code}")
            assert page.status_code == 200
            assert page.headers["cache-control"] == "no-store"
            assert page.headers["referrer-policy"] == "no-referrer"
            csp = page.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert "'unsafe-inline'" not in csp
        assert not phone.head(f"/pair/{code}").content
        gone = phone.get(f"/pair/{'B' * 20}")  # a refusal page is not cached either
        assert gone.status_code == 404 and gone.headers["cache-control"] == "no-store"
        redeemed = phone.post(f"/pair/{code}/")  # a trailing slash is forgiven
        assert redeemed.status_code == 200 and redeemed.headers["cache-control"] == "no-store"
        assert phone.post(f"/pair/{code}").status_code == 410
        for asset in ("/pair/static/pair.js", "/pair/static/pair.css"):
            got = phone.get(asset)
            assert got.status_code == 200 and got.headers["x-content-type-options"] == "nosniff"
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        recent = admin.get("/debug/requests").text
    assert "/pair/static/pair.js" in recent  # the page's own files are shown as they are


def test_a_guess_flood_is_damped_bounded_and_a_phone_is_served(gateway: ServerProcess) -> None:
    real = new_code(gateway, "Anna's phone")
    proc = psutil.Process(gateway.proc.pid if gateway.proc else 0)
    transport = httpx.HTTPTransport(local_address=HOSTILE)
    with httpx.Client(base_url=gateway.url, transport=transport, timeout=30) as warm:
        warm.get("/health")
    rss_before = proc.memory_info().rss

    def guesser(worker: int) -> list[int]:
        statuses = []
        hostile = httpx.HTTPTransport(local_address=HOSTILE)
        with httpx.Client(base_url=gateway.url, transport=hostile, timeout=30) as client:
            for n in range(150):
                guess = f"{worker:02d}{n:04d}".ljust(20, "x")
                method = client.post if n % 2 else client.get
                statuses.append(method(f"/pair/{guess}").status_code)
        return statuses

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        flood = [pool.submit(guesser, w) for w in range(4)]
        time.sleep(0.3)
        with httpx.Client(base_url=gateway.url, timeout=30) as phone:  # meanwhile, 127.0.0.1
            assert phone.get(f"/pair/{real}").status_code == 200
            answer = phone.post(f"/pair/{real}")
            assert answer.status_code == 200, answer.text
            key = answer.json()["key"]
            models = phone.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert models.status_code == 200
        statuses = [s for f in flood for s in f.result()]
    elapsed = time.monotonic() - started
    rss_after = proc.memory_info().rss

    assert len(statuses) == 600
    assert statuses.count(404) <= 4 and set(statuses) <= {404, 429}  # the limit, then blocked
    assert elapsed < 60, elapsed
    assert rss_after - rss_before < 40 * 1024 * 1024, (rss_before, rss_after)
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        blocks = admin.get("/admin/blocks").json()["blocks"]
        events = admin.get("/debug/metrics").json()["recentActivity"]
    assert [b["address"] for b in blocks] == [HOSTILE]
    assert any(e["type"] == "address_blocked" and e["address"] == HOSTILE for e in events)


def test_rotating_through_an_ipv6_64_does_not_reset_the_count(
    tmp_path: Path, emulator: ServerProcess
) -> None:
    env = {**ENV, "LMGATE_TRUSTED_PROXIES": "127.0.0.1"}
    gw = start_gateway(tmp_path, emulator.url, env=env)
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as proxy:

            def guess(address: str, n: int) -> int:
                headers = {"X-Forwarded-For": address}
                return proxy.post(f"/pair/{'C' * 16}{n:04d}", headers=headers).status_code

            rotating = [guess(f"2001:db8:7:9::{n:x}", n) for n in range(1, 40)]
            assert rotating[:4] == [404] * 4 and set(rotating[4:]) == {429}
            # the next /64 is somebody else, and so is any IPv4 address
            assert guess("2001:db8:7:a::1", 99) == 404
            assert guess("192.0.2.7", 98) == 404
            # many addresses, one guess each: each is counted, the gateway stays bounded
            proc = psutil.Process(gw.proc.pid if gw.proc else 0)
            rss_before = proc.memory_info().rss
            started = time.monotonic()
            spread = [guess(f"2001:db8:{n:x}::1", n) for n in range(600)]
            assert set(spread) == {404}
            assert time.monotonic() - started < 60
            assert proc.memory_info().rss - rss_before < 40 * 1024 * 1024
    finally:
        gw.stop()


def test_one_code_one_key_across_workers(tmp_path: Path, emulator: ServerProcess) -> None:
    gw = start_gateway(tmp_path, emulator.url, "--workers", "2", env=ENV)
    try:
        codes = [new_code(gw, f"racer {n}") for n in range(3)]

        def tap(code: str) -> int:
            with httpx.Client(base_url=gw.url, timeout=30) as phone:  # a new connection each
                return phone.post(f"/pair/{code}").status_code

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = {c: sorted(pool.map(tap, [c] * 12)) for c in codes}
        for code, statuses in results.items():
            assert statuses == [200] + [410] * 11, (code, statuses)
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=30) as admin:
            names = [k["name"] for k in admin.get("/admin/keys").json()["keys"]]
        for n in range(3):
            assert names.count(f"racer-{n}") == 1
    finally:
        gw.stop()


def test_a_parallel_pending_code_flood_stays_at_the_bound(gateway: ServerProcess) -> None:
    def create(n: int) -> int:
        with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=60) as admin:
            return admin.post("/admin/pairing", json={"name": f"flood {n}"}).status_code

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(create, range(120)))
    assert statuses.count(201) == 50 and statuses.count(400) == 70
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        pairings = admin.get("/admin/pairing").json()["pairings"]
        assert sum(1 for p in pairings if p["status"] == "pending") == 50
        # cancelling frees room again
        assert admin.delete(f"/admin/pairing/{pairings[0]['id']}").status_code == 200
        assert admin.post("/admin/pairing", json={"name": "one more"}).status_code == 201


def test_an_address_outside_the_allowlist_cannot_pair(
    tmp_path: Path, emulator: ServerProcess
) -> None:
    gw = start_gateway(tmp_path, emulator.url, env={**ENV, "LMGATE_ALLOW": "127.0.0.1/32"})
    try:
        code = new_code(gw)
        outside = httpx.HTTPTransport(local_address=HOSTILE)
        with httpx.Client(base_url=gw.url, transport=outside, timeout=30) as stranger:
            for method in ("GET", "HEAD", "POST"):
                refused = stranger.request(method, f"/pair/{code}")
                assert refused.status_code == 403, (method, refused.text)
            assert stranger.get("/pair/ca.pem").status_code == 403
        with httpx.Client(base_url=gw.url, timeout=30) as phone:
            assert phone.post(f"/pair/{code}").status_code == 200  # still unused
    finally:
        gw.stop()


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/pair/abcdefghijklmnopqrst", "/pair/[code]"),
        ("/PAIR/abcdefghijklmnopqrst/", "/pair/[code]"),
        ("//pair/./abcdefghijklmnopqrst", "/pair/[code]"),
        ("/x/../pair/abcdefghijklmnopqrst", "/pair/[code]"),
        ("/%70air/abcdefghijklmnopqrst", "/pair/[code]"),
        ("/pair%5Cabcdefghijklmnopqrst", "/pair/[code]"),
        ("/pair/abcdefghijklmnopqrst%00", "/pair/[code]"),
        ("/pair/abcdefghijklmnopqrst%2525252525252541", "/pair/[code]"),
        ("/pair/static/pair.js", "/pair/static/pair.js"),
        ("/pair/ca.pem", "/pair/ca.pem"),
        ("/pair", "/pair"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/models/a%2Fb", "/v1/models/a%2Fb"),
        ("/repair/x", "/repair/x"),
    ],
)
def test_records_show_pairing_paths_masked(path: str, shown: str) -> None:
    assert shown_path(path) == shown
