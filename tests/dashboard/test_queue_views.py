"""The scheduler in the dashboard: a request that waits for a busy model's only slot shows up
in the Live view's queue (key, model, position, a wait that counts up), and the Models view
shows the model's slots in use, its idle-unload countdown, pin and owner. Real servers: a
gateway that loads on demand in front of an emulator whose models answer one at a time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import expect

from tests.dashboard.helpers import shot, sign_in, view
from tests.observe.helpers import eventually
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, start_emulator, start_gateway

QWEN = "qwen/qwen3-4b"
KEY_A, KEY_B = "sk-dash-queue-a-0123456789", "sk-dash-queue-b-0123456789"
TTL_S = 300


@pytest.fixture
def queue_servers(tmp_root: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    emu = start_emulator(
        tmp_root, "--parallel", "1", "--no-preload", "--load-delay", "0.3", name="dash-queue-emu"
    )
    try:
        gw = start_gateway(
            tmp_root,
            emu.url,
            env={
                "LMGATE_ADMIN_KEY": ADMIN_KEY,
                "LMGATE_API_KEYS": f"{KEY_A},{KEY_B}",
                "LMGATE_ON_DEMAND_LOAD": "true",
                "LMGATE_MODEL_TTL": str(TTL_S),
                "LMGATE_SYNC_INTERVAL": "0.3",
            },
        )
    except BaseException:
        emu.stop()
        raise
    yield emu, gw
    gw.stop()
    emu.stop()


def _chat(gw: ServerProcess, key: str, tokens: int, delay: float, box: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=120)
    stream = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": f"hello from {key[-4:]}"}],
        stream=True,
        max_tokens=tokens,
        extra_headers={"x-emulator-token-delay": str(delay)},
    )
    box[key] = [c.choices[0].finish_reason for c in stream if c.choices][-1]
    client.close()


def test_a_waiting_request_in_live_and_slots_with_ttl_in_models(
    page: Any, queue_servers: tuple[ServerProcess, ServerProcess], artifacts: Path
) -> None:
    emu, gw = queue_servers
    eventually(
        lambda: (
            QWEN
            in {
                m["key"]
                for m in httpx.get(gw.url + "/admin/models", headers=admin_headers()).json()[
                    "models"
                ]
            }
        ),
        timeout=20.0,
    )
    sign_in(page, gw.url)
    view(page, "live")
    expect(page.locator("#queue-rows")).to_contain_text("Nobody is waiting.")

    box: dict[str, Any] = {}
    busy = threading.Thread(target=_chat, args=(gw, KEY_A, 20, 0.5, box))  # ~10 s
    busy.start()
    eventually(
        lambda: httpx.get(emu.url + "/__emulator/generations").json()["generating"].get(QWEN),
        timeout=20.0,
    )
    waiter = threading.Thread(target=_chat, args=(gw, KEY_B, 2, 0.01, box))
    waiter.start()
    try:
        # Live: the waiting request, its key, model and place; its wait counts up.
        row = page.locator(f"#queue-rows tr[data-model='{QWEN}']")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("api-key-2")
        expect(row.locator(".queue-position")).to_have_text("1")
        expect(page.locator("#queue-count")).to_have_text("1")
        first = _seconds(row.locator(".queue-waited").inner_text())
        page.wait_for_timeout(1500)
        assert _seconds(row.locator(".queue-waited").inner_text()) > first
        shot(page, artifacts, "queue-live-waiting")

        # Models: one answer on the model's one slot, one waiting, loaded by lmgate.
        view(page, "models")
        slot = page.locator(f"#slot-rows tr[data-model='{QWEN}']")
        expect(slot.locator(".slot-use")).to_have_text("1 / 1")
        expect(slot).to_contain_text("lmgate")
        expect(slot.locator(".slot-pinned")).to_have_text("no")
        expect(slot.locator(".slot-ttl")).to_contain_text("once idle")
        shot(page, artifacts, "queue-models-busy")
    finally:
        busy.join(60)
        waiter.join(60)
    assert box == {KEY_A: "length", KEY_B: "length"}

    # Idle now: no slot in use, and the idle-unload countdown runs.
    slot = page.locator(f"#slot-rows tr[data-model='{QWEN}']")
    expect(slot.locator(".slot-use")).to_have_text("0 / 1")
    expect(slot.locator(".slot-ttl")).not_to_contain_text("once idle")
    before = _seconds(slot.locator(".slot-ttl").inner_text())
    assert TTL_S - 60 < before <= TTL_S
    page.wait_for_timeout(2200)
    assert _seconds(slot.locator(".slot-ttl").inner_text()) < before
    shot(page, artifacts, "queue-models-idle")

    view(page, "live")
    expect(page.locator("#queue-rows")).to_contain_text("Nobody is waiting.")


def _seconds(text: str) -> float:
    """`850 ms`, `2.35 s`, `4m 59s`, `59s` as seconds."""
    text = text.strip()
    if text.endswith(" ms"):
        return float(text[:-3]) / 1000
    if text.endswith(" s"):
        return float(text[:-2])
    total = 0.0
    for part in text.split():
        unit = part[-1]
        total += float(part[:-1]) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total
