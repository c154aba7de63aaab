"""Who may come in: the admin allowlist, forwarded headers, damping of bad keys, and CORS.

Each client picks a source address inside 127.0.0.0/8 to play a different machine: .1 an
ordinary LAN client, .2 the admin's machine, .3 a trusted reverse proxy.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.security.tools import bearer, client_from
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess

ADMIN = bearer(ADMIN_KEY)


def test_admin_routes_only_from_the_admin_allowlist(edge: ServerProcess) -> None:
    with (
        client_from(edge, "127.0.0.1", headers=ADMIN) as lan,
        client_from(edge, "127.0.0.2", headers=ADMIN) as ops,
    ):
        for path in ("/admin/state", "/admin/keys", "/debug/status", "/metrics"):
            denied = lan.get(path)
            assert denied.status_code == 403, path
            assert denied.json()["error"]["code"] == "address_not_allowed"
            assert ops.get(path).status_code == 200, path
        assert lan.get("/v1/models").status_code == 200  # inference is not affected
        assert lan.post("/api/v1/models/load", json={"model": "x"}).status_code == 403


def test_default_admin_allowlist_is_loopback(target: ServerProcess) -> None:
    with client_from(target, "127.0.0.9", headers=ADMIN) as local:
        assert local.get("/admin/keys").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "127.0.0.2"},
        {"X-Forwarded-For": "127.0.0.2, 127.0.0.2"},
        {"Forwarded": "for=127.0.0.2"},
        {"Forwarded": 'for="[::ffff:127.0.0.2]"'},
        {"X-Real-IP": "127.0.0.2"},
        {"X-Forwarded-For": "::ffff:7f00:2"},
    ],
)
def test_spoofed_forwarding_from_an_untrusted_peer(
    edge: ServerProcess, headers: dict[str, str]
) -> None:
    with client_from(edge, "127.0.0.1", headers={**ADMIN, **headers}) as spoofer:
        assert spoofer.get("/admin/keys").status_code == 403


def test_trusted_proxy_forwarding(edge: ServerProcess) -> None:
    with client_from(edge, "127.0.0.3", headers=ADMIN) as proxy:
        assert proxy.get("/admin/keys", headers={"X-Forwarded-For": "127.0.0.2"}).status_code == 200
        mapped = proxy.get("/admin/keys", headers={"X-Forwarded-For": "::ffff:127.0.0.2"})
        assert mapped.status_code == 200
        # the client forged a hop on the left; the rightmost untrusted hop is the real one
        forged = proxy.get("/admin/keys", headers={"X-Forwarded-For": "127.0.0.2, 127.0.0.1"})
        assert forged.status_code == 403
        assert proxy.get("/admin/keys").status_code == 403  # the proxy itself is not an admin


def test_bad_keys_block_one_address_only(edge: ServerProcess) -> None:
    with client_from(edge, "127.0.0.4") as attacker, client_from(edge, "127.0.0.5") as bystander:
        for i in range(5):
            assert attacker.get("/v1/models", headers=bearer(f"guess-{i}")).status_code == 401
        blocked = attacker.get("/v1/models", headers=bearer(API_KEY))  # even the right key
        assert blocked.status_code == 429
        assert blocked.json()["error"]["code"] == "too_many_failed_attempts"
        assert 1 <= int(blocked.headers["retry-after"]) <= 2
        assert attacker.get("/health").status_code == 200
        assert bystander.get("/v1/models", headers=bearer(API_KEY)).status_code == 200
        time.sleep(2.1)
        assert attacker.get("/v1/models", headers=bearer(API_KEY)).status_code == 200


def test_missing_keys_are_not_counted_as_guesses(edge: ServerProcess) -> None:
    with client_from(edge, "127.0.0.6") as client:
        for _ in range(10):
            assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers=bearer(API_KEY)).status_code == 200


ORIGIN = "http://app.lan:3000"


def test_cors_preflight_and_reads(edge: ServerProcess) -> None:
    preflight = httpx.options(
        edge.url + "/v1/chat/completions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in preflight.headers
    ok = httpx.get(edge.url + "/v1/models", headers={"Origin": ORIGIN, **bearer(API_KEY)})
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in ok.headers["access-control-expose-headers"].lower()
    denied = httpx.get(edge.url + "/v1/models", headers={"Origin": ORIGIN})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ORIGIN


def test_cors_other_origins_get_nothing(edge: ServerProcess) -> None:
    evil = "http://evil.example"
    preflight = httpx.options(
        edge.url + "/v1/models", headers={"Origin": evil, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    resp = httpx.get(edge.url + "/v1/models", headers={"Origin": evil, **bearer(API_KEY)})
    assert "access-control-allow-origin" not in resp.headers


def test_cors_is_off_by_default(target: ServerProcess) -> None:
    resp = httpx.get(target.url + "/v1/models", headers={"Origin": ORIGIN, **bearer(API_KEY)})
    assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers
    preflight = httpx.options(
        target.url + "/v1/models",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers
