"""`lmgate keys list` names the device each paired key belongs to, in the table and in
`--json`, as `GET /admin/keys` does; keys made otherwise show none; revoked ones keep theirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from tests.servers import ADMIN_KEY, admin_headers, start_emulator, start_gateway


def lmgate(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "lmgate", *args],
        env={**env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_keys_list_shows_paired_devices(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path)
    gw = start_gateway(tmp_path, emulator.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY})
    try:
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=30) as admin:
            made = admin.post("/admin/pairing", json={"name": "Kitchen tablet ✓"}).json()
            with httpx.Client(base_url=gw.url, timeout=30) as phone:
                assert phone.post(f"/pair/{made['code']}").status_code == 200
            assert admin.post("/admin/keys", json={"name": "script"}).status_code == 201
            api = {k["name"]: k for k in admin.get("/admin/keys").json()["keys"]}
        env = gw.env
        listed = {k["name"]: k for k in orjson.loads(lmgate(env, "keys", "list", "--json"))}
        assert listed["Kitchen-tablet"]["device"] == "Kitchen tablet ✓"
        assert listed["script"]["device"] is None
        assert api["Kitchen-tablet"]["device"] == listed["Kitchen-tablet"]["device"]

        table = lmgate(env, "keys", "list")
        header = next(line for line in table.splitlines() if " device " in f" {line} ")
        assert "name" in header and "id" in header
        row = next(line for line in table.splitlines() if "Kitchen-tablet" in line)
        assert "Kitchen tablet ✓" in row
        other = next(line for line in table.splitlines() if " script " in line)
        assert "Kitchen" not in other

        lmgate(env, "keys", "revoke", "Kitchen-tablet")
        revoked = {
            k["name"]: k for k in orjson.loads(lmgate(env, "keys", "list", "--all", "--json"))
        }
        assert revoked["Kitchen-tablet"]["device"] == "Kitchen tablet ✓"
        assert "Kitchen-tablet" not in lmgate(env, "keys", "list")
    finally:
        gw.stop()
        emulator.stop()
