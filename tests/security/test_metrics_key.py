"""A Prometheus server elsewhere on the LAN scrapes `/metrics` with a metrics key, against a real
gateway: the key reaches that and nothing else, the metrics allowlist (not the admin one)
decides where it may come from, and neither settings nor managed metrics keys reach the log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import OPERATOR, PROMETHEUS, PROXY, STRANGER
from tests.security.tools import bearer, client_from, lmgate_cli
from tests.servers import ADMIN_KEY, API_KEY, METRICS_KEY, ServerProcess

REFUSED = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/chat/completions"),
    ("GET", "/v1/models"),
    ("POST", "/v1/embeddings"),
    ("GET", "/api/v0/models"),
    ("GET", "/api/v1/models"),
    ("POST", "/api/v1/models/load"),
    ("POST", "/api/v1/models/unload"),
    ("GET", "/admin/state"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("GET", "/admin/usage"),
    ("POST", "/admin/models/load"),
    ("GET", "/debug/metrics"),
    ("GET", "/debug/stream"),
    ("GET", "/debug/status"),
    ("GET", "/debug/requests"),
    ("POST", "/metrics"),
    ("DELETE", "/metrics"),
]


def _get(server: ServerProcess, source: str, path: str, **headers: str) -> httpx.Response:
    with client_from(server, source) as client:
        return client.get(path, headers=headers)


def _metrics(server: ServerProcess, source: str, key: str | None, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return _get(server, source, "/metrics", **auth, **headers)


def _error(resp: httpx.Response, status: int = 403) -> dict[str, Any]:
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.text)
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    return error


def _is_prometheus(resp: httpx.Response) -> bool:
    return (
        resp.status_code == 200
        and resp.headers["content-type"].startswith("text/plain")
        and "# TYPE lmgate_requests_total counter" in resp.text
    )


def test_prometheus_scrapes_with_a_metrics_key(scrape: ServerProcess) -> None:
    assert _is_prometheus(_metrics(scrape, PROMETHEUS, METRICS_KEY))
    with client_from(scrape, PROMETHEUS, headers={"x-api-key": METRICS_KEY}) as client:
        assert _is_prometheus(client.get("/metrics"))
        assert client.get("/ready").status_code == 200


@pytest.mark.parametrize("source", [PROMETHEUS, OPERATOR])
def test_a_metrics_key_reaches_nothing_else(
    scrape: ServerProcess, upstream: httpx.Client, source: str
) -> None:
    with client_from(scrape, source, headers=bearer(METRICS_KEY)) as client:
        for method, path in REFUSED:
            body = {"model": "qwen/qwen3-4b", "messages": []} if method == "POST" else None
            error = _error(client.request(method, path, json=body))
            assert error["type"] == "permission_error", (method, path)
    # The gateway's own model polling reaches the upstream meanwhile; nothing of the client's
    # may (the client's requests would carry its User-Agent, lmgate's own calls send none).
    seen = upstream.get("/__emulator/requests").json()
    seen = seen["requests"] if isinstance(seen, dict) else seen
    assert [r for r in seen if "user-agent" in {k.lower() for k in r["headers"]}] == []


def test_the_metrics_allowlist_decides_for_metrics_keys(scrape: ServerProcess) -> None:
    # an address in neither allowlist is refused before any key is looked at
    for key in (None, "not-a-key", METRICS_KEY, ADMIN_KEY):
        assert _error(_metrics(scrape, STRANGER, key))["code"] == "address_not_allowed"
    # the operator's machine may reach admin routes, but is not where Prometheus scrapes from
    error = _error(_metrics(scrape, OPERATOR, METRICS_KEY))
    assert error["code"] == "address_not_allowed" and "LMGATE_METRICS_ALLOW" in error["message"]
    # through a trusted proxy, the forwarded client counts, and only its rightmost untrusted hop
    assert _is_prometheus(_metrics(scrape, PROXY, METRICS_KEY, **{"X-Forwarded-For": "10.20.3.4"}))
    spoofed = _metrics(scrape, PROXY, METRICS_KEY, **{"X-Forwarded-For": "10.20.3.4, 6.6.6.6"})
    assert _error(spoofed)["code"] == "address_not_allowed"
    assert _error(_metrics(scrape, PROXY, METRICS_KEY))["code"] == "address_not_allowed"
    # X-Forwarded-For from an untrusted peer is ignored
    untrusted = _metrics(scrape, STRANGER, METRICS_KEY, **{"X-Forwarded-For": "10.20.3.4"})
    assert _error(untrusted)["code"] == "address_not_allowed"


def test_admin_keys_stay_under_the_admin_allowlist(scrape: ServerProcess) -> None:
    assert _is_prometheus(_metrics(scrape, OPERATOR, ADMIN_KEY))
    error = _error(_metrics(scrape, PROMETHEUS, ADMIN_KEY))
    assert error["code"] == "address_not_allowed" and "LMGATE_ADMIN_ALLOW" in error["message"]
    with client_from(scrape, PROMETHEUS) as client:
        resp = client.get("/admin/state", headers=bearer(ADMIN_KEY))
        assert _error(resp)["code"] == "address_not_allowed"


def test_inference_keys_cannot_scrape(scrape: ServerProcess) -> None:
    for source in (PROMETHEUS, OPERATOR):
        error = _error(_metrics(scrape, source, API_KEY))
        assert error["code"] == "forbidden" and error["type"] == "permission_error"


def test_managed_metrics_keys(scrape: ServerProcess, tmp_root: Path) -> None:
    made = lmgate_cli(
        "keys", "create", "--name", "prom-cli", "--scope", "metrics", data_dir=tmp_root / "scrape"
    )
    assert made.returncode == 0, made.stderr
    cli_key = made.stdout.strip()
    assert "scope metrics" in made.stderr and cli_key not in made.stderr
    refused = lmgate_cli(
        "keys", "create", "--name", "prom-x", "--scope", "metrics", "--rpm", "5",
        data_dir=tmp_root / "scrape",
    )  # fmt: skip
    assert refused.returncode == 1 and "no models or limits" in refused.stderr

    with client_from(scrape, OPERATOR, headers=bearer(ADMIN_KEY)) as admin:
        resp = admin.post("/admin/keys", json={"name": "prom-api", "scope": "metrics"})
        assert resp.status_code == 201 and resp.json()["scope"] == "metrics"
        api_key = resp.json()["key"]
        bad = admin.post("/admin/keys", json={"name": "p2", "scope": "metrics", "models": ["q*"]})
        assert _error(bad, 400)["code"] == "invalid_value"
        listed = {k["name"]: k["scope"] for k in admin.get("/admin/keys").json()["keys"]}
        assert listed["prom-cli"] == listed["prom-api"] == "metrics"

    for key in (cli_key, api_key):
        assert _is_prometheus(_metrics(scrape, PROMETHEUS, key))
        with client_from(scrape, PROMETHEUS, headers=bearer(key)) as client:
            assert _error(client.get("/v1/models"))["code"] == "forbidden"
            assert _error(client.get("/debug/metrics"))["code"] == "address_not_allowed"
        with client_from(scrape, OPERATOR, headers=bearer(key)) as client:
            assert _error(client.get("/debug/metrics"))["code"] == "forbidden"
            assert _error(client.get("/admin/keys"))["code"] == "forbidden"

    with client_from(scrape, OPERATOR, headers=bearer(ADMIN_KEY)) as admin:
        assert admin.delete("/admin/keys/prom-api").status_code == 200
    assert _error(_metrics(scrape, PROMETHEUS, api_key), 401)["code"] == "revoked_api_key"

    logs = scrape.logs()
    assert '"access_denied"' in logs
    for secret in (METRICS_KEY, cli_key, api_key, cli_key[4:20], api_key[4:20], ADMIN_KEY):
        assert secret not in logs
    assert "lmg_" not in logs
