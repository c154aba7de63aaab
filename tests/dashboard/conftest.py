"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
gateway in front of a real emulator (with slow model loads, so load progress can be seen).

Without /usr/bin/chromium the browser tests are skipped with a loud reason, except under CI
(`CI` set), where that is a failure: `.ci/run` installs Chromium, so CI must run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, start_emulator, start_gateway

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"
LOAD_DELAY_S = 2.5  # longer than the gateway's 2 s progress interval


@pytest.fixture(scope="session")
def dash_emulator(tmp_root: Path) -> Iterator[ServerProcess]:
    server = start_emulator(  # REST loads: the page shows what REST could not set
        tmp_root,
        "--token-delay",
        "0.01",
        "--load-delay",
        str(LOAD_DELAY_S),
        "--no-sdk",
        name="dash-emu",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dash_gateway(tmp_root: Path, dash_emulator: ServerProcess) -> Iterator[ServerProcess]:
    server = start_gateway(
        tmp_root,
        dash_emulator.url,
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_API_KEYS": API_KEY},
    )
    yield server
    server.stop()


@pytest.fixture
def dash_admin(dash_gateway: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=dash_gateway.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def dash_user(dash_gateway: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=dash_gateway.url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture
def dash_upstream(dash_emulator: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dash_emulator.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module. Playwright's sync API keeps its own event loop marked as
    running while it is open, so it must be closed before pytest-asyncio's tests run again."""
    if not Path(CHROMIUM).exists():
        reason = (
            f"BROWSER TESTS NOT RUN: {CHROMIUM} is missing. Install Debian's chromium "
            "(apt-get install -y chromium) to run the dashboard tests."
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class PageProblems:
    """Uncaught script errors and CSP violations seen on a page: each test ends with none."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")

    def console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" and ("Content Security Policy" in text or "Refused" in text):
            self.errors.append(f"csp: {text}")


def _page(browser: Any, viewport: dict[str, int]) -> Iterator[Any]:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems = PageProblems()
    page.on("pageerror", problems.page_error)
    page.on("console", problems.console)
    yield page
    context.close()
    assert problems.errors == []


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from _page(browser, {"width": 1280, "height": 900})


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    yield from _page(browser, {"width": 390, "height": 844})


@pytest.fixture(scope="session")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
