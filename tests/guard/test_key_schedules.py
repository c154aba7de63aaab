"""Key schedules against a real gateway: allowed hours and days in a time zone (403 outside,
saying when the key opens again) and a daily token budget (429 until local midnight), set by
the CLI and the admin API, changed in place, listed, and shared by every worker."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.server_fixtures import emulator_fixture, gateway_fixture
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, start_gateway

CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Hi"}]}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


emulator = emulator_fixture("--token-delay", "0", name="sched-emu")
gateway = gateway_fixture("emulator", env={"LMGATE_ADMIN_KEY": ADMIN_KEY})


def window(start_in: timedelta, length: timedelta) -> str:
    """An HH:MM-HH:MM window (UTC) starting `start_in` from now."""
    start = datetime.now(UTC) + start_in
    end = start + length
    return f"{start:%H:%M}-{end:%H:%M}"


def create(admin: httpx.Client, **body: Any) -> str:
    made = admin.post("/admin/keys", json=body)
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


def chat(gw: ServerProcess, key: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_outside_its_hours_a_key_is_refused_and_told_when_it_opens(
    gateway: ServerProcess,
) -> None:
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        later = create(
            admin,
            name="evening",
            hours=window(timedelta(hours=2), timedelta(hours=1)),
            timeZone="UTC",
        )
        now_open = create(
            admin,
            name="daytime",
            hours=window(timedelta(minutes=-30), timedelta(hours=2)),
            timeZone="UTC",
        )
        today = DAYS[datetime.now(UTC).weekday()]
        other_days = ",".join(d for d in DAYS if d != today)
        weekend = create(admin, name="not-today", days=other_days, timeZone="UTC")

        refused = chat(gateway, later)
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == "outside_allowed_hours"
        assert "opens again" in error["message"] and "UTC" in error["message"]
        assert 3600 <= int(refused.headers["retry-after"]) <= 2 * 3600 + 120
        # refused everywhere, not only on inference: the model list too
        listed = httpx.get(
            gateway.url + "/v1/models", headers={"Authorization": f"Bearer {later}"}, timeout=30
        )
        assert listed.status_code == 403

        assert chat(gateway, now_open).status_code == 200
        assert chat(gateway, weekend).status_code == 403

        # changed in place, applied from the next request on
        patched = admin.patch("/admin/keys/evening", json={"hours": None})
        assert patched.status_code == 200 and patched.json()["schedule"] is None
        assert chat(gateway, later).status_code == 200
        admin.patch("/admin/keys/daytime", json={"days": other_days, "timeZone": "UTC"})
        assert chat(gateway, now_open).status_code == 403

        listed_keys = {k["name"]: k for k in admin.get("/admin/keys").json()["keys"]}
        assert listed_keys["not-today"]["days"] == other_days
        assert listed_keys["not-today"]["schedule"].startswith("00:00-24:00")


def test_bad_schedules_are_clear_400s(gateway: ServerProcess) -> None:
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        for body, words in (
            ({"hours": "7-21"}, "HH:MM"),
            ({"hours": "25:00-26:00"}, "00:00 to 24:00"),
            ({"days": "weekdays"}, "mon-fri"),
            ({"timeZone": "Mars/Olympus"}, "IANA"),
            ({"dailyTokens": 0}, "dailyTokens"),
        ):
            answer = admin.post("/admin/keys", json={"name": "bad", **body})
            assert answer.status_code == 400, body
            assert words in answer.json()["error"]["message"], answer.text
        metrics = admin.post(
            "/admin/keys", json={"name": "scraper", "scope": "metrics", "dailyTokens": 10}
        )
        assert metrics.status_code == 400


def test_a_daily_budget_is_spent_then_refused_until_midnight(gateway: ServerProcess) -> None:
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        first = chat(gateway, create(admin, name="probe"))
        per_request = first.json()["usage"]["total_tokens"]
        assert per_request > 0
        budget = per_request * 3 - 1  # the third request is admitted, the fourth is not
        key = create(admin, name="homework", dailyTokens=budget, timeZone="Europe/Berlin")
        other = create(admin, name="sibling", dailyTokens=budget)
    statuses = [chat(gateway, key).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = chat(gateway, key)
    error = refused.json()["error"]
    assert error["code"] == "daily_tokens_exceeded"
    assert f"daily budget of {budget} tokens" in error["message"]
    assert "opens again" in error["message"]
    berlin_midnight = (datetime.now(UTC) + timedelta(hours=1)).replace(
        hour=0, minute=0, second=0
    ) + timedelta(days=1)
    wait = int(refused.headers["retry-after"])
    assert 0 < wait <= 25 * 3600
    assert abs(datetime.now(UTC) + timedelta(seconds=wait) - berlin_midnight) < timedelta(hours=2)
    assert chat(gateway, other).status_code == 200  # another key's budget is its own


def test_the_cli_sets_shows_and_clears_a_schedule(gateway: ServerProcess, tmp_path: Path) -> None:
    def lmgate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lmgate", "keys", *args],
            env=gateway.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = lmgate(
        "create", "--name", "classroom", "--hours", "07:00-21:00", "--days", "mon-fri",
        "--tz", "Europe/Berlin", "--daily-tokens", "50000",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    shown = orjson.loads(lmgate("show", "classroom", "--json").stdout)
    assert shown["hours"] == "07:00-21:00" and shown["timeZone"] == "Europe/Berlin"
    assert shown["schedule"] == (
        "07:00-21:00 mon,tue,wed,thu,fri (Europe/Berlin); 50000 tokens a day"
    )
    table = lmgate("list").stdout
    assert "07:00-21:00" in table
    bad = lmgate("update", "classroom", "--tz", "Nowhere/Land")
    assert bad.returncode == 1 and "IANA" in bad.stderr
    cleared = lmgate("update", "classroom", "--hours", "none", "--days", "none", "--json")
    assert cleared.returncode == 0, cleared.stderr
    after = orjson.loads(cleared.stdout)
    assert after["hours"] is None and after["days"] is None and after["dailyTokens"] == 50000


def test_every_worker_spends_the_same_budget(tmp_path: Path, emulator: ServerProcess) -> None:
    server = start_gateway(
        tmp_path, emulator.url, "--workers", "2", env={"LMGATE_ADMIN_KEY": ADMIN_KEY}
    )
    try:
        with httpx.Client(base_url=server.url, headers=admin_headers(), timeout=30) as admin:
            per_request = chat(server, create(admin, name="probe")).json()["usage"]["total_tokens"]
            key = create(admin, name="shared", dailyTokens=per_request * 4)
        statuses = []
        for _ in range(12):  # new connections: uvicorn's workers take turns at accepting
            statuses.append(chat(server, key).status_code)
        assert statuses.count(200) == 4 and statuses[4:] == [429] * 8
    finally:
        server.stop()
