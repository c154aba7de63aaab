"""Cross-site requests and DNS rebinding against a real gateway, over real sockets.

Without keys (what `make run` gives) a page the operator visits must not be able to drive the
control plane: a `text/plain` or form POST (sent by browsers without asking first) is refused,
as is anything a browser marks as coming from another site, and no key gets created (auth stays
off). A keyless gateway answers only to loopback names and configured ones, so a page cannot
reach it under its own name after pointing that name at 127.0.0.1. Clients that are not
browsers (curl, SDKs, the CLI) send neither `Origin` nor `Sec-Fetch-Site` and keep working.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from lmgate.guard.hostnames import HostNames, host_name
from lmgate.settings import Settings
from tests.security.tools import bearer, raw, statuses
from tests.servers import (
    ADMIN_KEY,
    API_KEY,
    ServerProcess,
    clean_env,
    start_gateway,
    upstream_requests,
)

NEW_KEY = b'{"name": "planted", "scope": "admin"}'
ORIGIN = "http://app.lan:3000"  # the origin the `edge` gateway allows for CORS


@pytest.fixture
def keyless(tmp_path: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    """A fresh gateway without keys: refusing must leave it without keys."""
    server = start_gateway(tmp_path, emulator.url, data_dir=tmp_path / "data")
    yield server
    server.stop()


def assert_still_keyless(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/admin/keys").json()["keys"] == []
    assert httpx.get(server.url + "/v1/models").status_code == 200  # auth still off


def refused(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["type"] and error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        # What a page's <form enctype="text/plain"> or no-cors fetch sends, spelled variously.
        {"Content-Type": "text/plain", "Origin": "http://attacker.example"},
        {"Content-Type": "text/plain;charset=UTF-8", "Sec-Fetch-Site": "cross-site"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {"Content-Type": "TEXT/PLAIN"},
        {"Content-Type": "text/plain; application/json"},
        {"Content-Type": "application/jsonx"},
        {"Origin": "http://attacker.example"},  # a body with no content type, from a page
    ],
)
def test_non_json_admin_writes_are_refused_and_plant_nothing(
    keyless: ServerProcess, headers: dict[str, str]
) -> None:
    resp = httpx.post(keyless.url + "/admin/keys", content=NEW_KEY, headers=headers)
    assert resp.status_code in (403, 415), resp.text
    assert resp.json()["error"]["code"] in ("cross_site_request", "unsupported_media_type")
    assert_still_keyless(keyless)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},  # sandboxed frames, file:// pages
        {"Origin": "http://127.0.0.1:1"},  # another port is another origin
        {"Origin": "http://localhost"},
        {"Origin": "garbage"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "CROSS-SITE"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://attacker.example"},
    ],
)
def test_cross_site_json_writes_are_refused(
    keyless: ServerProcess, headers: dict[str, str]
) -> None:
    """JSON across origins needs a preflight a browser would not get; refused anyway."""
    body = {"name": "planted", "scope": "admin"}
    refused(
        httpx.post(keyless.url + "/admin/keys", json=body, headers=headers),
        403,
        "cross_site_request",
    )
    assert_still_keyless(keyless)


def test_every_admin_route_and_method_refuses_other_sites(keyless: ServerProcess) -> None:
    evil = {"Origin": "http://attacker.example", "Sec-Fetch-Site": "cross-site"}
    for method, path in [
        ("GET", "/admin/state"),
        ("GET", "/admin/keys"),
        ("GET", "/debug/stream"),
        ("GET", "/debug/status"),
        ("GET", "/metrics"),
        ("DELETE", "/debug/requests/x"),
        ("PUT", "/admin/models/qwen/qwen3-4b/profile"),
        ("OPTIONS", "/admin/keys"),
        ("GET", "/ADMIN/%73tate"),  # every spelling is the same path
    ]:
        resp = httpx.request(method, keyless.url + path, headers=evil)
        refused(resp, 403, "cross_site_request")
    # Inference routes are not the control plane: pages may use them (CORS decides reading).
    assert httpx.get(keyless.url + "/v1/models", headers=evil).status_code == 200


def test_model_management_upstream_is_never_reached_cross_site(
    keyless: ServerProcess, upstream: httpx.Client
) -> None:
    for path in ("/api/v1/models/load", "/api/v1/models/unload", "/api/v1/models/download"):
        form = httpx.post(
            keyless.url + path,
            content=b'{"model": "google/gemma-3-1b"}',
            headers={"Content-Type": "text/plain", "Origin": "http://attacker.example"},
        )
        refused(form, 403, "cross_site_request")
        plain = httpx.post(
            keyless.url + path,
            content=b'{"model": "google/gemma-3-1b"}',
            headers={"Content-Type": "text/plain"},
        )
        refused(plain, 415, "unsupported_media_type")
    managed = [r for r in upstream_requests(upstream) if r["method"] == "POST"]
    assert managed == []


def test_the_gateway_own_pages_and_plain_clients_still_work(keyless: ServerProcess) -> None:
    url = keyless.url
    authority = url.removeprefix("http://")
    body = {"modelKey": "qwen/qwen3-4b"}
    browser_like = [
        {"Origin": url, "Sec-Fetch-Site": "same-origin"},
        {"Origin": f"https://{authority}"},  # behind a proxy that ends TLS
        {"Origin": f"HTTP://{authority}"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {},  # curl, SDKs, the CLI
    ]
    for headers in browser_like:
        resp = httpx.post(url + "/admin/models/activate", json=body, headers=headers)
        assert resp.status_code == 200, (headers, resp.text)
    charset = {"Content-Type": "application/json; charset=utf-8"}
    resp = httpx.post(
        url + "/admin/models/activate", content=b'{"modelKey": "qwen/qwen3-4b"}', headers=charset
    )
    assert resp.status_code == 200, resp.text
    # Bodiless writes need no content type.
    assert httpx.delete(url + "/debug/requests/nothing-here").status_code == 404
    unload = httpx.post(url + "/admin/models/unload", json={"all": True}).status_code
    assert unload == 200


def test_the_cli_works_without_keys_and_with_them(
    keyless: ServerProcess, tmp_path: Path, emulator: ServerProcess
) -> None:
    def cli(server: ServerProcess, *args: str, key: str | None = None) -> str:
        env = clean_env(LMGATE_URL=server.url, **({"LMGATE_ADMIN_KEY": key} if key else {}))
        done = subprocess.run(
            [sys.executable, "-m", "lmgate", "models", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "qwen/qwen3-4b" in cli(keyless, "list")
    cli(keyless, "activate", "qwen/qwen3-4b", "--temperature", "0.3")
    assert httpx.get(keyless.url + "/admin/state").json()["activeModel"] == "qwen/qwen3-4b"
    cli(keyless, "unload", "--all")
    keyed = start_gateway(tmp_path, emulator.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY})
    try:
        cli(keyed, "activate", "qwen/qwen3-4b", key=ADMIN_KEY)
        state = httpx.get(keyed.url + "/admin/state", headers=bearer(ADMIN_KEY)).json()
        assert state["activeModel"] == "qwen/qwen3-4b"
    finally:
        keyed.stop()


def test_with_keys_cross_site_is_refused_even_with_the_admin_key(
    gateway: ServerProcess,
) -> None:
    """A page cannot know the key, but an admin route still answers no other site, and the
    origins allowed for CORS do not reach it either."""
    headers = {**bearer(ADMIN_KEY), "Origin": "http://attacker.example"}
    refused(httpx.get(gateway.url + "/admin/state", headers=headers), 403, "cross_site_request")
    text = {**bearer(ADMIN_KEY), "Content-Type": "text/plain"}
    resp = httpx.post(gateway.url + "/admin/models/activate", content=b"{}", headers=text)
    refused(resp, 415, "unsupported_media_type")
    # The key is checked first: without one, a cross-site request learns nothing more.
    anonymous = httpx.get(gateway.url + "/admin/state", headers={"Origin": "http://x.example"})
    assert anonymous.status_code == 401


def test_cors_origins_do_not_reach_the_control_plane(edge: ServerProcess) -> None:
    headers = {**bearer(ADMIN_KEY), "Origin": ORIGIN}
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as operator:
        refused(operator.get(edge.url + "/admin/state", headers=headers), 403, "cross_site_request")
        ok = operator.get(edge.url + "/v1/models", headers={**bearer(API_KEY), "Origin": ORIGIN})
        assert ok.status_code == 200


# Host names a page could hold after pointing its own name at this machine.
FOREIGN_HOSTS = [
    "attacker.example",
    "attacker.example:1235",
    "ATTACKER.EXAMPLE.",
    "localhost.attacker.example",
    "127.0.0.1.nip.io",
    "localhost:1235@attacker.example",
    "0.0.0.0",
    "10.1.2.3",
    "[fe80::1]",
    "xn--80ak6aa92e.com",
]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_keyless_gateway_refuses_foreign_host_names(open_gateway: ServerProcess, host: str) -> None:
    for path in ("/v1/models", "/health", "/dashboard/", "/admin/state", "/v1/chat/completions"):
        resp = httpx.get(open_gateway.url + path, headers={"Host": host})
        refused(resp, 403, "host_not_allowed")
        assert "LMGATE_ALLOWED_HOSTS" in resp.json()["error"]["message"]


def test_foreign_host_is_refused_over_a_raw_socket_too(open_gateway: ServerProcess) -> None:
    request = (
        b"POST /admin/keys HTTP/1.1\r\nHost: attacker.example\r\nContent-Type: application/json"
        b"\r\nContent-Length: 37\r\n\r\n" + NEW_KEY + b"GET /v1/models HTTP/1.1\r\n"
        b"Host: evil.test\r\nConnection: close\r\n\r\n"
    )
    assert statuses(raw(open_gateway, request)) == [403, 403]
    assert httpx.get(open_gateway.url + "/admin/keys").json()["keys"] == []


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST:9",
        "app.localhost",
        "127.0.0.1",
        "127.9.9.9:1",
        "[::1]:1",
        "[::ffff:127.0.0.1]",
        "gpu-box",  # a single-label name: no public DNS answers for it, so it cannot be rebound
    ],
)
def test_keyless_gateway_answers_loopback_names(open_gateway: ServerProcess, host: str) -> None:
    assert httpx.get(open_gateway.url + "/v1/models", headers={"Host": host}).status_code == 200


def test_allowed_hosts_setting(tmp_path: Path, emulator: ServerProcess) -> None:
    env = {"LMGATE_ALLOWED_HOSTS": "gpu-box.lan,*.home.arpa"}
    server = start_gateway(tmp_path, emulator.url, env=env)
    try:
        for host in ("gpu-box.lan", "GPU-BOX.LAN:1235", "lab.home.arpa", "localhost"):
            resp = httpx.get(server.url + "/v1/models", headers={"Host": host})
            assert resp.status_code == 200, host
        for host in ("gpu-box.lan.attacker.example", "home.arpa.evil", "other.lan"):
            resp = httpx.get(server.url + "/v1/models", headers={"Host": host})
            refused(resp, 403, "host_not_allowed")
    finally:
        server.stop()


def test_with_keys_the_key_is_the_protection(gateway: ServerProcess) -> None:
    resp = httpx.get(
        gateway.url + "/v1/models", headers={"Host": "gpu-box.example", **bearer(API_KEY)}
    )
    assert resp.status_code == 200


def test_allowed_hosts_values_are_checked() -> None:
    ok = Settings(allowed_hosts="gpu-box.lan, *.home.arpa,192.168.1.20,[fd00::1],*")
    assert ok.allowed_hosts == ["gpu-box.lan", "*.home.arpa", "192.168.1.20", "[fd00::1]", "*"]
    for bad in ("gpu-box.lan:1235", "http://gpu-box.lan", "a b", "*.", "user@host"):
        with pytest.raises(ValueError, match="allowed host"):
            Settings(allowed_hosts=bad)


def test_a_wildcard_listener_answers_this_machine_names() -> None:
    names = HostNames.build("0.0.0.0", [])
    assert names.allows(host_name(socket.gethostname().lower()))
    lan = [a for a in psutil.net_if_addrs().values() for a in a if a.family == socket.AF_INET]
    assert all(names.allows(host_name(a.address)) for a in lan)
    assert not names.allows("0.0.0.0") and not names.allows("attacker.example")
    assert HostNames.build("192.168.1.20", []).allows("192.168.1.20")
    assert not HostNames.build("127.0.0.1", []).allows("192.168.1.20")
