"""Every view on a phone-sized screen (390x844): usable without sideways scrolling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.dashboard.helpers import shot, sign_in, view
from tests.servers import ServerProcess

WIDTH = 390


def page_width(page: Any) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


def test_every_view_fits_a_phone(
    phone: Any, dash_gateway: ServerProcess, dash_user: httpx.Client, artifacts: Path
) -> None:
    phone.goto(f"{dash_gateway.url}/dashboard/")
    expect(phone.locator("#login-key")).to_be_visible()
    assert page_width(phone) <= WIDTH
    sign_in(phone, dash_gateway.url)
    chat = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Hi"}]}
    for stream in (False, True):
        dash_user.post("/v1/chat/completions", json={**chat, "stream": stream})

    for name in ("overview", "models", "live", "keys"):
        view(phone, name)
        link = phone.locator(f"#nav a[data-view={name}]")
        expect(link).to_have_attribute("aria-current", "page")
        expect(link).to_be_in_viewport()
        phone.wait_for_timeout(400)
        # Wide tables scroll inside their own box; the page itself never does.
        assert page_width(phone) <= WIDTH, name
        shot(phone, artifacts, f"08-phone-{name}")

    # The two-column tiles and the stacked model cards are laid out for the narrow screen.
    view(phone, "overview")
    first, second = phone.evaluate(
        "[...document.querySelectorAll('.tile')].slice(0, 2)"
        ".map((t) => { const r = t.getBoundingClientRect(); return {y: r.y, width: r.width}; })"
    )
    assert first["y"] == second["y"] and first["width"] < WIDTH / 2, (first, second)
    view(phone, "models")
    load = phone.locator("article.model").first.get_by_role("button", name="Load\u2026")
    load.click()
    dialog = phone.locator("#model-dialog")
    expect(dialog).to_be_visible()
    box = dialog.bounding_box()
    assert box is not None and box["width"] <= WIDTH
    shot(phone, artifacts, "08-phone-load-form")
