"""Live view: the recent list is in the order requests finished and shows when each finished,
so a slow request that started first is listed above a quick one that started after it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.dashboard.helpers import shot, sign_in, view
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, start_emulator, start_gateway

CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Order please"}]}


@pytest.fixture(scope="module")
def slow_gateway(tmp_root: Path) -> Iterator[ServerProcess]:
    emulator = start_emulator(tmp_root, "--token-delay", "0.1", name="slow-emu")
    gateway = start_gateway(
        tmp_root, emulator.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_API_KEYS": API_KEY}
    )
    yield gateway
    gateway.stop()
    emulator.stop()


def test_recent_requests_in_finish_order(
    page: Any, slow_gateway: ServerProcess, artifacts: Path
) -> None:
    url = f"{slow_gateway.url}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(timeout=60, headers=auth) as client:
        assert client.post(url, json={**CHAT, "max_tokens": 1}).is_success  # warm the model
    sign_in(page, slow_gateway.url)
    view(page, "live")
    expect(page.locator("#recent-rows tr[data-request]")).to_have_count(1)

    answers: list[httpx.Response] = []

    def slow() -> None:  # about 24 tokens at 0.1 s each
        with httpx.Client(timeout=60, headers=auth) as client:
            answers.append(client.post(url, json={**CHAT, "stream": True}))

    started = threading.Thread(target=slow)
    started.start()
    expect(page.locator("#inflight-rows tr[data-request]")).to_have_count(1)
    with httpx.Client(timeout=60, headers=auth) as client:
        assert client.post(url, json={**CHAT, "max_tokens": 1}).is_success
    started.join(timeout=60)
    assert answers and answers[0].is_success

    rows = page.locator("#recent-rows tr[data-request]")
    expect(rows).to_have_count(3)
    expect(page.locator("#view-live th").filter(has_text="Finished")).to_have_count(1)
    # Newest finished first: the slow stream (started first, 24 tokens out) heads the list.
    expect(rows.nth(0).locator("td[data-label='Tokens in/out']")).to_contain_text("/ 24")
    expect(rows.nth(1).locator("td[data-label='Tokens in/out']")).to_contain_text("/ 1")
    shown = [
        time.strptime(t.strip(), "%H:%M:%S")
        for t in rows.locator("td[data-label='Finished']").all_inner_texts()
    ]
    assert shown == sorted(shown, reverse=True), shown
    started_title = rows.nth(0).locator("td[data-label='Finished']").get_attribute("title")
    assert started_title and started_title.startswith("started ")
    shot(page, artifacts, "12-live-finish-order")
