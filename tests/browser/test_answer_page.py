"""The grid worker's answer page on a phone: open the link from the SMS, read the warning, tap 收到."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect

from tests.browser.conftest import PHONE
from tests.browser.served import DUTY_PHONE, LINK, Served
from tests.browser.shots import screenshot

DUTY = {"X-API-Key": "browser-duty-key"}
FENGHUANG = "500238101"  # 凤凰镇


def issue_red(served: Served) -> tuple[int, str]:
    """A red 山洪 exercise on 凤凰镇 with a title no other test uses; returns its id and title."""
    title = f"凤凰镇山洪红色预警 {uuid.uuid4().hex[:6]}"
    body = {
        "level": "red",
        "hazard": "山洪",
        "title": title,
        "text": "受持续强降雨影响，预计未来3小时凤凰镇沿河地带将出现山洪，东溪河水位快速上涨，请高度警惕。",
        "instructions": "立即组织沿河低洼地带群众转移到安全地带；停止一切涉水活动；转移情况报乡镇值班室。",
        "units": [FENGHUANG],
        "exercise": True,
    }
    r = httpx.post(served.url + "/api/v1/alerts", json=body, headers=DUTY, timeout=30)
    assert r.status_code == 201, r.text
    alert_id: int = r.json()["id"]
    return alert_id, title


def recipients(served: Served, alert_id: int) -> list[dict[str, Any]]:
    r = httpx.get(f"{served.url}/api/v1/alerts/{alert_id}/recipients?limit=1000", headers=DUTY, timeout=30)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def phone_of(served: Served, person_id: str) -> str:
    """The API masks phones; the test reads the full number where the sample put it."""
    path = served.env["JIAOYING_DATABASE_URL"].split("///", 1)[1]
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT phone FROM person WHERE id = ?", (person_id,)).fetchone()
    assert row and row[0], f"{person_id} has no phone"
    phone: str = row[0]
    return phone


def a_grid_worker(served: Served, alert_id: int) -> tuple[dict[str, Any], str]:
    """A grid worker the alert reached by SMS, and their number."""
    for r in recipients(served, alert_id):
        if r["kind"] == "person" and r["role"] == "grid_worker" and r["phone"]:
            return r, phone_of(served, r["person_id"])
    raise AssertionError(f"alert {alert_id} reached no grid worker with a phone")


def link_for(served: Served, phone: str, title: str) -> str:
    """The answer link for this alert in the SMS to this phone (other tests' alerts may text the same person)."""
    served.answer_link(phone)  # waits for the first SMS
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for body in reversed(served.sms_to(phone)):
            for link in LINK.findall(body):
                if title in httpx.get(link, timeout=10).text:  # a GET only shows, it answers nothing
                    return str(link)
        time.sleep(0.2)
    raise AssertionError(f"no SMS to {phone} carried a link to {title}")


@pytest.fixture
def no_script_phone(browser: Browser, served: Served) -> Iterator[Callable[[], BrowserContext]]:
    """A phone whose browser runs no JavaScript at all."""
    made: list[BrowserContext] = []

    def make() -> BrowserContext:
        ctx = browser.new_context(
            base_url=served.url,
            viewport=PHONE,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            is_mobile=True,
            has_touch=True,
            java_script_enabled=False,
        )
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def open_recording(ctx: BrowserContext, url: str) -> tuple[Page, list[Request], int]:
    """Open the link and return the page, every request it made, and the size of the HTML."""
    page = ctx.new_page()
    requests: list[Request] = []
    refused: list[str] = []
    page.on("request", lambda request: requests.append(request))
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200
    page.wait_for_timeout(300)  # anything fetched late (icons, fonts) would show up by now
    assert not refused, f"the page's own CSP blocked part of it: {refused}"
    return page, requests, len(response.body())


def check_one_small_request(page: Page, requests: list[Request], size: int) -> None:
    assert [(r.resource_type, r.method) for r in requests] == [("document", "GET")], [r.url for r in requests]
    assert size < 20_000, size
    button = page.get_by_role("button", name="收到", exact=True)
    expect(button).to_be_in_viewport()  # no scrolling needed to find it
    box = button.bounding_box()
    assert box is not None
    assert box["height"] >= 60, box
    assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], box


def test_a_grid_worker_answers_from_the_sms_link_on_a_phone(
    served: Served, new_context: Callable[..., BrowserContext]
) -> None:
    alert_id, title = issue_red(served)
    worker, phone = a_grid_worker(served, alert_id)
    link = link_for(served, phone, title)

    ctx = new_context(phone=True)
    page, requests, size = open_recording(ctx, link)
    expect(page.get_by_role("heading", level=1)).to_have_text("红色山洪预警")
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    expect(page.get_by_text("东溪河水位快速上涨")).to_be_visible()
    expect(page.get_by_text("停止一切涉水活动")).to_be_visible()
    expect(page.get_by_text("演练 · 非真实预警")).to_be_visible()
    expect(page.get_by_role("button", name="需要帮助")).to_be_in_viewport()  # beside 收到, no scrolling
    expect(page.get_by_role("link", name=DUTY_PHONE)).to_have_attribute("href", f"tel:{DUTY_PHONE}")
    font = page.get_by_text("东溪河水位快速上涨").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert font >= 20  # large type for a small screen in the rain
    check_one_small_request(page, requests, size)
    screenshot(page, "answer-page-phone")

    second = ctx.new_page()  # the same link opened again from WeCom, before answering
    second.goto(link)

    page.get_by_role("button", name="收到", exact=True).tap()
    expect(page.get_by_text("✓ 已确认收到")).to_be_visible()
    expect(page.get_by_role("button", name="收到", exact=True)).to_have_count(0)
    screenshot(page, "answer-confirmed-phone")

    second.get_by_role("button", name="收到", exact=True).tap()
    expect(second.get_by_text("已收到，无需重复")).to_be_visible()
    expect(second.get_by_text("确认收到。", exact=False)).to_contain_text("您已于")

    page.get_by_text("补充现场情况").tap()
    page.get_by_label("人员转移人数（人）").fill("12")
    page.get_by_label("情况说明（200 字以内）").fill("东溪河沿岸3户已转移到村委会")
    page.get_by_role("button", name="提交补充情况").tap()
    expect(page.get_by_text("补充情况已记录")).to_be_visible()
    expect(page.get_by_text("已报现场情况：转移 12 人，备注：东溪河沿岸3户已转移到村委会")).to_be_visible()

    seen = next(r for r in recipients(served, alert_id) if r["target_id"] == worker["target_id"])
    assert (seen["state"], seen["answer_channel"], seen["answered_by"]) == ("answered", "sms", worker["person_id"])
    assert seen["feedback"] == {"moved": 12, "note": "东溪河沿岸3户已转移到村委会"}


def test_a_tampered_link_says_so_plainly(served: Served, new_context: Callable[..., BrowserContext]) -> None:
    alert_id, title = issue_red(served)
    worker, phone = a_grid_worker(served, alert_id)
    link = link_for(served, phone, title)
    at = len(link) - 5  # inside the signature, where every bit counts
    tampered = link[:at] + ("A" if link[at] != "A" else "B") + link[at + 1 :]
    page = new_context(phone=True).new_page()
    response = page.goto(tampered)
    assert response is not None and response.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("链接无效")
    expect(page.get_by_text("不完整或被改动过")).to_be_visible()
    expect(page.get_by_role("button")).to_have_count(0)
    seen = next(r for r in recipients(served, alert_id) if r["target_id"] == worker["target_id"])
    assert seen["state"] == "open"


def test_the_page_works_the_same_without_javascript(
    served: Served, no_script_phone: Callable[[], BrowserContext]
) -> None:
    alert_id, title = issue_red(served)
    worker, phone = a_grid_worker(served, alert_id)
    page, requests, size = open_recording(no_script_phone(), link_for(served, phone, title))
    check_one_small_request(page, requests, size)
    page.get_by_text("填写现场情况（可选）").tap()  # <details> opens without script
    page.get_by_label("人员转移人数（人）").fill("5")
    page.get_by_label("需要帮助（支援）").check()
    page.get_by_role("button", name="提交情况并确认收到").tap()
    expect(page.get_by_text("✓ 已确认收到")).to_be_visible()
    expect(page.get_by_text("求助已报乡镇值班和县值班室")).to_be_visible()
    seen = next(r for r in recipients(served, alert_id) if r["target_id"] == worker["target_id"])
    assert seen["state"] == "answered"
    assert seen["feedback"] == {"moved": 5, "help_needed": True}
