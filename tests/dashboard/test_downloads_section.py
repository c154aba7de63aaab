"""The Models page's download section: start a download, watch its bar fill, see the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.dashboard.helpers import shot, sign_in, view
from tests.servers import ServerProcess


def test_download_from_the_models_page(
    page: Any, dash_gateway: ServerProcess, artifacts: Path
) -> None:
    sign_in(page, dash_gateway.url)
    view(page, "models")
    page.fill("#download-model", "not a model id")
    page.click("#download-submit")
    expect(page.locator("#download-error")).to_contain_text("catalog id")

    page.fill("#download-model", "acme/dashboard-dl-1b")
    page.click("#download-submit")
    row = page.locator("#download-list li.download").filter(has_text="acme/dashboard-dl-1b")
    expect(row).to_have_count(1)
    expect(row.locator("progress")).to_have_count(1)
    expect(row).to_have_attribute("data-status", "completed", timeout=20_000)
    assert row.locator("progress").evaluate("el => el.value") == 1
    # the finished download is a model of the upstream now
    expect(page.locator("article[data-model='acme/dashboard-dl-1b']")).to_have_count(1)
    expect(page.locator("#download-error")).to_have_text("")
    shot(page, artifacts, "models-download")
