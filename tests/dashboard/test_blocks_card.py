"""A bad-key block is shown on the keys page and lifted there."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import expect

from tests.dashboard.helpers import sign_in, view
from tests.security.tools import bearer, client_from
from tests.servers import API_KEY, ServerProcess

GUESSER = "127.0.0.77"  # not this machine's own address, so it can be blocked


def test_a_block_is_shown_and_lifted(
    page: Any, dash_gateway: ServerProcess, dash_admin: httpx.Client
) -> None:
    with client_from(dash_gateway, GUESSER) as guesser:
        for i in range(20):
            guesser.get("/v1/models", headers=bearer(f"guess-{i}"))
        assert guesser.get("/v1/models", headers=bearer(API_KEY)).status_code == 429
        sign_in(page, dash_gateway.url)  # from 127.0.0.1: never blocked
        view(page, "keys")
        row = page.locator(f"#blocks-table tr[data-address='{GUESSER}']")
        expect(row).to_contain_text("1")
        row.get_by_role("button", name="Lift").click()
        row.get_by_role("button", name="Confirm lift").click()
        expect(page.locator(".toast.ok")).to_contain_text(f"Block on {GUESSER} lifted")
        expect(page.locator("#blocks-none")).to_be_visible()
        assert guesser.get("/v1/models", headers=bearer(API_KEY)).status_code == 200
    assert dash_admin.get("/admin/blocks").json()["blocks"] == []
