"""Browser tests: Playwright driving Debian's Chromium against a real `jiaoying serve` on the sample.

One server for the whole session (sample data and accounts take a few seconds to make); each test
gets fresh browser contexts. Screenshots go to test-artifacts/screenshots/ (see shots.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, ViewportSize, expect, sync_playwright

from tests.browser.served import ACCOUNTS, Served, serve_sample

CHROMIUM = os.environ.get("JIAOYING_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1440, "height": 900}
PHONE: ViewportSize = {"width": 360, "height": 740}  # a small Android phone

expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_sample(tmp_path_factory.mktemp("served")) as s:
        yield s


# Playwright's sync API runs an event loop of its own on this thread for as long as it is started; the
# asyncio tests elsewhere in the same run need the thread free again, so it lives for one test at a time.
@pytest.fixture
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield b
    b.close()


@pytest.fixture
def new_context(browser: Browser, served: Served) -> Iterator[Callable[..., BrowserContext]]:
    """Make browser contexts (one per person at their own screen); all are closed after the test."""
    made: list[BrowserContext] = []

    def make(*, phone: bool = False) -> BrowserContext:
        ctx = browser.new_context(
            base_url=served.url,
            viewport=PHONE if phone else DESKTOP,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            is_mobile=phone,
            has_touch=phone,
        )
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def sign_in(new_context: Callable[..., BrowserContext]) -> Callable[[str], Page]:
    """A desktop page signed in as one of the sample accounts (duty, fenghuang, auditor, admin)."""

    def as_user(name: str) -> Page:
        password = ACCOUNTS[name][0]
        page = new_context().new_page()
        page.goto("/console/sign-in")
        page.get_by_label("用户名").fill(name)
        page.get_by_label("密码").fill(password)
        page.get_by_role("button", name="登录").click()
        expect(page.get_by_test_id("who")).to_contain_text(ACCOUNTS[name][3])
        return page

    return as_user
