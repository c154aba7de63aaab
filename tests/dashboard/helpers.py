"""Steps the browser tests share: sign in, switch views, save a screenshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.servers import ADMIN_KEY


def sign_in(page: Any, base_url: str, key: str = ADMIN_KEY) -> None:
    page.goto(f"{base_url}/dashboard/")
    page.fill("#login-key", key)
    page.click("#login-submit")
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("live")


def view(page: Any, name: str) -> None:
    page.click(f"#nav a[data-view={name}]")
    expect(page.locator(f"#view-{name}")).to_be_visible()


def shot(page: Any, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def has_route(client: httpx.Client, path: str) -> bool:
    """Whether this gateway serves `path` (an admin client; 404 `not_found` = no such route)."""
    answer = client.get(path)
    if answer.status_code == 405:
        return False
    return not (answer.status_code == 404 and answer.json()["error"]["code"] == "not_found")


def require_route(client: httpx.Client, path: str) -> None:
    if not has_route(client, path):
        pytest.skip(f"{path} is not served by this gateway; the page's fallback is tested instead")
