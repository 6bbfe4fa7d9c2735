"""The live board and the alert detail page in Chromium: answers arrive from phones and the board moves on its
own; the duty officer answers for someone, calls again and lifts; a township officer stays inside their town."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.served import Served
from tests.browser.shots import screenshot

DUTY_KEY = {"X-API-Key": "browser-duty-key"}
FENGHUANG, NINGCHANG = "500238101", "500238102"
FIELDS3 = ("planned", "answered", "silent")


def issue(served: Served, title: str, unit: str) -> int:
    body: dict[str, Any] = {
        "level": "red",
        "hazard": "山洪",
        "title": title,
        "text": "上游强降雨，河水暴涨，沿河低洼处有山洪危险。",
        "instructions": "立即转移沿河群众，关闭涉水路段。",
        "units": [unit],
        "exercise": True,
    }
    r = httpx.post(served.url + "/api/v1/alerts", json=body, headers=DUTY_KEY, timeout=30)
    assert r.status_code == 201, r.text
    alert_id: int = r.json()["id"]
    return alert_id


def phones_warned(served: Served, title: str, at_least: int, timeout: float = 30) -> list[str]:
    """The numbers whose SMS carries this warning: what each grid worker's phone shows them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m.field("To") or "" for m in served.twilio.created("Messages") if title in (m.field("Body") or "")]
        unique = list(dict.fromkeys(found))
        if len(unique) >= at_least:
            return unique
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} phones got an SMS about {title}")


def sms_count(served: Served, title: str) -> int:
    return sum(title in (m.field("Body") or "") for m in served.twilio.created("Messages"))


def answer_on_phone(served: Served, new_context: Callable[..., BrowserContext], phone: str) -> None:
    page = new_context(phone=True).new_page()
    page.goto(served.answer_link(phone))
    page.get_by_role("button", name="收到", exact=True).click()
    expect(page.locator(".box.ok")).to_contain_text("已确认收到")


def test_the_board_follows_answers_live_and_the_duty_officer_acts(
    served: Served, sign_in: Callable[[str], Page], new_context: Callable[..., BrowserContext]
) -> None:
    title = f"凤凰镇山洪看板{int(time.time() * 1000) % 100000}"
    alert_id = issue(served, title, FENGHUANG)
    phones = phones_warned(served, title, at_least=2)

    page = sign_in("duty")
    expect(page.get_by_role("heading", level=1)).to_contain_text("值守看板")
    card = page.get_by_test_id(f"board-alert-{alert_id}")
    expect(card).to_contain_text(title)
    expect(card.locator(".exercise")).to_have_text("演练")
    expect(page.get_by_test_id("live")).to_be_visible()  # the event stream is connected
    answered = card.get_by_test_id("total-answered")
    start = int(answered.inner_text())
    silent_before = int(card.get_by_test_id("silent-total").inner_text())
    page.evaluate("window.__stillTheSamePage = true")

    answer_on_phone(served, new_context, phones[0])
    expect(answered).to_have_text(str(start + 1))
    answer_on_phone(served, new_context, phones[1])
    expect(answered).to_have_text(str(start + 2))
    expect(card.get_by_test_id("silent-total")).to_have_text(str(silent_before - 2))
    # the tile map follows the same numbers: 凤凰镇's tile shows its silent count and is banded by its answer share
    town = f"{alert_id}.{FENGHUANG}"
    tile = card.locator(f'[data-tile="{town}"]')
    planned, answered_now, silent_now = (int(card.locator(f'[data-k="{town}.{k}"]').inner_text()) for k in FIELDS3)
    expect(tile.locator("[data-tile-silent]")).to_have_text(str(silent_now))
    band = "4" if answered_now >= planned else str(min(3, 4 * answered_now // planned))
    expect(tile).to_have_class(f"tile band-{band}")
    assert page.evaluate("window.__stillTheSamePage === true"), "the board reloaded instead of updating in place"
    expect(page.locator("#stale")).to_be_hidden()  # names left the silent list: the card was read again in place
    expect(card.locator("table.townships")).to_contain_text("凤凰镇")
    silent_rows = card.locator("tr[data-target]")  # people the officer can phone first, each with where they are
    expect(silent_rows.first).to_contain_text("首轮")
    expect(silent_rows.filter(has_text="凤凰镇 › ").first).to_be_visible()  # township › village › grid
    expect(card).not_to_contain_text("第 0 步")
    screenshot(page, "board")

    # the detail page, silent first: answer for the first one, with a reason
    page.goto(f"/console/alerts/{alert_id}?show=silent")
    expect(page.get_by_role("heading", level=1)).to_contain_text(title)
    expect(page.locator("main")).to_contain_text("接口调用（县值班员）")  # issued with the duty room's API key
    reason = page.get_by_placeholder("代为确认原因（必填）")
    first = page.get_by_test_id("recipient").filter(has=reason).first  # a person: a siren answers for itself
    name = first.locator(".who-line strong").inner_text()
    first.get_by_placeholder("代为确认原因（必填）").fill("村主任当面转告，本人已收到")
    first.get_by_role("button", name="代为确认").click()
    expect(page.get_by_test_id("notice")).to_contain_text("已代为确认")
    page.goto(f"/console/alerts/{alert_id}?show=answered_for")
    done = page.get_by_test_id("recipient").filter(has_text=name)
    expect(done).to_contain_text("村主任当面转告，本人已收到")
    expect(done).to_contain_text("duty")  # the account that answered for them

    # call one silent recipient again now: a fresh SMS goes out
    before = sms_count(served, title)
    page.goto(f"/console/alerts/{alert_id}?show=silent")
    person = page.get_by_test_id("recipient").filter(has=page.get_by_placeholder("代为确认原因（必填）")).first
    person.get_by_role("button", name="立即重呼").click()
    expect(page.get_by_test_id("notice")).to_contain_text("已立即重呼 1 人")
    deadline = time.monotonic() + 20
    while sms_count(served, title) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sms_count(served, title) > before, "calling again sent no new SMS"
    page.goto(f"/console/alerts/{alert_id}?q={name}")  # one recipient's whole timeline, under the alert's facts
    expect(page.get_by_test_id("recipient").first).to_contain_text("代为确认")
    screenshot(page, "alert-detail")

    # lift it, with a reason and a confirmation
    page.locator("details.alert-actions summary").click()
    page.get_by_label("解除原因（必填）").fill("雨情减弱，演练结束")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="解除预警").click()
    expect(page.get_by_test_id("notice")).to_contain_text("预警已解除")
    expect(page.get_by_test_id("alert-status")).to_have_text("已解除")
    page.goto("/console/")
    expect(page.get_by_test_id(f"board-alert-{alert_id}")).to_have_count(0)
    expect(page.get_by_test_id("ended")).to_contain_text(title)


def test_a_township_officer_sees_and_acts_only_in_their_town(served: Served, sign_in: Callable[[str], Page]) -> None:
    stamp = int(time.time() * 1000) % 100000
    own = issue(served, f"凤凰镇山洪辖区{stamp}", FENGHUANG)
    other = issue(served, f"宁厂镇山洪辖区{stamp}", NINGCHANG)

    page = sign_in("fenghuang")
    expect(page.get_by_test_id(f"board-alert-{own}")).to_be_visible()
    expect(page.get_by_test_id(f"board-alert-{other}")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text(f"宁厂镇山洪辖区{stamp}")

    response = page.goto(f"/console/alerts/{other}")
    assert response is not None and response.status == 404
    expect(page.locator("main")).not_to_contain_text(f"宁厂镇山洪辖区{stamp}")

    page.goto("/console/")
    refused = page.evaluate(
        """async (id) => {
            const csrf = document.querySelector('meta[name=csrf]').content;
            const body = new URLSearchParams({csrf, reason: "越权测试"});
            const r = await fetch(`/console/alerts/${id}/cancel`, {method: "POST", body, redirect: "manual"});
            return r.status;
        }""",
        other,
    )
    assert refused in (403, 404)
    status = httpx.get(f"{served.url}/api/v1/alerts/{other}", headers=DUTY_KEY, timeout=10).json()["status"]
    assert status == "active"


def test_a_new_alert_sounds_on_an_open_board_until_silenced_and_a_call_is_logged_in_one_click(
    served: Served, sign_in: Callable[[str], Page]
) -> None:
    page = sign_in("duty")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    expect(page.get_by_test_id("live")).to_be_visible()
    title = f"凤凰镇山洪响铃{int(time.time() * 1000) % 100000}"
    alert_id = issue(served, title, FENGHUANG)  # issued while the board is open: it comes in without a reload

    card = page.get_by_test_id(f"board-alert-{alert_id}")
    box = page.get_by_test_id(f"alarm-{alert_id}")
    expect(box).to_be_visible()
    expect(box).to_contain_text(f"新预警：{title}")
    expect(page.locator("#stale")).to_be_hidden()  # the new card was put in place: nothing left to reload
    expect(page).to_have_title(re.compile(r"^【新预警】值守看板"))
    rang = page.wait_for_function("() => Number(document.querySelector('[data-board]').dataset.rings || 0) > 0")
    assert rang, "the board did not try to sound for a new alert"
    assert str(alert_id) in page.evaluate("document.querySelector('[data-board]').dataset.alarm").split(",")
    screenshot(page, "board-alarm")

    box.get_by_role("button", name="静音本条预警").click()
    expect(box).to_have_class("alarm alarm-1 quiet")
    expect(box).to_contain_text("已静音")
    assert str(alert_id) not in page.evaluate("document.querySelector('[data-board]').dataset.alarm").split(",")
    page.reload()  # silenced stays silenced on this screen
    expect(page.get_by_test_id(f"alarm-{alert_id}")).to_have_class("alarm alarm-1 quiet")

    # the number is a link to dial; after the call, one click says how it went
    row = card.locator("tr[data-target]").filter(has=page.get_by_test_id("tel")).first
    number = row.get_by_test_id("tel").inner_text()
    assert row.get_by_test_id("tel").get_attribute("href") == f"tel:{number}" and number.startswith("+86")
    name = row.locator("td strong").inner_text()
    row.get_by_role("button", name="打过电话，未接通").click()
    expect(page.get_by_test_id("notice")).to_contain_text("打过电话，未接通")
    page.goto(f"/console/alerts/{alert_id}?q={name}")
    expect(page.get_by_test_id("recipient").first.get_by_test_id("call")).to_contain_text("打过电话，未接通")
    screenshot(page, "call-logged")
    assert not errors, errors
