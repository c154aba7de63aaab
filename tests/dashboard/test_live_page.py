"""Signing in, the Overview, and the Live view in a real browser against real servers."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from playwright.sync_api import expect

from tests.dashboard.helpers import has_route, require_route, shot, sign_in, view
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, start_gateway

CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Hello there"}]}


def test_sign_in_keeps_the_key_out_of_the_url(
    page: Any, dash_gateway: ServerProcess, artifacts: Path
) -> None:
    page.goto(f"{dash_gateway.url}/dashboard/")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    shot(page, artifacts, "01-sign-in")

    page.fill("#login-key", "not-a-key-at-all")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("The gateway refused this key.")
    assert page.evaluate("sessionStorage.length") == 0

    page.fill("#login-key", API_KEY)  # an inference key: no admin scope
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("admin scope")
    assert page.evaluate("sessionStorage.length") == 0

    sign_in(page, dash_gateway.url)
    assert ADMIN_KEY not in page.url
    assert page.evaluate("sessionStorage.getItem('lmgate.adminKey')") == ADMIN_KEY
    assert page.evaluate("localStorage.length") == 0

    # A reload keeps the session; signing out forgets the key.
    page.reload()
    expect(page.locator("#conn")).to_have_text("live")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_sign_in_without_keys(page: Any, open_gateway: ServerProcess) -> None:
    """A gateway with no keys (loopback only) takes an empty key."""
    page.goto(f"{open_gateway.url}/dashboard/")
    page.click("#login-submit")
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator("#upstream-health")).to_have_text("reachable")


def test_sign_in_from_an_address_outside_the_admin_allowlist(
    page: Any, tmp_root: Path, dash_emulator: ServerProcess
) -> None:
    """The page loads (it is public), but the admin API refuses the address: the page says why."""
    gateway = start_gateway(
        tmp_root,
        dash_emulator.url,
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_ADMIN_ALLOW": "10.99.0.0/16"},
    )
    try:
        page.goto(f"{gateway.url}/dashboard/")
        page.fill("#login-key", ADMIN_KEY)
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_contain_text("LMGATE_ADMIN_ALLOW")
        expect(page.locator("#nav")).to_be_hidden()
    finally:
        gateway.stop()


def test_overview_shows_upstream_and_live_numbers(
    page: Any, dash_gateway: ServerProcess, dash_user: httpx.Client, artifacts: Path
) -> None:
    sign_in(page, dash_gateway.url)
    expect(page.locator("#upstream-health")).to_have_text("reachable")
    expect(page.locator(".upstream")).to_contain_text("lmstudio-0.4+")
    expect(page.locator(".upstream .chip.on", has_text="load/unload")).to_be_visible()
    expect(page.locator("#tile-uptime .tile-value")).not_to_have_text("\u2014")

    before = page.locator("#tile-rps .tile-sub").inner_text()
    for i in range(6):
        answer = dash_user.post("/v1/chat/completions", json={**CHAT, "stream": i % 2 == 0})
        assert answer.status_code == 200
    expect(page.locator("#tile-rps .tile-sub")).not_to_have_text(before)
    expect(page.locator("#tile-latency .tile-value")).not_to_have_text("\u2014 / \u2014")
    expect(page.locator("#tile-ttft .tile-value")).not_to_have_text("\u2014 / \u2014")
    # Six requests in the last 15-second bucket: the charts have drawn them.
    expect(page.locator(".charts svg path.line-a, .charts svg circle.line-a").first).to_be_visible()
    page.wait_for_timeout(500)
    shot(page, artifacts, "02-overview")


def test_a_request_appears_live(
    page: Any,
    dash_gateway: ServerProcess,
    dash_admin: httpx.Client,
    dash_user: httpx.Client,
    artifacts: Path,
) -> None:
    sign_in(page, dash_gateway.url)
    view(page, "live")
    request_id = f"dash-{uuid.uuid4().hex[:12]}"
    with OpenAI(base_url=f"{dash_gateway.url}/v1", api_key=API_KEY) as client:
        stream = client.chat.completions.create(
            model="qwen/qwen3-4b",
            messages=[{"role": "user", "content": "Tell me something"}],
            stream=True,
            extra_headers={"X-Request-ID": request_id},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text

    row = page.locator(f"#recent-rows tr[data-request='{request_id}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("api-key-1")
    expect(row).to_contain_text("qwen/qwen3-4b")
    expect(row.locator("td").nth(5)).to_have_text("200")
    log = page.locator("#event-log li[data-type='inference_complete']").first
    expect(log).to_contain_text("200")
    assert request_id in log.locator("pre").text_content()
    tracked = has_route(dash_admin, "/debug/requests")
    source = "as the gateway tracks them" if tracked else "not available on this gateway"
    expect(page.locator("#requests-source")).to_contain_text(source)
    shot(page, artifacts, "04-live")


def test_cancel_an_in_flight_request(
    page: Any, dash_gateway: ServerProcess, dash_admin: httpx.Client, artifacts: Path
) -> None:
    require_route(dash_admin, "/debug/requests")
    sign_in(page, dash_gateway.url)
    view(page, "live")
    request_id = f"slow-{uuid.uuid4().hex[:12]}"
    outcome: dict[str, Any] = {}

    def slow_request() -> None:
        headers = {
            "Authorization": f"Bearer {API_KEY}",
            "X-Request-ID": request_id,
            "x-emulator-token-delay": "1.5",  # 24 tokens: far longer than the test
        }
        try:
            with httpx.stream(
                "POST",
                f"{dash_gateway.url}/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers=headers,
                timeout=60,
            ) as answer:
                outcome["status"] = answer.status_code
                outcome["body"] = b"".join(answer.iter_bytes())
        except httpx.HTTPError as exc:
            outcome["error"] = repr(exc)

    thread = threading.Thread(target=slow_request)
    thread.start()
    try:
        row = page.locator(f"#inflight-rows tr[data-request='{request_id}']")
        expect(row).to_be_visible()
        expect(row).to_contain_text("api-key-1")
        shot(page, artifacts, "05-live-in-flight")
        button = row.get_by_role("button", name="Cancel")
        button.click()
        row.get_by_role("button", name="Confirm cancel").click()
        expect(page.locator(".toast.ok")).to_contain_text(f"Cancelled {request_id}")
        thread.join(timeout=20)
        assert not thread.is_alive()
    finally:
        thread.join(timeout=30)
    expect(row).to_have_count(0)
    done = page.locator(f"#recent-rows tr[data-request='{request_id}']")
    expect(done).to_contain_text("cancelled")
    # The client's stream ended early with lmgate's error frame, not the full answer.
    assert outcome.get("status") == 200, outcome
    assert b"request_cancelled" in outcome["body"] or b"cancel" in outcome["body"]


def test_event_log_filters_and_pause(
    page: Any, dash_gateway: ServerProcess, dash_user: httpx.Client
) -> None:
    sign_in(page, dash_gateway.url)
    view(page, "live")
    items = page.locator("#event-log li[data-type^='inference_']")
    dash_user.post("/v1/chat/completions", json=CHAT)
    expect(items.first).to_be_visible()

    page.uncheck("#filter-inference")
    expect(items).to_have_count(0)
    page.check("#filter-inference")
    expect(items.first).to_be_visible()

    shown = items.count()
    page.click("#log-pause")
    expect(page.locator("#log-pause")).to_have_text("Resume")
    dash_user.post("/v1/chat/completions", json=CHAT)
    expect(page.locator("#log-pending")).to_contain_text("2 new events held")
    assert items.count() == shown
    page.click("#log-pause")
    expect(items).to_have_count(shown + 2)


@pytest.fixture
def restartable_gateway(tmp_root: Path, dash_emulator: ServerProcess) -> Any:
    server = start_gateway(tmp_root, dash_emulator.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY})
    yield server
    server.stop()


def test_stream_reconnects_with_last_event_id(
    page: Any, restartable_gateway: ServerProcess
) -> None:
    gateway = restartable_gateway
    stream_requests: list[dict[str, str]] = []
    page.on(
        "request",
        lambda r: stream_requests.append(r.headers) if "/debug/stream" in r.url else None,
    )
    sign_in(page, gateway.url)
    assert stream_requests[0].get("last-event-id") == "0"
    httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    view(page, "live")
    expect(page.locator("#event-log li[data-type='inference_complete']")).to_have_count(1)
    last_seen = page.locator("#event-log li").first.locator("pre").text_content()
    assert last_seen is not None

    gateway.stop()
    expect(page.locator("#conn")).to_have_text("reconnecting")
    gateway.start()
    expect(page.locator("#conn")).to_have_text("live", timeout=30_000)
    resumed = stream_requests[-1].get("last-event-id")
    assert resumed is not None and int(resumed) > 0
    assert f'"id": {resumed}' in last_seen
