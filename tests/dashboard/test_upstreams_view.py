"""The Upstreams view: each upstream with its kind and state; drain and remove from there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.dashboard.helpers import shot, sign_in, view
from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def two(tmp_path: Path) -> Iterator[ServerProcess]:
    a = start_emulator(tmp_path, "--no-sdk", name="up-a")
    b = start_emulator(tmp_path, "--no-sdk", "--version", "0.3", name="up-b")
    gw = start_gateway(
        tmp_path, f"gpu={a.url}", "--upstream", f"mac={b.url}", env={"LMGATE_ADMIN_KEY": ADMIN_KEY}
    )
    try:
        yield gw
    finally:
        gw.stop()
        a.stop()
        b.stop()


def test_upstreams_are_shown_drained_and_removed(
    page: Any, two: ServerProcess, artifacts: Path
) -> None:
    sign_in(page, two.url)
    view(page, "upstreams")
    gpu = page.locator("#upstreams-table tr[data-upstream='gpu']")
    mac = page.locator("#upstreams-table tr[data-upstream='mac']")
    expect(gpu).to_contain_text("gpu (primary)")
    expect(gpu).to_contain_text("lmstudio-0.4+")
    expect(mac).to_contain_text("lmstudio-0.3")
    expect(mac).to_have_attribute("data-state", "up")
    shot(page, artifacts, "09-upstreams")
    mac.get_by_role("button", name="Drain").click()
    mac.get_by_role("button", name="Confirm drain").click()
    expect(page.locator(".toast.ok")).to_contain_text("Upstream mac is draining")
    expect(mac).to_have_attribute("data-state", "draining")
    mac.get_by_role("button", name="Resume").click()
    expect(mac).to_have_attribute("data-state", "up")
    mac.get_by_role("button", name="Remove").click()
    mac.get_by_role("button", name="Confirm remove").click()
    expect(mac).to_have_count(0)
    expect(gpu.get_by_role("button", name="Remove")).to_have_count(0)  # never the primary
    listed = httpx.get(two.url + "/admin/upstreams", headers=ADMIN, timeout=10).json()
    assert [u["name"] for u in listed["upstreams"]] == ["gpu"]
