"""Key attributes and profile policy through their surfaces: `lmgate keys create|update|list`,
`POST|PATCH /admin/keys`, `lmgate models profile`, `PUT|PATCH /admin/models/{key}/profile`;
bad values are a clear CLI error or an OpenAI-style 400."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, clean_env


def lmgate(*args: str, data: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    values = {"LMGATE_DATA_DIR": str(data)} if data is not None else {}
    return subprocess.run(
        [sys.executable, "-m", "lmgate", *args],
        env=clean_env(**values, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_create_update_and_list_carry_the_attributes(tmp_path: Path) -> None:
    made = lmgate(
        "keys", "create", "--name", "ops", "--scope", "admin", "--weight", "2",
        "--priority", "1", "--loads", "deny", "--max-loads-per-hour", "3", data=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("lmg_")
    assert "weight 2, priority 1, loads deny (at most 3/h)" in made.stderr
    plain = lmgate("keys", "create", "--name", "plain", data=tmp_path)
    assert "loads allow (default)" in plain.stderr
    listed = orjson.loads(lmgate("keys", "list", "--json", data=tmp_path).stdout)
    ops = next(k for k in listed if k["name"] == "ops")
    assert (ops["weight"], ops["priority"], ops["loads"], ops["maxLoadsPerHour"]) == (
        2.0,
        1,
        "deny",
        3,
    )
    # the default as the setting says, for a key that never chose
    denied = lmgate("keys", "list", "--json", data=tmp_path, LMGATE_KEY_LOADS_DEFAULT="deny")
    plain_row = next(k for k in orjson.loads(denied.stdout) if k["name"] == "plain")
    assert plain_row["loads"] == "deny" and plain_row["loadsDefault"] is True

    updated = lmgate(
        "keys", "update", "plain", "--weight", "0.5", "--priority", "-2", "--loads", "allow",
        "--max-loads-per-hour", "5", "--tools", "allow", data=tmp_path,
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert "weight 0.5, priority -2, loads allow (at most 5/h)" in updated.stderr
    assert "tools allow" in updated.stderr
    cleared = lmgate(
        "keys", "update", "plain", "--loads", "default", "--max-loads-per-hour", "none",
        data=tmp_path,
    )  # fmt: skip
    assert "loads allow (default)" in cleared.stderr and "/h" not in cleared.stderr
    table = lmgate("keys", "list", data=tmp_path).stdout
    for header in ("weight", "prio.", "loads", "loads/h"):
        assert header in table


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("create", "--name", "x", "--priority", "1"), "only admin keys"),
        (("create", "--name", "x", "--weight", "0"), "weight"),
        (("create", "--name", "x", "--weight", "nan"), "weight"),
        (("create", "--name", "x", "--loads", "sometimes"), "loads must be"),
        (("create", "--name", "x", "--max-loads-per-hour", "0"), "max loads per hour"),
        (("update", "nobody", "--weight", "2"), "no key"),
        (("update", "base"), "nothing to change"),
        (("update", "base", "--max-loads-per-hour", "lots"), "whole number, or none"),
    ],
)
def test_bad_values_are_one_line_cli_errors(
    tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    assert lmgate("keys", "create", "--name", "base", data=tmp_path).returncode == 0
    out = lmgate("keys", *args, data=tmp_path)
    assert out.returncode != 0
    assert words in out.stderr and "Traceback" not in out.stderr, out.stderr


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["message"] and error["type"] and error["code"]
    return error


@pytest.mark.parametrize(
    "body",
    [
        {"weight": 0},
        {"weight": -1},
        {"weight": 1001},
        {"weight": "heavy"},
        {"priority": 1},
        {"priority": 1.5},
        {"priority": -1000},
        {"loads": "sometimes"},
        {"maxLoadsPerHour": 0},
        {"maxLoadsPerHour": 10**9},
        {"scope": "metrics", "weight": 2},
        {"scope": "metrics", "loads": "allow"},
    ],
)
def test_bad_key_attributes_are_400(admin: httpx.Client, body: dict[str, Any]) -> None:
    error = _error(admin.post("/admin/keys", json={"name": "bad-attrs", **body}), 400)
    assert error["type"] == "invalid_request_error"
    assert admin.get("/admin/keys/bad-attrs").status_code == 404


def test_patch_changes_only_what_is_sent(admin: httpx.Client) -> None:
    made = admin.post("/admin/keys", json={"name": "patched", "weight": 2, "maxLoadsPerHour": 4})
    assert made.status_code == 201, made.text
    key_id = made.json()["id"]
    resp = admin.patch(f"/admin/keys/{key_id}", json={"priority": -1})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["weight"], body["priority"], body["maxLoadsPerHour"]) == (2.0, -1, 4)
    body = admin.patch("/admin/keys/patched", json={"maxLoadsPerHour": None}).json()
    assert body["maxLoadsPerHour"] is None and body["weight"] == 2.0
    assert _error(admin.patch("/admin/keys/patched", json={"priority": 3}), 400)
    assert _error(admin.patch("/admin/keys/patched", json={"weight": None}), 400)
    assert _error(admin.patch("/admin/keys/patched", json={}), 400)
    assert _error(admin.patch("/admin/keys/patched", json={"name": "renamed"}), 400)
    assert _error(admin.patch("/admin/keys/nobody", json={"weight": 1}), 404)
    assert admin.delete("/admin/keys/patched").status_code == 200
    assert _error(admin.patch("/admin/keys/patched", json={"weight": 1}), 400)


def test_patch_needs_admin_and_json(gateway: ServerProcess, user: httpx.Client) -> None:
    assert user.patch("/admin/keys/whatever", json={"weight": 2}).status_code == 403
    resp = httpx.patch(
        gateway.url + "/admin/keys/whatever",
        content=b"weight=2",
        headers={
            "Authorization": f"Bearer {ADMIN_KEY}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert resp.status_code == 415


def test_profile_policy_through_the_api_and_the_cli(
    gateway: ServerProcess, admin: httpx.Client
) -> None:
    model = "google/gemma-3-1b"
    for bad in ({"slots": 0}, {"slots": 2.5}, {"ttl": -1}, {"ttl": "soon"}, {"pinned": "x"}):
        _error(admin.patch(f"/admin/models/{model}/profile", json=bad), 400)
    env = {"LMGATE_URL": gateway.url, "LMGATE_ADMIN_KEY": ADMIN_KEY}
    out = lmgate(
        "models", "profile", "policy", model, "--slots", "2", "--ttl", "10m", "--pinned", **env
    )
    assert out.returncode == 0, out.stderr
    assert "slots 2, ttl 600" in out.stdout and "pinned yes" in out.stdout
    stored = admin.get(f"/admin/models/{model}/profile").json()
    assert (stored["slots"], stored["ttl"], stored["pinned"]) == (2, 600.0, True)
    listed = next(m for m in admin.get("/admin/models").json()["models"] if m["key"] == model)
    assert listed["profile"]["slots"] == 2
    out = lmgate("models", "profile", "policy", model, "--ttl", "0", "--no-pinned", "--json", **env)
    shown = orjson.loads(out.stdout)
    assert (shown["slots"], shown["ttl"], shown["pinned"]) == (2, 0.0, False)
    out = lmgate("models", "profile", "policy", model, "--slots", "none", **env)
    assert "slots -" in out.stdout
    bad = lmgate("models", "profile", "policy", model, "--ttl", "later", **env)
    assert bad.returncode != 0 and "duration" in bad.stderr
    assert admin.delete(f"/admin/models/{model}/profile").status_code == 200
