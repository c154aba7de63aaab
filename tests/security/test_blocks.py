"""Bad-key blocks: never this machine's loopback by default, visible, and liftable by an admin.

The gateway blocks after 3 bad keys for 120 s (long enough that only lifting ends a block in
these tests). Sources in 127.0.0.0/8 other than 127.0.0.1 play other machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.security.tools import bearer, client_from
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, start_gateway

ADMIN = bearer(ADMIN_KEY)
ENV = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": API_KEY,
    "LMGATE_AUTH_FAIL_LIMIT": "3",
    "LMGATE_AUTH_BLOCK_SECONDS": "120",
}


@pytest.fixture(scope="module")
def damped(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    server = start_gateway(tmp_root, emulator.url, env=ENV, data_dir=tmp_root / "damped")
    yield server
    server.stop()


def _guess(client: httpx.Client, times: int) -> None:
    for i in range(times):
        status = client.get("/v1/models", headers=bearer(f"wrong-{i}")).status_code
        assert status in (401, 429)


Completed = subprocess.CompletedProcess[str]


def _cli(server: ServerProcess, *args: str, key: str | None = ADMIN_KEY) -> Completed:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env["LMGATE_URL"] = server.url
    if key is not None:
        env["LMGATE_ADMIN_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "lmgate", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_loopback_is_never_locked_out_by_default(damped: ServerProcess) -> None:
    """A local script hammering with a stale key: the operator's admin key, the dashboard and
    valid inference keys from the same address keep working; memory stays flat."""
    assert damped.proc is not None
    rss = psutil.Process(damped.proc.pid).memory_info().rss
    started = time.monotonic()
    with client_from(damped, "127.0.0.1") as local:
        _guess(local, 300)
        assert local.get("/admin/state", headers=ADMIN).status_code == 200
        assert local.get("/v1/models", headers=bearer(API_KEY)).status_code == 200
        assert local.get("/dashboard", headers=ADMIN).status_code in (200, 307, 308)
        assert local.get("/admin/blocks", headers=ADMIN).json()["blocks"] == []
    assert time.monotonic() - started < 60
    assert psutil.Process(damped.proc.pid).memory_info().rss - rss < 30 * 2**20


def test_a_block_is_visible_and_an_admin_lifts_it(damped: ServerProcess) -> None:
    with (
        client_from(damped, "127.0.0.41") as guesser,
        client_from(damped, "127.0.0.1", headers=ADMIN) as ops,
    ):
        _guess(guesser, 3)
        refused = guesser.get("/v1/models", headers=bearer(API_KEY))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_failed_attempts"

        listed = ops.get("/admin/blocks").json()["blocks"]
        assert [b["address"] for b in listed] == ["127.0.0.41"]
        assert 60 < listed[0]["retryAfter"] <= 120 and listed[0]["offences"] == 1
        status = ops.get("/debug/status").json()
        assert [b["address"] for b in status["blocks"]] == ["127.0.0.41"]
        events = ops.get("/debug/metrics").json()["recentActivity"]
        blocked = [e for e in events if e["type"] == "address_blocked"]
        assert blocked and blocked[-1]["address"] == "127.0.0.41", events

        lifted = ops.delete("/admin/blocks/127.0.0.41")
        assert lifted.status_code == 200 and lifted.json()["lifted"] == ["127.0.0.41"]
        assert lifted.json()["blocks"] == []
        assert guesser.get("/v1/models", headers=bearer(API_KEY)).status_code == 200

        again = ops.delete("/admin/blocks/127.0.0.41")
        assert again.status_code == 404 and again.json()["error"]["code"] == "block_not_found"
        bad = ops.delete("/admin/blocks/not-an-address")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_address"
        events = ops.get("/debug/metrics").json()["recentActivity"]
        assert any(e["type"] == "address_unblocked" for e in events)


def test_lifting_blocks_needs_the_admin_scope(damped: ServerProcess) -> None:
    with client_from(damped, "127.0.0.1") as local:
        assert local.get("/admin/blocks").status_code == 401
        assert local.delete("/admin/blocks", headers=bearer(API_KEY)).status_code == 403


def test_cli_lists_and_clears_blocks(damped: ServerProcess) -> None:
    with client_from(damped, "127.0.0.42") as one, client_from(damped, "127.0.0.43") as two:
        _guess(one, 3)
        _guess(two, 3)
    listed = _cli(damped, "blocks", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"127.0.0.42", "127.0.0.43"} <= {b["address"] for b in _json(listed)["blocks"]}
    table = _cli(damped, "blocks", "list")
    assert table.returncode == 0 and "127.0.0.42" in table.stdout

    one_cleared = _cli(damped, "blocks", "clear", "127.0.0.42")
    assert one_cleared.returncode == 0 and "127.0.0.42" in one_cleared.stdout
    rest = _cli(damped, "blocks", "clear")
    assert rest.returncode == 0 and "127.0.0.43" in rest.stdout
    assert _json(_cli(damped, "blocks", "list", "--json"))["blocks"] == []


def test_cli_without_a_key_names_the_fix(damped: ServerProcess) -> None:
    out = _cli(damped, "blocks", "list", key=None)
    assert out.returncode == 1
    assert "LMGATE_ADMIN_KEY" in out.stderr and "--admin-key" in out.stderr
    assert "Traceback" not in out.stderr


def test_exemption_is_configurable(tmp_root: Path, emulator: ServerProcess) -> None:
    env = {**ENV, "LMGATE_AUTH_FAIL_EXEMPT": ""}
    server = start_gateway(tmp_root, emulator.url, env=env, data_dir=tmp_root / "no-exempt")
    try:
        with client_from(server, "127.0.0.1") as local:
            _guess(local, 3)
            assert local.get("/admin/state", headers=ADMIN).status_code == 429
    finally:
        server.stop()


def _json(out: Completed) -> dict[str, object]:
    data: dict[str, object] = json.loads(out.stdout)
    return data
