"""The Keys and Live tables at phone and desktop width: every column, the status, the latency
and the row actions included, is on screen without sideways scrolling (rows become labelled
cards below 600 px)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.dashboard.helpers import require_route, shot, sign_in, view
from tests.servers import ServerProcess

CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Hi"}]}
WIDTHS = {"phone": 390, "desktop": 1280}


def in_view(page: Any, locator: Any, width: int) -> None:
    """The element is rendered, has a size, and lies wholly inside the viewport's width."""
    expect(locator).to_be_visible()
    box = locator.bounding_box()
    assert box is not None and box["width"] > 0, box
    assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (box, width)


def column_cell(row: Any, label: str) -> Any:
    return row.locator(f"td[data-label='{label}']")


@pytest.mark.parametrize("size", list(WIDTHS))
def test_keys_and_live_tables_fit(
    size: str,
    browser: Any,
    dash_gateway: ServerProcess,
    dash_admin: httpx.Client,
    dash_user: httpx.Client,
    artifacts: Path,
) -> None:
    require_route(dash_admin, "/admin/keys")
    width = WIDTHS[size]
    name = f"narrow-{size}-{uuid.uuid4().hex[:6]}"
    made = dash_admin.post(
        "/admin/keys", json={"name": name, "rpm": 600, "models": ["qwen*", "nomic*"]}
    )
    assert made.status_code == 201, made.text
    for stream in (False, True):
        assert dash_user.post("/v1/chat/completions", json={**CHAT, "stream": stream}).is_success

    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        sign_in(page, dash_gateway.url)
        view(page, "keys")
        row = page.locator(f"#keys-table tr[data-key='{name}']")
        expect(row).to_contain_text("active")
        for label in ("Name", "Scope", "Models", "Limits", "Expires", "Status"):
            in_view(page, column_cell(row, label), width)
        in_view(page, row.get_by_role("button", name="Revoke"), width)
        in_view(page, row.get_by_role("button", name="Rotate"), width)
        if size == "phone":
            # A card: the column's name is shown beside its value.
            label = column_cell(row, "Status").evaluate(
                "(td) => getComputedStyle(td, '::before').content"
            )
            assert label == '"Status"', label
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        row.scroll_into_view_if_needed()
        shot(page, artifacts, f"10-{size}-keys")

        view(page, "live")
        recent = page.locator("#recent-rows tr[data-request]").first
        expect(recent).to_be_visible()
        for label in ("Finished", "Request", "Status", "Latency", "TTFT", "Tokens in/out"):
            in_view(page, column_cell(recent, label), width)
        expect(column_cell(recent, "Status")).to_contain_text("200")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        shot(page, artifacts, f"10-{size}-live")
    finally:
        context.close()
