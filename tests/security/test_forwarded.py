"""Forging the client's address through a trusted proxy: mixed forwarding headers, hops that
name no address, several header lines, long chains. Raw requests play the proxy; a real nginx
in front does it for real when it is installed.

Addresses in 127.0.0.0/8 stand for machines: .2 the operator (admin allowlist), .3 the trusted
reverse proxy, .7 a LAN client, .9 a hostile LAN client, .10 a key guesser, .8 an address
outside the allowlist. `::1` is on the admin allowlist too, to check IPv6 hops, and .1, where
the test's event reader connects from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest
from pydantic import ValidationError

from lmgate.guard.allowlist import MAX_HOPS
from lmgate.settings import Settings
from tests.observe.helpers import EventReader, eventually
from tests.security import nginx
from tests.security.tools import bearer, client_from, raw, statuses
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, start_gateway

OPERATOR, PROXY, FRIEND, MALLORY, GUESSER, OUTSIDER = (
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.7",
    "127.0.0.9",
    "127.0.0.10",
    "127.0.0.8",
)
ENV = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": API_KEY,
    "LMGATE_ALLOW": f"{OPERATOR},{FRIEND},{MALLORY},{GUESSER},::1",
    "LMGATE_ADMIN_ALLOW": f"{OPERATOR},::1,127.0.0.1",  # .1: the test's event reader
    "LMGATE_TRUSTED_PROXIES": PROXY,
    "LMGATE_AUTH_FAIL_LIMIT": "3",
    "LMGATE_AUTH_BLOCK_SECONDS": "60",
}
Headers = list[tuple[str, str]]


@pytest.fixture(scope="module")
def xff(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    """Trusts X-Forwarded-For (the default)."""
    server = start_gateway(tmp_root, emulator.url, env=ENV)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rfc7239(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    """Trusts Forwarded (spelled in lower case: the setting is not case-sensitive)."""
    server = start_gateway(
        tmp_root, emulator.url, env={**ENV, "LMGATE_FORWARDED_HEADER": "forwarded"}
    )
    yield server
    server.stop()


def _send(
    server: ServerProcess,
    headers: Headers,
    *,
    path: str = "/admin/keys",
    key: str = ADMIN_KEY,
    source: str = PROXY,
) -> tuple[int, dict[str, Any]]:
    """One request, headers exactly as given (repeats and odd spacing kept), from `source`."""
    head = f"GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
    head += "".join(f"{name}:{value}\r\n" for name, value in headers)
    answer = raw(server, (head + "Connection: close\r\n\r\n").encode("latin-1"), source=source)
    found = statuses(answer)
    assert len(found) == 1, answer[:300]
    body = answer.partition(b"\r\n\r\n")[2]
    return found[0], orjson.loads(body) if body.startswith(b"{") else {}


# --- X-Forwarded-For trusted ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("X-Forwarded-For", OPERATOR)], 200),
        ([("X-Forwarded-For", f" {OPERATOR} ")], 200),
        ([("X-Forwarded-For", f"{MALLORY}, {OPERATOR}")], 200),  # the proxy vouches for .2
        ([("X-Forwarded-For", "[::1]:4711")], 200),
        ([("X-Forwarded-For", "::1")], 200),
        ([("X-Forwarded-For", f"::ffff:{OPERATOR}")], 200),
        # the client's own Forwarded header is never read, wherever it stands
        ([("X-Forwarded-For", MALLORY), ("Forwarded", f"for={OPERATOR}")], 403),
        ([("Forwarded", f"for={OPERATOR}"), ("X-Forwarded-For", MALLORY)], 403),
        ([("X-Forwarded-For", MALLORY), ("Forwarded", "for=unknown")], 403),
        ([("X-Forwarded-For", MALLORY), ("Forwarded", 'for="[::1]:80"')], 403),
        ([("Forwarded", f"for={OPERATOR}")], 403),  # no X-Forwarded-For: the proxy itself
        ([("Forwarded", "for=unknown")], 403),
        # forged hops on the left are not walked
        ([("X-Forwarded-For", f"{OPERATOR}, {MALLORY}")], 403),
        ([("X-Forwarded-For", f"unknown, {MALLORY}")], 403),
        ([("X-Forwarded-For", f"[::1]:4711,{MALLORY}")], 403),
        ([("X-Forwarded-For", f"  {OPERATOR} ,\t{MALLORY}  ")], 403),
        ([("X-Forwarded-For", f"{OPERATOR}, {MALLORY}, {PROXY}")], 403),
        # several lines are one list, in order
        ([("X-Forwarded-For", OPERATOR), ("X-Forwarded-For", MALLORY)], 403),
        ([("X-Forwarded-For", OPERATOR), ("x-forwarded-for", f"{MALLORY}, {PROXY}")], 403),
        ([("X-Forwarded-For", MALLORY), ("X-Forwarded-For", OPERATOR)], 200),
    ],
)
def test_x_forwarded_for_is_the_one_header_read(
    xff: ServerProcess, headers: Headers, status: int
) -> None:
    got, body = _send(xff, headers)
    assert got == status, body
    if status == 403:
        assert body["error"]["code"] == "address_not_allowed"


UNREADABLE_XFF: list[Headers] = [
    [("X-Forwarded-For", "unknown")],
    [("X-Forwarded-For", f"{OPERATOR}, unknown")],
    [("X-Forwarded-For", f"{OPERATOR}, {PROXY}, unknown")],
    [("X-Forwarded-For", f"unknown, {PROXY}")],  # reached through a trusted hop
    [("X-Forwarded-For", "_hidden")],
    [("X-Forwarded-For", "for=127.0.0.2")],
    [("X-Forwarded-For", "gw.lan")],
    [("X-Forwarded-For", f"{OPERATOR},")],
    [("X-Forwarded-For", f"{OPERATOR}, , {PROXY}")],
    [("X-Forwarded-For", "")],
    [("X-Forwarded-For", OPERATOR), ("X-Forwarded-For", "")],
    [("X-Forwarded-For", OPERATOR), ("X-Forwarded-For", "nope")],
    [("X-Forwarded-For", f"{OPERATOR}:http")],
    [("X-Forwarded-For", "[::1]:4711x")],
    [("X-Forwarded-For", "[::1")],
    [("X-Forwarded-For", "127.000.000.002")],
    [("X-Forwarded-For", OPERATOR + ", " + ", ".join([PROXY] * MAX_HOPS))],
    [("X-Forwarded-For", OPERATOR)] + [("X-Forwarded-For", PROXY)] * MAX_HOPS,
]


@pytest.mark.parametrize("headers", UNREADABLE_XFF)
def test_an_unreadable_chain_is_refused_not_guessed(xff: ServerProcess, headers: Headers) -> None:
    for path, key in (("/admin/keys", ADMIN_KEY), ("/v1/models", API_KEY), ("/health", "")):
        got, body = _send(xff, headers, path=path, key=key)
        assert got == 400, (path, body)
        error = body["error"]
        assert error["code"] == "invalid_forwarded_header" and error["type"]
        assert "X-Forwarded-For" in error["message"]


def test_a_refused_chain_is_logged_and_published(xff: ServerProcess) -> None:
    reader = EventReader(xff.url, headers={})
    try:
        eventually(lambda: reader.status == 200)
        assert _send(xff, [("X-Forwarded-For", "unknown")], path="/v1/models/x1")[0] == 400
        found = reader.until("auth_denied", lambda d: d["path"] == "/v1/models/x1")
        assert found["reason"] == "invalid_forwarded_header" and found["status"] == 400
        assert found["address"] == PROXY  # who sent it; never the proxy as the client
    finally:
        reader.close()
    assert "invalid_forwarded_header" in xff.logs()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("X-Forwarded-For", FRIEND)], 200),
        ([("X-Forwarded-For", f"{OUTSIDER}, {FRIEND}")], 200),
        ([("X-Forwarded-For", OUTSIDER)], 403),
        ([("X-Forwarded-For", f"{FRIEND}, {OUTSIDER}")], 403),
        ([("X-Forwarded-For", OUTSIDER), ("Forwarded", f"for={FRIEND}")], 403),
        ([("Forwarded", f"for={FRIEND}"), ("X-Forwarded-For", OUTSIDER)], 403),
        ([("X-Forwarded-For", OUTSIDER), ("Forwarded", "for=unknown")], 403),
        ([("X-Forwarded-For", OUTSIDER), ("X-Real-IP", FRIEND)], 403),
    ],
)
def test_the_allowlist_sees_the_real_client(
    xff: ServerProcess, headers: Headers, status: int
) -> None:
    got, body = _send(xff, headers, path="/v1/models", key=API_KEY)
    assert got == status, body


def test_damping_follows_the_real_client(xff: ServerProcess) -> None:
    """A guesser behind the proxy names someone else in `Forwarded` on every try: it is
    blocked itself, and the one it named is not."""
    for i in range(3):
        forged = [("X-Forwarded-For", GUESSER), ("Forwarded", f"for={FRIEND}, for=10.0.0.{i}")]
        assert _send(xff, forged, path="/v1/models", key=f"guess-{i}")[0] == 401
    blocked, body = _send(xff, [("X-Forwarded-For", GUESSER)], path="/v1/models", key=API_KEY)
    assert blocked == 429 and body["error"]["code"] == "too_many_failed_attempts"
    friend = [("X-Forwarded-For", FRIEND), ("Forwarded", f"for={GUESSER}")]
    assert _send(xff, friend, path="/v1/models", key=API_KEY)[0] == 200


def test_headers_from_an_untrusted_peer_are_ignored(xff: ServerProcess) -> None:
    for headers in (
        [("X-Forwarded-For", OPERATOR)],
        [("X-Forwarded-For", "unknown")],
        [("Forwarded", f"for={OPERATOR}")],
        [("Forwarded", "for=unknown")],
    ):
        assert _send(xff, headers, source=MALLORY)[0] == 403  # .9 itself; never a 400
        assert _send(xff, headers, path="/v1/models", key=API_KEY, source=MALLORY)[0] == 200


# --- Forwarded trusted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("Forwarded", f"for={OPERATOR}")], 200),
        ([("Forwarded", f"for={OPERATOR};proto=https;by={PROXY}")], 200),
        ([("Forwarded", 'for="[::1]:4711"')], 200),
        ([("Forwarded", f'For="{OPERATOR}:80"')], 200),
        ([("Forwarded", f"for=unknown, for={OPERATOR}")], 200),
        ([("Forwarded", f"for={MALLORY}"), ("X-Forwarded-For", OPERATOR)], 403),
        ([("X-Forwarded-For", OPERATOR), ("Forwarded", f"for={MALLORY}")], 403),
        ([("X-Forwarded-For", OPERATOR)], 403),  # no Forwarded: the proxy itself
        ([("X-Forwarded-For", "unknown")], 403),
        ([("Forwarded", f"for={OPERATOR}, for={MALLORY}")], 403),
        ([("Forwarded", f"for={OPERATOR}"), ("Forwarded", f"for={MALLORY}")], 403),
        ([("Forwarded", f"for={OPERATOR} ,  for={MALLORY};proto=http")], 403),
    ],
)
def test_forwarded_is_the_one_header_read(
    rfc7239: ServerProcess, headers: Headers, status: int
) -> None:
    got, body = _send(rfc7239, headers)
    assert got == status, body


@pytest.mark.parametrize(
    "value",
    [
        "for=unknown",
        "for=_hidden",
        'for="_gazonk"',
        "for=",
        "proto=https",
        f"for={OPERATOR}, for=unknown",
        f"for={OPERATOR}, proto=https",
        f"for={OPERATOR};for={MALLORY}",
        f"for=garbage, for={PROXY}",
        f'for="{OPERATOR}',
        f"for={OPERATOR},",
        "for=[::1]:4711x",
    ],
)
def test_an_unreadable_forwarded_chain_is_refused(rfc7239: ServerProcess, value: str) -> None:
    got, body = _send(rfc7239, [("Forwarded", value)])
    assert got == 400 and body["error"]["code"] == "invalid_forwarded_header", body
    assert "Forwarded" in body["error"]["message"]


def test_the_setting_names_one_of_two_headers() -> None:
    assert Settings(forwarded_header="forwarded").forwarded_header == "Forwarded"
    assert Settings(forwarded_header=" x-forwarded-for").forwarded_header == "X-Forwarded-For"
    assert Settings().forwarded_header == "X-Forwarded-For"
    for wrong in ("X-Real-IP", "both", ""):
        with pytest.raises(ValidationError, match="X-Forwarded-For, Forwarded"):
            Settings(forwarded_header=wrong)


# --- through a real nginx ------------------------------------------------------------------------


def _nginx_in_front(tmp: Path, server: ServerProcess, header: str) -> Iterator[nginx.Nginx]:
    exe = nginx.binary()
    if exe is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    proxy = nginx.Nginx(exe, tmp, server.port, PROXY, header)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def nginx_xff(tmp_root: Path, xff: ServerProcess) -> Iterator[nginx.Nginx]:
    yield from _nginx_in_front(tmp_root / "nginx-xff", xff, "X-Forwarded-For")


@pytest.fixture(scope="module")
def nginx_7239(tmp_root: Path, rfc7239: ServerProcess) -> Iterator[nginx.Nginx]:
    yield from _nginx_in_front(tmp_root / "nginx-7239", rfc7239, "Forwarded")


FORGERIES: list[dict[str, str]] = [
    {},
    {"Forwarded": f"for={OPERATOR}"},
    {"Forwarded": "for=unknown"},
    {"Forwarded": 'for="_hidden"'},
    {"Forwarded": 'for="[::1]:4711"'},
    {"X-Forwarded-For": OPERATOR},
    {"X-Forwarded-For": "unknown"},
    {"X-Forwarded-For": "[::1]:4711"},
    {"X-Forwarded-For": OPERATOR, "Forwarded": f"for={OPERATOR}"},
    {"X-Real-IP": OPERATOR},
]


def _through(proxy: nginx.Nginx, source: str, path: str, key: str, **headers: str) -> int:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=proxy.url, transport=transport, timeout=30) as client:
        return client.get(path, headers={**bearer(key), **headers}).status_code


@pytest.mark.parametrize("fixture", ["nginx_xff", "nginx_7239"])
@pytest.mark.parametrize("forged", FORGERIES)
def test_forging_through_nginx(
    request: pytest.FixtureRequest, fixture: str, forged: dict[str, str]
) -> None:
    proxy: nginx.Nginx = request.getfixturevalue(fixture)
    # the hostile client is itself: no admin routes, whatever it claims to be
    assert _through(proxy, MALLORY, "/admin/keys", ADMIN_KEY, **forged) == 403
    assert _through(proxy, MALLORY, "/v1/models", API_KEY, **forged) == 200
    # an address outside the allowlist stays outside; the operator is still the operator
    assert _through(proxy, OUTSIDER, "/v1/models", API_KEY, **forged) == 403
    assert _through(proxy, OPERATOR, "/admin/keys", ADMIN_KEY, **forged) == 200


def test_several_client_lines_through_nginx(nginx_xff: nginx.Nginx, xff: ServerProcess) -> None:
    head = (
        f"GET /admin/keys HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
        f"X-Forwarded-For: {OPERATOR}\r\nX-Forwarded-For: ::1\r\nForwarded: for={OPERATOR}\r\n"
        "Connection: close\r\n\r\n"
    )
    target = ServerProcess([], port=nginx_xff.port, ready_path="/")
    assert statuses(raw(target, head.encode(), source=MALLORY)) == [403]
    assert statuses(raw(target, head.encode(), source=OPERATOR)) == [200]


# --- a flood of huge chains ----------------------------------------------------------------------


def test_huge_chains_cost_little_and_others_are_served(xff: ServerProcess) -> None:
    """A trusted proxy relays 400 requests carrying about 60 KiB of hops each (the head limit
    is 64 KiB): chains of forged hops ending in the client, and chains of trusted hops too long
    to walk. Each is answered at once; memory stays flat; a LAN client is served throughout."""
    forged = ", ".join([FRIEND] * 5000) + f", {OUTSIDER}"
    trusted = ", ".join([PROXY] * 5000)
    flood = [
        [("X-Forwarded-For", forged)] if i % 2 else [("X-Forwarded-For", trusted)]
        for i in range(400)
    ]
    proc = psutil.Process(xff.proc.pid if xff.proc else 0)
    _send(xff, flood[0])  # warm up
    rss_before = proc.memory_info().rss
    answers: list[int] = []
    friend_waits: list[float] = []
    stop = threading.Event()

    def flooder(part: list[Headers]) -> None:
        for headers in part:
            answers.append(_send(xff, headers, path="/v1/models", key=API_KEY)[0])

    def friend() -> None:
        with client_from(xff, PROXY, headers=bearer(API_KEY)) as c:
            while not stop.is_set():
                started = time.monotonic()
                assert c.get("/v1/models", headers={"X-Forwarded-For": FRIEND}).status_code == 200
                friend_waits.append(time.monotonic() - started)
                time.sleep(0.02)

    started = time.monotonic()
    threads = [threading.Thread(target=flooder, args=(flood[i::4],)) for i in range(4)]
    watcher = threading.Thread(target=friend)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    stop.set()
    watcher.join()
    assert sorted(set(answers)) == [400, 403] and len(answers) == 400
    assert answers.count(400) == 200
    assert elapsed < 30.0, elapsed  # about 1-2 s here
    assert friend_waits and max(friend_waits) < 5.0, max(friend_waits)
    growth = proc.memory_info().rss - rss_before
    assert growth < 20 * 1024 * 1024, growth
