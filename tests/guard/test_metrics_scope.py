"""The metrics scope in process, with chosen client addresses: what a metrics key reaches, which
allowlist `/metrics` answers to for which key, and what a metrics key alone does to auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from lmgate.app import create_app
from lmgate.cli.serve import check_exposure, keys_required
from lmgate.guard.keys import Principal
from lmgate.guard.paths import Scope
from lmgate.settings import Settings
from tests.servers import ADMIN_KEY, API_KEY, METRICS_KEY, ServerProcess

LAN = "192.168.1.50"  # a Prometheus server elsewhere on the LAN
FORBIDDEN_TO_METRICS = [
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/models"),
    ("GET", "/api/v0/models"),
    ("GET", "/admin/state"),
    ("GET", "/admin/keys"),
    ("GET", "/debug/metrics"),
    ("GET", "/debug/stream"),
    ("GET", "/debug/status"),
    ("POST", "/api/v1/models/load"),
    ("POST", "/admin/models/load"),
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Gate:
    """One in-process gateway; `call` sends a request from a chosen client address."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.gw = self.app.gateway

    async def call(
        self, method: str, path: str, *, key: str | None = None, client: str = "127.0.0.1"
    ) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app, client=(client, 5000))
        body: Any = {} if method == "POST" else None
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return await http.request(
                method, path, headers=bearer(key) if key else {}, json=body, timeout=10
            )


@pytest.fixture
async def make(tmp_path: Path, emulator: ServerProcess) -> AsyncIterator[Any]:
    started: list[Gate] = []

    async def build(**values: Any) -> Gate:
        settings = Settings(
            data_dir=tmp_path / f"data-{len(started)}", upstream=emulator.url, **values
        )
        gate = Gate(settings)
        await gate.gw.start()
        started.append(gate)
        return gate

    yield build
    for gate in started:
        await gate.gw.stop()


def _keys(**more: Any) -> dict[str, Any]:
    return {"admin_key": ADMIN_KEY, "api_keys": [API_KEY], "metrics_key": METRICS_KEY, **more}


def _error(resp: httpx.Response, status: int = 403) -> dict[str, Any]:
    assert resp.status_code == status, (resp.request.url, resp.text)
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    return error


def test_grants() -> None:
    metrics = Principal("k", "prom", Scope.METRICS)
    assert metrics.may(Scope.METRICS) and metrics.may(Scope.SERVICE) and metrics.may(Scope.PUBLIC)
    assert not metrics.may(Scope.INFERENCE) and not metrics.may(Scope.ADMIN)
    admin = Principal("k", "root", Scope.ADMIN)
    assert all(admin.may(s) for s in Scope)
    user = Principal("k", "alice", Scope.INFERENCE)
    assert not user.may(Scope.METRICS) and not user.may(Scope.ADMIN)
    assert user.may(Scope.INFERENCE) and user.may(Scope.SERVICE)


async def test_a_metrics_key_scrapes_from_the_lan(make: Any) -> None:
    gate = await make(**_keys())
    resp = await gate.call("GET", "/metrics", key=METRICS_KEY, client=LAN)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "# TYPE lmgate_requests_total counter" in resp.text
    assert (await gate.call("HEAD", "/metrics", key=METRICS_KEY, client=LAN)).status_code == 403
    for path in ("/health", "/ready"):
        assert (await gate.call("GET", path, key=METRICS_KEY, client=LAN)).status_code == 200


@pytest.mark.parametrize("client", ["127.0.0.1", LAN])
async def test_a_metrics_key_reaches_nothing_else(make: Any, client: str) -> None:
    gate = await make(**_keys())
    for method, path in FORBIDDEN_TO_METRICS:
        error = _error(await gate.call(method, path, key=METRICS_KEY, client=client))
        assert error["type"] == "permission_error", (method, path)
    for method in ("POST", "PUT", "DELETE"):
        error = _error(await gate.call(method, "/metrics", key=METRICS_KEY, client=client))
        assert error["code"] == "forbidden"
    assert not [e for e in gate.gw.bus.recent(1000) if e.type == "inference_start"]


async def test_protected_health_and_ready_take_a_metrics_key(make: Any) -> None:
    gate = await make(**_keys(require_auth_for_health=True))
    assert (await gate.call("GET", "/health", client=LAN)).status_code == 401
    assert (await gate.call("GET", "/health", key=METRICS_KEY, client=LAN)).status_code == 200
    assert (await gate.call("GET", "/ready", key=API_KEY, client=LAN)).status_code == 200


async def test_admin_keys_stay_under_the_admin_allowlist(make: Any) -> None:
    gate = await make(**_keys())
    assert (await gate.call("GET", "/metrics", key=ADMIN_KEY)).status_code == 200
    error = _error(await gate.call("GET", "/metrics", key=ADMIN_KEY, client=LAN))
    assert error["code"] == "address_not_allowed" and "LMGATE_ADMIN_ALLOW" in error["message"]
    error = _error(await gate.call("GET", "/metrics", key=API_KEY))
    assert error["code"] == "forbidden" and "metrics or admin scope" in error["message"]


async def test_the_metrics_allowlist_decides_for_metrics_keys(make: Any) -> None:
    gate = await make(**_keys(allow=["192.168.0.0/16"], metrics_allow=["10.0.0.0/8"]))
    ok = await gate.call("GET", "/metrics", key=METRICS_KEY, client="10.2.3.4")
    assert ok.status_code == 200
    # --allow does not open /metrics once the metrics allowlist is set
    error = _error(await gate.call("GET", "/metrics", key=METRICS_KEY, client=LAN))
    assert error["code"] == "address_not_allowed" and "LMGATE_METRICS_ALLOW" in error["message"]
    # an address in neither list learns nothing about keys: 403 before 401
    for key in (None, "wrong-key", METRICS_KEY):
        error = _error(await gate.call("GET", "/metrics", key=key, client="172.16.0.9"))
        assert error["code"] == "address_not_allowed"
    # loopback is admin-allowed, not metrics-allowed: the admin key works, the metrics key not
    assert (await gate.call("GET", "/metrics", key=ADMIN_KEY)).status_code == 200
    error = _error(await gate.call("GET", "/metrics", key=METRICS_KEY))
    assert error["code"] == "address_not_allowed"
    # the metrics allowlist opens /metrics only: the inference allowlist still holds elsewhere
    error = _error(await gate.call("GET", "/ready", key=METRICS_KEY, client="10.2.3.4"))
    assert error["code"] == "address_not_allowed"


async def test_the_metrics_allowlist_defaults_to_the_inference_one(make: Any) -> None:
    gate = await make(**_keys(allow=["192.168.0.0/16"]))
    assert (await gate.call("GET", "/metrics", key=METRICS_KEY, client=LAN)).status_code == 200
    error = _error(await gate.call("GET", "/metrics", key=METRICS_KEY, client="10.2.3.4"))
    assert error["code"] == "address_not_allowed"


async def test_without_keys_metrics_stay_behind_the_admin_allowlist(make: Any) -> None:
    gate = await make()
    assert (await gate.call("GET", "/metrics")).status_code == 200
    error = _error(await gate.call("GET", "/metrics", client=LAN))
    assert error["code"] == "address_not_allowed"


async def test_a_metrics_key_alone_closes_inference(make: Any) -> None:
    gate = await make(metrics_key=METRICS_KEY)
    assert gate.gw.security.keys.required
    assert _error(await gate.call("GET", "/v1/models"), 401)["code"] == "missing_api_key"
    assert _error(await gate.call("GET", "/v1/models", key=METRICS_KEY))["code"] == "forbidden"
    assert _error(await gate.call("GET", "/admin/state"), 401)["code"] == "missing_api_key"
    assert (await gate.call("GET", "/metrics", key=METRICS_KEY, client=LAN)).status_code == 200


def test_a_metrics_key_alone_counts_as_auth_for_a_network_listener(tmp_path: Path) -> None:
    open_lan = Settings(data_dir=tmp_path, host="0.0.0.0")
    assert not keys_required(open_lan) and check_exposure(open_lan) is not None
    scraped = Settings(data_dir=tmp_path, host="0.0.0.0", metrics_key=METRICS_KEY)
    assert scraped.auth_enabled and keys_required(scraped)
    assert check_exposure(scraped) is None


async def test_denials_carry_no_key(make: Any) -> None:
    gate = await make(**_keys(metrics_allow=["10.0.0.0/8"]))
    await gate.call("GET", "/v1/models", key=METRICS_KEY, client="10.1.1.1")
    await gate.call("GET", "/admin/state", key=METRICS_KEY)
    await gate.call("GET", "/metrics", key=METRICS_KEY, client=LAN)
    await gate.call("GET", "/metrics", key=METRICS_KEY)
    denied = [e.as_json() for e in gate.gw.bus.recent(1000) if e.type == "auth_denied"]
    assert len(denied) == 4
    assert {e["reason"] for e in denied} == {"forbidden", "address_not_allowed"}
    assert METRICS_KEY not in orjson.dumps(denied).decode()
