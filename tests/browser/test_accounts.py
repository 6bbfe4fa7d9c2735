"""The administrator's account pages in a real browser: add a township officer who then signs in."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.shots import screenshot


def test_admin_adds_a_township_officer_who_signs_in_to_their_township(
    sign_in: Callable[[str], Page], new_context: Callable[..., BrowserContext]
) -> None:
    username = f"ningchang{uuid.uuid4().hex[:4]}"
    password = "ningchang-pass-01"
    admin = sign_in("admin")
    admin.get_by_role("link", name="账号").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("账号管理")
    expect(admin.get_by_test_id("accounts")).to_contain_text("凤凰镇李娜")

    admin.get_by_label("用户名").fill(username)
    admin.get_by_label("姓名").fill("宁厂镇周强")
    admin.get_by_label("角色").select_option(label="乡镇值班员")
    admin.get_by_label("初始密码（至少 10 个字符）").fill("short")
    admin.get_by_role("button", name="添加账号").click()
    expect(admin.get_by_text("乡镇值班员必须选择所属乡镇（街道）")).to_be_visible()
    expect(admin.get_by_text("密码至少 10 个字符，现在是 5 个")).to_be_visible()
    expect(admin.get_by_label("用户名")).to_have_value(username)  # what was typed is kept

    admin.get_by_label("所属乡镇（仅乡镇值班员）").select_option("500238102")
    admin.get_by_label("初始密码（至少 10 个字符）").fill(password)
    admin.get_by_role("button", name="添加账号").click()
    expect(admin.get_by_test_id("notice")).to_contain_text(f"已添加账号 {username}")
    expect(admin.get_by_test_id("role")).to_have_text("乡镇值班员")
    expect(admin.get_by_text("宁厂镇（500238102）")).to_be_visible()
    expect(admin.get_by_test_id("history")).to_contain_text("创建账号")
    screenshot(admin, "account-added")

    officer = new_context().new_page()
    officer.goto("/console/sign-in")
    officer.get_by_label("用户名").fill(username)
    officer.get_by_label("密码").fill(password)
    officer.get_by_role("button", name="登录").click()
    expect(officer.get_by_test_id("who")).to_have_text("宁厂镇周强 · 乡镇值班员（500238102）")
    expect(officer.get_by_role("link", name="账号")).to_have_count(0)
    officer.goto("/console/accounts")
    expect(officer.get_by_test_id("error-message")).to_have_text("只有管理员可以管理账号。")

    admin.goto("/console/accounts")
    expect(admin.locator(f'tr[data-username="{username}"]')).to_contain_text("宁厂镇（500238102）")
    screenshot(admin, "accounts")

    admin.goto(f"/console/accounts/{username}")
    admin.once("dialog", lambda d: d.accept())
    admin.get_by_role("button", name="停用账号").click()
    expect(admin.get_by_test_id("notice")).to_contain_text("已停用")
    officer.goto("/console/")  # the disabled officer's open session ends at once
    expect(officer.get_by_role("heading", level=1)).to_have_text("登录值班台")


def test_a_duty_officer_cannot_open_the_account_pages(sign_in: Callable[[str], Page]) -> None:
    page = sign_in("duty")
    expect(page.get_by_role("link", name="账号")).to_have_count(0)
    response = page.goto("/console/accounts")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("无权操作")
    expect(page.get_by_test_id("error-message")).to_have_text("只有管理员可以管理账号。")
