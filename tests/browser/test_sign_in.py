"""Signing in and out of the console, in a real browser."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.served import Served
from tests.browser.shots import screenshot


def test_a_wrong_password_is_refused_and_audited(new_context: Callable[..., BrowserContext], served: Served) -> None:
    page = new_context().new_page()
    page.goto("/console/")
    expect(page).to_have_url(served.url + "/console/sign-in?next=/console/")
    page.get_by_label("用户名").fill("duty")
    page.get_by_label("密码").fill("not-the-password")
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("alert")).to_contain_text("用户名或密码不对")
    screenshot(page, "sign-in-refused")
    audit = httpx.get(served.url + "/api/v1/audit", headers={"X-API-Key": "browser-audit-key"}, timeout=10)
    kinds = [(e["kind"], e["data"].get("reason")) for e in audit.json()["items"]]
    assert ("account.sign_in_failed", "password") in kinds


def test_sign_in_lands_on_the_board_and_sign_out_ends_the_session(sign_in: Callable[[str], Page]) -> None:
    page = sign_in("duty")
    expect(page.get_by_role("heading", level=1)).to_contain_text("值守看板")
    page.get_by_role("button", name="退出").click()
    expect(page.get_by_test_id("notice")).to_contain_text("已退出登录")
    page.goto("/console/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("登录值班台")
