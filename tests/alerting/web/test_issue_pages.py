"""Issuing from the console without a browser: the form, its errors, the preview, the red confirmation, scope."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alerting.model.access import AccountRole
from alerting.model.clock import ManualClock
from alerting.store.db import Database
from alerting.store.tables import Alert, AuditEvent
from alerting.web.core import Core
from tests.alerting.web.test_api import make_core
from tests.conftest import SmallCounty

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
async def core(db: Database, clock: ManualClock, county: SmallCounty) -> Core:
    c = make_core(db, clock)
    for name, role, unit in (
        ("duty", AccountRole.DUTY, None),
        ("auditor", AccountRole.AUDITOR, None),
        ("dongping", AccountRole.TOWNSHIP, "500238101001"),  # bound to 东坪村
    ):
        await c.accounts.create(name, f"{name}-password-1", role=role, unit_code=unit, actor="test")
    return c


@pytest.fixture
async def browser(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    from alerting.web.app import create_app

    transport = httpx.ASGITransport(app=create_app(core))
    async with httpx.AsyncClient(transport=transport, base_url="http://jy.test") as client:
        yield client


async def sign_in(client: httpx.AsyncClient, name: str) -> str:
    """Sign in; returns the session's CSRF token as the issue form carries it."""
    r = await client.post("/console/sign-in", data={"username": name, "password": f"{name}-password-1"})
    assert r.status_code == 303, r.text
    page = await client.get("/console/alerts/new")
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def filled(csrf: str, **changes: str | list[str]) -> dict[str, str | list[str]]:
    form: dict[str, str | list[str]] = {
        "csrf": csrf,
        "level": "yellow",
        "hazard": "暴雨",
        "title": "东坪村暴雨黄色预警",
        "text": "预计未来6小时降雨量将达50毫米以上。",
        "instructions": "加强巡查。",
        "units": ["500238101001"],
    }
    return form | changes


async def alerts(db: Database) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(Alert)) or 0)


async def test_the_form_offers_template_text_and_the_tree(browser: httpx.AsyncClient) -> None:
    await sign_in(browser, "duty")
    r = await browser.get("/console/alerts/new", params={"hazard": "山洪", "level": "red", "units": "500238101"})
    assert r.status_code == 200
    assert 'value="凤凰镇山洪红色预警"' in r.text  # the title template with the chosen unit's name
    assert "发生山洪灾害的可能性很大" in r.text
    assert 'value="500238101002"' in r.text  # 西坪村 in the tree


async def test_the_template_button_reloads_the_text_for_the_chosen_hazard(browser: httpx.AsyncClient) -> None:
    csrf = await sign_in(browser, "duty")
    form = filled(csrf, hazard="大风", level="blue", title="自己写的", do="template")
    r = await browser.post("/console/alerts/preview", data=form)
    assert r.status_code == 200
    assert 'value="东坪村大风蓝色预警"' in r.text
    assert "自己写的" not in r.text


async def test_searching_keeps_what_was_typed(browser: httpx.AsyncClient) -> None:
    csrf = await sign_in(browser, "duty")
    r = await browser.post("/console/alerts/preview", data=filled(csrf, q="西坪", title="我改过的标题", do="find"))
    assert r.status_code == 200
    assert 'value="我改过的标题"' in r.text
    found = r.text.split('data-testid="found"')[1].split('data-testid="tree"')[0]
    assert "西坪村" in found
    assert 'value="500238101002"' in found


async def test_errors_name_the_field_and_keep_the_form(browser: httpx.AsyncClient, db: Database) -> None:
    csrf = await sign_in(browser, "duty")
    r = await browser.post("/console/alerts/preview", data=filled(csrf, title="", text="保留这段文字", units=[]))
    assert r.status_code == 422
    assert "请填写标题" in r.text
    assert "请至少选择一个目标单位" in r.text
    assert "保留这段文字" in r.text
    r = await browser.post("/console/alerts/preview", data=filled(csrf, units=["500238101001", "123"]))
    assert r.status_code == 422
    assert "找不到这些单位代码：123" in r.text
    assert await alerts(db) == 0


async def test_the_preview_shows_counts_and_plan_and_writes_nothing(browser: httpx.AsyncClient, db: Database) -> None:
    csrf = await sign_in(browser, "duty")
    r = await browser.post("/console/alerts/preview", data=filled(csrf, level="red", units=["500238101"]))
    assert r.status_code == 200
    people = re.search(r'data-testid="count-people">(\d+)<', r.text)
    assert people and people.group(1) == "6"
    assert "备岗人员" in r.text  # the plan's third step
    assert "我已核实，确认发布红色预警" in r.text
    assert await alerts(db) == 0


async def test_red_needs_the_confirmation_box(browser: httpx.AsyncClient, db: Database) -> None:
    csrf = await sign_in(browser, "duty")
    red = filled(csrf, level="red", units=["500238101"])
    r = await browser.post("/console/alerts", data=red)
    assert r.status_code == 422
    assert "请勾选" in r.text
    assert await alerts(db) == 0
    r = await browser.post("/console/alerts", data=red | {"confirm_red": "1"})
    assert r.status_code == 303
    async with db.session() as s:
        alert = (await s.execute(select(Alert))).scalar_one()
        issued_by = await s.scalar(
            select(col(AuditEvent.actor)).where(
                col(AuditEvent.kind) == "alert.triggered", col(AuditEvent.alert_id) == alert.id
            )
        )
    assert r.headers["location"] == f"/console/alerts/{alert.id}"
    assert alert.level == "red"
    assert alert.created_by == issued_by == "user:duty"
    notice = await browser.get("/console/alerts/new")
    assert f"已发布预警 #{alert.id}，正在送达 6 人" in notice.text


async def test_a_yellow_warning_needs_no_confirmation(browser: httpx.AsyncClient, db: Database) -> None:
    csrf = await sign_in(browser, "duty")
    r = await browser.post("/console/alerts", data=filled(csrf, exercise="1"))
    assert r.status_code == 303
    async with db.session() as s:
        alert = (await s.execute(select(Alert))).scalar_one()
    assert alert.exercise
    assert alert.target_units == ["500238101001"]


async def test_an_auditor_cannot_open_or_post_the_form(browser: httpx.AsyncClient, db: Database) -> None:
    await sign_in_any(browser, "auditor")
    page = await browser.get("/console/alerts/new")
    assert page.status_code == 403
    assert "不能发布" in page.text
    assert 'href="/console/alerts/new"' not in page.text
    csrf = CSRF.search((await browser.get("/console/")).text)
    assert csrf
    r = await browser.post("/console/alerts", data=filled(csrf.group(1)))
    assert r.status_code == 403
    assert await alerts(db) == 0


async def sign_in_any(client: httpx.AsyncClient, name: str) -> None:
    r = await client.post("/console/sign-in", data={"username": name, "password": f"{name}-password-1"})
    assert r.status_code == 303


async def test_a_township_officer_stays_inside_their_subtree(browser: httpx.AsyncClient, db: Database) -> None:
    csrf = await sign_in(browser, "dongping")
    page = await browser.get("/console/alerts/new")
    assert 'value="500238101001"' in page.text
    assert 'value="500238101002"' not in page.text  # 西坪村 is not theirs to pick
    r = await browser.post("/console/alerts/preview", data=filled(csrf, q="西坪", do="find"))
    assert 'data-testid="nothing-found"' in r.text
    units = (await browser.get("/console/alerts/units", params={"q": "坪村"})).json()
    assert [u["code"] for u in units["items"]] == ["500238101001"]
    for path in ("/console/alerts/preview", "/console/alerts"):
        r = await browser.post(path, data=filled(csrf, units=["500238101001", "500238101002"], confirm_red="1"))
        assert r.status_code == 403, path
        assert "500238101002" in r.text
    assert await alerts(db) == 0
    r = await browser.post("/console/alerts", data=filled(csrf, units=["50023810100101"]))
    assert r.status_code == 303


TOKEN = re.compile(r'name="issue_token" value="([^"]+)"')


async def previewed(client: httpx.AsyncClient, csrf: str, **changes: str | list[str]) -> dict[str, str | list[str]]:
    """The publish form as the preview page hands it to the browser: the typed fields and its one-time token."""
    page = await client.post("/console/alerts/preview", data=filled(csrf, **changes))
    assert page.status_code == 200, page.text
    token = TOKEN.search(page.text)
    assert token, page.text
    return filled(csrf, **changes) | {"issue_token": token.group(1)}


async def test_publishing_the_same_form_twice_shows_the_first_alert(browser: httpx.AsyncClient, db: Database) -> None:
    csrf = await sign_in(browser, "duty")
    form = await previewed(browser, csrf)
    first = await browser.post("/console/alerts", data=form)
    assert first.status_code == 303
    await browser.get(first.headers["location"])  # the notice of the first is read

    again = await browser.post("/console/alerts", data=form)  # a reload, or the back button and 发布 again

    assert again.status_code == 303
    assert again.headers["location"] == first.headers["location"]
    page = await browser.get(again.headers["location"])
    assert "已经发布过，这次重复提交没有再次发布" in page.text
    assert await alerts(db) == 1


async def test_a_double_click_on_publish_issues_one_alert(browser: httpx.AsyncClient, db: Database) -> None:
    csrf = await sign_in(browser, "duty")
    form = await previewed(browser, csrf)
    answers = await asyncio.gather(*(browser.post("/console/alerts", data=form) for _ in range(2)))
    assert [r.status_code for r in answers] == [303, 303]
    assert answers[0].headers["location"] == answers[1].headers["location"]
    assert await alerts(db) == 1


async def test_each_preview_hands_out_its_own_token(browser: httpx.AsyncClient, db: Database) -> None:
    """Going back to edit and previewing again is a new publish form: it issues a new alert."""
    csrf = await sign_in(browser, "duty")
    first = await previewed(browser, csrf)
    second = await previewed(browser, csrf, title="东坪村暴雨黄色预警（更新）")
    assert first["issue_token"] != second["issue_token"]
    for form in (first, second):
        assert (await browser.post("/console/alerts", data=form)).status_code == 303
    assert await alerts(db) == 2


async def test_a_used_token_with_other_content_is_not_issued(browser: httpx.AsyncClient, db: Database) -> None:
    csrf = await sign_in(browser, "duty")
    form = await previewed(browser, csrf)
    assert (await browser.post("/console/alerts", data=form)).status_code == 303

    r = await browser.post("/console/alerts", data=form | {"level": "orange"})

    assert r.status_code == 422
    assert "这张表单已用于发布预警 #1" in r.text
    fresh = TOKEN.search(r.text)
    assert fresh and fresh.group(1) != form["issue_token"]  # confirming what is shown now is a new form
    assert await alerts(db) == 1
