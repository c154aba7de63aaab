"""The Models view drives the real model state: what the page does shows up in the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.dashboard.helpers import shot, sign_in, view
from tests.servers import ServerProcess

GEMMA = "google/gemma-3-1b"


def upstream_instances(upstream: httpx.Client, key: str) -> list[dict[str, Any]]:
    models = upstream.get("/api/v1/models").json()["models"]
    found: list[dict[str, Any]] = next(m for m in models if m["key"] == key)["loaded_instances"]
    return found


@pytest.fixture
def clean_models(dash_admin: httpx.Client, dash_upstream: httpx.Client) -> Iterator[None]:
    """Start and end with Gemma unloaded and nothing active."""

    def reset() -> None:
        if upstream_instances(dash_upstream, GEMMA):
            dash_admin.post("/admin/models/unload", json={"modelKey": GEMMA})
        active = dash_admin.get("/admin/state").json()["activeModel"]
        if active:
            dash_admin.post("/admin/models/unload", json={"modelKey": active})

    reset()
    yield
    reset()


def test_activate_from_the_form(
    page: Any, dash_gateway: ServerProcess, dash_admin: httpx.Client, clean_models: None
) -> None:
    sign_in(page, dash_gateway.url)
    view(page, "models")
    card = page.locator(f"article[data-model='{GEMMA}']")
    expect(card).to_contain_text("not loaded")
    card.get_by_role("button", name="Activate\u2026").click()
    dialog = page.locator("#model-dialog")
    expect(dialog).to_be_visible()

    # Checked in the page by the API's rules before anything is sent.
    page.fill("#di-temperature", "2.5")
    page.fill("#di-maxTokens", "0")
    page.click("#form-submit")
    expect(page.locator("#di-temperature-error")).to_have_text("must be at most 2")
    expect(page.locator("#di-maxTokens-error")).to_contain_text("or -1 for no limit")
    expect(page.locator("#form-errors")).to_contain_text("Please fix")
    assert dash_admin.get("/admin/state").json()["activeModel"] is None

    page.fill("#di-temperature", "0.4")
    page.fill("#di-maxTokens", "256")
    page.fill("#di-stopStrings", "END\nSTOP")
    page.click("#form-submit")
    expect(dialog).to_have_count(0)
    expect(page.locator("#active-model")).to_have_text(GEMMA)
    expect(card).to_contain_text("active")
    state = dash_admin.get("/admin/state").json()
    assert state["activeModel"] == GEMMA
    assert state["defaultInference"] == {
        "temperature": 0.4,
        "maxTokens": 256,
        "stopStrings": ["END", "STOP"],
    }


def test_load_and_unload_from_the_form(
    page: Any,
    dash_gateway: ServerProcess,
    dash_admin: httpx.Client,
    dash_upstream: httpx.Client,
    clean_models: None,
    artifacts: Path,
) -> None:
    sign_in(page, dash_gateway.url)
    view(page, "models")
    card = page.locator(f"article[data-model='{GEMMA}']")
    card.get_by_role("button", name="Load\u2026").click()
    page.fill("#lc-contextLength", "8192")
    page.select_option("#lc-flashAttention", "true")
    page.fill("#lc-gpu-ratio", "0.5")  # the REST API cannot set it: reported as not applied
    page.fill("#di-temperature", "0.3")
    page.click("#form-submit")

    # The emulator takes 2.5 s; the gateway reports progress every 2 s.
    progress = page.locator("#load-progress .activity-item")
    expect(progress).to_contain_text("loading")
    expect(page.locator("#load-progress .progress")).to_be_visible()
    expect(progress).to_contain_text("loading\u2026 2.0 s")
    strip = page.locator(f"#model-activity li[data-model='{GEMMA}']")
    expect(strip).to_contain_text("loading\u2026")
    shot(page, artifacts, "03a-models-load-progress")

    message = page.locator("#load-message")
    expect(message).to_have_text(f"'{GEMMA}' is loaded as instance '{GEMMA}'.", timeout=20_000)
    result = page.locator("#load-result")
    expect(result).to_contain_text("contextLength=8192")
    expect(result.locator(".not-applied")).to_contain_text("gpu.ratio")
    expect(strip).to_contain_text("loaded as")
    expect(strip.locator(".not-applied")).to_contain_text("gpu.ratio")
    shot(page, artifacts, "03b-models-load-result")

    instances = upstream_instances(dash_upstream, GEMMA)
    assert len(instances) == 1
    assert instances[0]["config"]["context_length"] == 8192
    assert instances[0]["config"]["flash_attention"] is True
    assert dash_admin.get("/admin/state").json()["activeModel"] == GEMMA

    page.get_by_role("button", name="Close").click()
    expect(card).to_contain_text("loaded")
    expect(card.locator(".instances")).to_contain_text("context_length=8192")
    shot(page, artifacts, "03-models")

    unload = card.locator(".actions").get_by_role("button", name="Unload")
    unload.click()
    card.get_by_role("button", name="Confirm unload").click()
    expect(page.locator(".toast.ok")).to_contain_text("unloaded 1 instance")
    expect(card).to_contain_text("not loaded")
    assert upstream_instances(dash_upstream, GEMMA) == []
    assert dash_admin.get("/admin/state").json()["activeModel"] is None


def test_a_refused_load_is_explained(
    page: Any, dash_gateway: ServerProcess, dash_upstream: httpx.Client, clean_models: None
) -> None:
    """A value the page accepts but the upstream refuses: its own message is shown."""
    sign_in(page, dash_gateway.url)
    view(page, "models")
    page.locator(f"article[data-model='{GEMMA}']").get_by_role("button", name="Load\u2026").click()
    page.fill("#lc-contextLength", "12.5")
    page.click("#form-submit")
    expect(page.locator("#lc-contextLength-error")).to_have_text("must be a whole number")
    page.fill("#lc-contextLength", "10000000")
    page.click("#form-submit")
    errors = page.locator("#form-errors")
    expect(errors).to_contain_text("Load failed")
    expect(errors).to_contain_text("context_length must be between 1 and 32768")
    assert upstream_instances(dash_upstream, GEMMA) == []
