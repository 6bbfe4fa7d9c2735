"""Issuing a warning in a real browser: form, preview, the red confirmation, and who may not issue."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.served import ACCOUNTS, Served
from tests.browser.shots import screenshot

DUTY_KEY = {"X-API-Key": "browser-duty-key"}


def test_duty_officer_issues_a_red_flash_flood_warning_with_preview(
    sign_in: Callable[[str], Page], served: Served
) -> None:
    page = sign_in("duty")
    page.get_by_role("navigation").get_by_role("link", name="发布预警").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("发布预警")

    page.get_by_label("红色", exact=True).check()
    page.get_by_label("灾种", exact=True).select_option("山洪")
    expect(page.get_by_label("标题", exact=True)).to_have_value("山洪红色预警")  # the template follows level and hazard

    page.get_by_label("按名称或代码查找").fill("凤凰")
    found = page.get_by_test_id("found")
    found.locator('input[value="500238101"]').check()
    expect(page.get_by_label("标题", exact=True)).to_have_value("凤凰镇山洪红色预警")  # and the chosen unit
    expect(page.get_by_label("预警内容", exact=True)).to_have_value(
        re.compile("^凤凰镇未来数小时发生山洪灾害的可能性很大")
    )
    title = f"凤凰镇山洪红色预警（浏览器测试 {uuid.uuid4().hex[:6]}）"
    page.get_by_label("标题", exact=True).fill(title)
    screenshot(page, "issue-form")

    page.get_by_role("button", name="预览送达范围").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("预览")
    expect(page.get_by_test_id("preview-title")).to_have_text(title)
    # the numbers are those the API's dry run gives for the same request
    body = {"level": "red", "hazard": "山洪", "title": title, "text": "x", "units": ["500238101"]}
    dry = httpx.post(served.url + "/api/v1/alerts/preview", json=body, headers=DUTY_KEY, timeout=30).json()
    assert dry["people"] > 0
    expect(page.get_by_test_id("count-people")).to_have_text(str(dry["people"]))
    expect(page.get_by_test_id("count-devices")).to_have_text(str(dry["devices"]))
    expect(page.get_by_test_id("count-deliveries")).to_have_text(str(dry["deliveries"]))
    expect(page.get_by_test_id("by-township")).to_contain_text("凤凰镇")
    expect(page.get_by_test_id("by-channel")).to_contain_text("智能外呼")
    plan = page.get_by_test_id("plan-steps")
    expect(plan).to_contain_text("首轮")
    expect(plan).to_contain_text("备岗人员")
    expect(plan).to_contain_text("5 分钟后仍未回复")
    expect(page.get_by_test_id("message")).to_contain_text("【巫溪县应急】红色山洪预警")
    screenshot(page, "issue-preview")

    page.get_by_role("button", name="发布预警").click()  # without ticking the confirmation
    expect(page.get_by_test_id("preview-error")).to_contain_text("我已核实，确认发布红色预警")
    expect(page.get_by_test_id("count-people")).to_have_text(str(dry["people"]))

    page.get_by_label("我已核实，确认发布红色预警").check()
    page.get_by_role("button", name="发布预警").click()
    expect(page).to_have_url(re.compile(r"/console/alerts/\d+$"))
    alert_id = int(page.url.rsplit("/", 1)[1])
    expect(page.get_by_test_id("notice")).to_have_text(f"已发布预警 #{alert_id}，正在送达 {dry['people']} 人")
    issued = httpx.get(f"{served.url}/api/v1/alerts/{alert_id}", headers=DUTY_KEY, timeout=10).json()
    assert (issued["title"], issued["level"], issued["created_by"]) == (title, "red", "user:duty")
    assert issued["target_units"] == ["500238101"]


def test_going_back_from_the_preview_keeps_the_form(sign_in: Callable[[str], Page]) -> None:
    page = sign_in("duty")
    page.goto("/console/alerts/new")
    page.get_by_label("标题", exact=True).fill("")
    page.get_by_role("button", name="预览送达范围").click()
    expect(page.get_by_test_id("form-errors")).to_contain_text("请填写标题")
    expect(page.get_by_test_id("form-errors")).to_contain_text("请至少选择一个目标单位")
    page.get_by_label("标题", exact=True).fill("宁厂镇大风蓝色预警（浏览器测试）")
    page.get_by_label("蓝色", exact=True).check()
    page.get_by_label("按名称或代码查找").fill("500238102")
    page.get_by_test_id("found").locator('input[value="500238102"]').check()
    page.get_by_role("button", name="预览送达范围").click()
    expect(page.get_by_test_id("preview-title")).to_have_text("宁厂镇大风蓝色预警（浏览器测试）")
    expect(page.get_by_label("我已核实，确认发布红色预警")).to_have_count(0)  # only red asks
    page.get_by_role("button", name="返回修改").click()
    expect(page.get_by_label("标题", exact=True)).to_have_value("宁厂镇大风蓝色预警（浏览器测试）")
    expect(page.get_by_test_id("chosen")).to_contain_text("宁厂镇")


def test_an_auditor_cannot_issue(sign_in: Callable[[str], Page]) -> None:
    page = sign_in("auditor")
    expect(page.get_by_role("navigation").get_by_role("link", name="值守看板")).to_be_visible()
    expect(page.get_by_role("navigation").get_by_role("link", name="发布预警")).to_have_count(0)
    response = page.goto("/console/alerts/new")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("无权操作")
    expect(page.get_by_test_id("error-message")).to_contain_text("不能发布")


def test_a_township_officer_picks_only_inside_their_township(sign_in: Callable[[str], Page], served: Served) -> None:
    page = sign_in("fenghuang")
    page.goto("/console/alerts/new")
    expect(page.get_by_test_id("tree")).to_contain_text("凤凰镇")
    expect(page.locator('input[name=units][value="500238102"]')).to_have_count(0)
    search = page.get_by_label("按名称或代码查找")
    search.fill("宁厂镇")  # the live search
    expect(page.get_by_test_id("nothing-found")).to_be_visible()
    page.get_by_role("button", name="查找").click()  # and the search the server answers
    expect(page.get_by_test_id("nothing-found")).to_contain_text("只查找本辖区内的单位")
    expect(page.get_by_test_id("found").locator("input")).to_have_count(0)

    csrf = page.locator("meta[name=csrf]").get_attribute("content")
    assert csrf
    forged: dict[str, str | float | bool] = {
        "csrf": csrf,
        "level": "blue",
        "hazard": "大风",
        "title": "越权预警",
        "text": "不应发出",
        "units": "500238102",
    }
    for path in ("/console/alerts/preview", "/console/alerts"):
        r = page.request.post(path, form=forged, max_redirects=0)
        assert r.status == 403, path
        assert "500238102" in r.text()
    listed = httpx.get(served.url + "/api/v1/alerts", params={"limit": 100}, headers=DUTY_KEY, timeout=10).json()
    assert not [a for a in listed["items"] if a["title"] == "越权预警"]


def test_the_form_works_without_javascript(browser: Browser, served: Served) -> None:
    context = browser.new_context(base_url=served.url, java_script_enabled=False, locale="zh-CN")
    try:
        page = context.new_page()
        page.goto("/console/sign-in")
        page.get_by_label("用户名").fill("duty")
        page.get_by_label("密码").fill(ACCOUNTS["duty"][0])
        page.get_by_role("button", name="登录").click()
        page.goto("/console/alerts/new")
        page.get_by_label("按名称或代码查找").fill("凤凰")
        page.get_by_role("button", name="查找").click()  # the server answers the search
        page.get_by_test_id("found").locator('input[value="500238101"]').check()
        page.get_by_label("橙色", exact=True).check()
        page.get_by_label("灾种", exact=True).select_option("地质灾害")
        page.get_by_role("button", name="套用模板文本").click()  # and reloads the template
        expect(page.get_by_label("标题", exact=True)).to_have_value("凤凰镇地质灾害橙色预警")
        expect(page.get_by_test_id("chosen")).to_contain_text("凤凰镇")
        page.get_by_role("button", name="预览送达范围").click()
        expect(page.get_by_test_id("preview-title")).to_have_text("凤凰镇地质灾害橙色预警")
        expect(page.get_by_test_id("count-people")).not_to_have_text("0")
        expect(page.get_by_test_id("by-township")).to_contain_text("凤凰镇")
    finally:
        context.close()


def test_the_form_is_reached_by_keyboard_alone(sign_in: Callable[[str], Page]) -> None:
    page = sign_in("duty")
    page.goto("/console/alerts/new")
    page.keyboard.press("Tab")  # the first stop on every page skips the header
    expect(page.get_by_role("link", name="跳到正文")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")  # and the first thing in the form is the warning level
    assert page.evaluate("document.activeElement.name") == "level"
    page.keyboard.press("ArrowDown")
    page.get_by_label("标题", exact=True).fill("")
    page.get_by_label("标题", exact=True).press("Enter")  # Enter previews, it never issues
    expect(page.get_by_test_id("form-errors")).to_contain_text("请至少选择一个目标单位")


def test_a_phone_sized_screen_keeps_every_link_readable(new_context: Callable[..., BrowserContext]) -> None:
    page = new_context(phone=True).new_page()
    page.goto("/console/sign-in")
    page.get_by_label("用户名").fill("duty")
    page.get_by_label("密码").fill(ACCOUNTS["duty"][0])
    page.get_by_role("button", name="登录").click()
    page.goto("/console/alerts/new")
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert width <= 400
    # nothing sticks out sideways, and no navigation link breaks over two lines
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    links = page.get_by_role("navigation").get_by_role("link")
    assert links.count() >= 3
    for i in range(links.count()):
        box = links.nth(i).evaluate("e => [e.getClientRects().length, e.getBoundingClientRect().height]")
        assert box[0] == 1 and box[1] < 40, links.nth(i).inner_text()
    expect(page.get_by_label("标题", exact=True)).to_be_visible()
    screenshot(page, "issue-form-phone")
