"""The phone answer page as a grid worker uses it: open the link from the SMS, read the warning, press 收到."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col, select

from alerting.model.clock import ManualClock
from alerting.model.domain import DeliveryState, Purpose
from alerting.store.db import Database
from alerting.store.tables import Acknowledgement, Delivery, Target
from alerting.web.core import Core
from escalation.engine import EscalationEngine
from tests.alerting.web.test_api import AUDITOR, DUTY, make_core, rainstorm, serve
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases


@pytest.fixture
async def core(db: Database, clock: ManualClock, county: SmallCounty) -> Core:
    return make_core(db, clock)


@pytest.fixture
async def web(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(core) as client:
        yield client


async def issue(web: httpx.AsyncClient, **changes: Any) -> int:
    r = await web.post("/api/v1/alerts", json=rainstorm(**changes), headers=DUTY)
    assert r.status_code == 201, r.text
    alert_id: int = r.json()["id"]
    return alert_id


async def delivery(db: Database, alert_id: int, person_id: str, *, channel: str = "sms", step: int = 0) -> Delivery:
    async with db.session() as s:
        found = (
            await s.execute(
                select(Delivery).where(
                    col(Delivery.alert_id) == alert_id,
                    col(Delivery.person_id) == person_id,
                    col(Delivery.channel) == channel,
                    col(Delivery.step) == step,
                    col(Delivery.purpose) == Purpose.WARN.value,
                )
            )
        ).scalar_one()
    return found


def link(core: Core, d: Delivery) -> str:
    return f"/ack/{core.signer.sign(d.id, core.clock.now())}"


async def target_of(db: Database, d: Delivery) -> Target:
    async with db.session() as s:
        t = await s.get(Target, d.target_id)
    assert t is not None
    return t


async def answers(db: Database) -> list[Acknowledgement]:
    async with db.session() as s:
        return list((await s.execute(select(Acknowledgement))).scalars())


async def test_the_page_shows_the_warning_small_and_self_contained(web: httpx.AsyncClient, core: Core) -> None:
    alert_id = await issue(web, exercise=True)
    d = await delivery(core.db, alert_id, "g1")
    r = await web.get(link(core, d))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert len(r.content) < 20_000
    page = r.text
    assert '<html lang="zh-CN">' in page
    for shown in ("红色暴雨预警", "凤凰镇强降雨", "预计未来3小时降雨超过100毫米。", "立即转移危险区群众。", "演练"):
        assert shown in page
    assert re.search(r'<button class="big" type="submit">收到</button>', page)
    assert '<form method="post">' in page
    assert "<script" not in page
    assert not re.search(r"https?://", page)  # nothing fetched from elsewhere on a weak signal
    assert "入户户数" not in page  # only a manual task asks for households
    assert r.headers["cache-control"] == "no-store"
    # opening the link (or a messenger previewing it) is not an answer
    assert (await target_of(core.db, d)).state == "open"
    assert await answers(core.db) == []


async def test_pressing_shou_dao_answers_and_the_duty_room_sees_it(
    web: httpx.AsyncClient, core: Core, clock: ManualClock
) -> None:
    alert_id = await issue(web)
    d = await delivery(core.db, alert_id, "g1")
    r = await web.post(link(core, d), data={"moved": "", "note": ""})
    assert r.status_code == 200
    assert "已确认收到" in r.text
    assert "2026-07-01 10:00:00" in r.text  # ManualClock starts 02:00 UTC: shown in Beijing time

    t = await target_of(core.db, d)
    assert (t.state, t.answered_by, t.answer_channel, t.feedback) == ("answered", "g1", "sms", None)
    progress = (await web.get(f"/api/v1/alerts/{alert_id}", headers=AUDITOR)).json()["progress"]
    assert (progress["closed"], progress["silent"]) == (1, 4)
    recipients = (await web.get(f"/api/v1/alerts/{alert_id}/recipients", headers=AUDITOR)).json()["items"]
    g1 = next(x for x in recipients if x["person_id"] == "g1")
    assert (g1["state"], g1["answer_channel"], g1["answered_by_name"]) == ("answered", "sms", "网格员甲")

    # the link from the WeCom message answers the same loop: already closed, harmless
    wecom = await delivery(core.db, alert_id, "g1", channel="wecom")
    clock.advance(minutes=3)
    again = await web.post(link(core, wecom), data={})
    assert again.status_code == 200
    assert "无需重复" in again.text
    assert "2026-07-01 10:00:00" in again.text
    acks = await answers(core.db)
    assert sorted((a.channel, a.counted) for a in acks) == [("sms", True), ("wecom", False)]
    assert (await web.get(link(core, d))).text.count("已确认") >= 1


async def test_feedback_is_checked_and_kept(web: httpx.AsyncClient, core: Core) -> None:
    alert_id = await issue(web)
    d = await delivery(core.db, alert_id, "g2")
    url = link(core, d)
    r = await web.post(url, data={"moved": "-3", "note": "x"})
    assert r.status_code == 400
    assert "人员转移人数应在 0 到 100000 之间，您填的是 -3" in r.text
    r = await web.post(url, data={"moved": "很多"})
    assert r.status_code == 400
    assert "人员转移人数请填写整数" in r.text
    assert await answers(core.db) == []  # nothing recorded until the form is right

    r = await web.post(url, data={"moved": "41", "help_needed": "1", "note": "桥被冲毁，需要冲锋舟"})
    assert r.status_code == 200
    assert "现场情况已一并记录" in r.text
    t = await target_of(core.db, d)
    assert t.feedback == {"moved": 41, "help_needed": True, "note": "桥被冲毁，需要冲锋舟"}


async def test_a_tampered_or_expired_link_records_nothing(
    web: httpx.AsyncClient, core: Core, clock: ManualClock
) -> None:
    alert_id = await issue(web)
    d = await delivery(core.db, alert_id, "g1")
    url = link(core, d)
    tampered = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
    for r in (await web.get(tampered), await web.post(tampered, data={})):
        assert r.status_code == 400
        assert "链接无效" in r.text
    assert (await web.post("/ack/short", data={})).status_code == 400

    clock.advance(hours=73)
    for r in (await web.get(url), await web.post(url, data={})):
        assert r.status_code == 410
        assert "链接已过期" in r.text
    assert (await target_of(core.db, d)).state == "open"
    assert await answers(core.db) == []


async def test_a_post_from_another_site_is_refused(web: httpx.AsyncClient, core: Core) -> None:
    alert_id = await issue(web)
    d = await delivery(core.db, alert_id, "g1")
    url = link(core, d)
    r = await web.post(url, data={}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert await answers(core.db) == []
    r = await web.post(url, data={}, headers={"Origin": "http://jy.test"})
    assert r.status_code == 200
    assert "已确认收到" in r.text


async def test_an_escalation_names_whose_silence_it_is(web: httpx.AsyncClient, core: Core, clock: ManualClock) -> None:
    alert_id = await issue(web)
    escalation = EscalationEngine(core.db, core.clock)
    for _ in range(2):  # redial the grid worker, then call the grid's backup
        clock.advance(minutes=5)
        await escalation.run_due()
    g1 = await delivery(core.db, alert_id, "g1")
    async with core.db.session() as s:
        to_backup = (
            await s.execute(
                select(Delivery).where(
                    col(Delivery.target_id) == g1.target_id,
                    col(Delivery.person_id) == "v1-deputy",
                    col(Delivery.channel) == "sms",
                )
            )
        ).scalar_one()
    page = (await web.get(link(core, to_backup))).text
    assert "叫应升级：网格员 网格员甲（第1网格）未回复" in page
    assert "东坪村副主任" in page  # whom the link was sent to
    assert "代为确认" in page

    r = await web.post(link(core, to_backup), data={})
    assert r.status_code == 200
    silent = await target_of(core.db, to_backup)
    assert (silent.state, silent.answered_by, silent.person_id) == ("answered_for", "v1-deputy", "g1")


async def test_a_village_task_asks_for_households(web: httpx.AsyncClient, core: Core, clock: ManualClock) -> None:
    await issue(web)
    escalation = EscalationEngine(core.db, core.clock)
    for _ in range(2):  # the siren never confirms: resend, then the village head goes and beats the gong
        clock.advance(minutes=1)
        await escalation.run_due()
    async with core.db.session() as s:
        tasks = (await s.execute(select(Delivery).where(col(Delivery.purpose) == Purpose.TASK.value))).scalars().all()
    assert {(t.person_id, t.channel) for t in tasks} == {("v1-head", "manual")}
    task = tasks[0]
    page = (await web.get(link(core, task))).text
    assert "人工任务：鸣锣吹哨（东坪村）" in page
    assert "入户户数" in page and "必填" in page
    r = await web.post(link(core, task), data={})  # the big 收到 alone: a task is answered with what was done
    assert r.status_code == 400
    assert "请填写入户户数（没有请填 0）" in r.text and "请填写人员转移人数（没有请填 0）" in r.text
    assert (await target_of(core.db, task)).state == "open"
    r = await web.post(link(core, task), data={"households": "23", "moved": "41"})
    assert r.status_code == 200
    assert (await target_of(core.db, task)).feedback == {"moved": 41, "households": 23}
    r = await web.post(link(core, task), data={"households": "999999"})
    assert r.status_code == 400
    assert "入户户数应在 0 到 20000 之间" in r.text


async def test_after_a_lift_the_page_says_no_answer_is_needed(web: httpx.AsyncClient, core: Core) -> None:
    alert_id = await issue(web)
    async with core.db.session() as s:  # the dispatcher sent the first wave
        await s.execute(update(Delivery).values(state=DeliveryState.SENT.value))
    r = await web.post(f"/api/v1/alerts/{alert_id}/cancel", json={"reason": "雨情减弱"}, headers=DUTY)
    assert r.json()["lift_notices"] > 0

    warning = await delivery(core.db, alert_id, "g1")
    page = (await web.get(link(core, warning))).text
    assert "该预警已解除，无需回复" in page
    assert 'class="big"' not in page
    late = await web.post(link(core, warning), data={})
    assert late.status_code == 200
    assert "该预警已解除，无需回复" in late.text
    assert (await target_of(core.db, warning)).state == "cancelled"  # a late answer does not reopen or close it

    async with core.db.session() as s:
        lift = (
            (
                await s.execute(
                    select(Delivery).where(col(Delivery.purpose) == Purpose.LIFT.value, col(Delivery.person_id) == "g1")
                )
            )
            .scalars()
            .first()
        )
    assert lift is not None
    for r in (await web.get(link(core, lift)), await web.post(link(core, lift), data={})):
        assert r.status_code == 200
        assert "预警已解除，无需回复" in r.text
        assert "雨情减弱" in r.text
        assert 'class="big"' not in r.text
    assert [a.delivery_id for a in await answers(core.db)] == [warning.id]  # the lift notice recorded nothing


LONG_TEXT = (
    "巫溪县气象台发布暴雨红色预警：受强对流云团影响，预计未来3小时凤凰镇、宁厂镇将出现100毫米以上强降雨，"
    "局地伴有雷电和8级以上大风，山洪、泥石流、滑坡等灾害风险极高。"
) * 4
LONG_INSTRUCTIONS = (
    "一、立即组织危险区、沿河低洼地带和地质灾害隐患点群众转移到安全地带；二、停止户外作业和涉水活动；"
    "三、网格员逐户敲门确认，老人、儿童、病人优先；四、转移情况及时报告乡镇值班室。"
) * 3


async def test_a_long_red_alert_still_fits_one_small_response(web: httpx.AsyncClient, core: Core) -> None:
    for text, instructions in ((LONG_TEXT, LONG_INSTRUCTIONS), ("雨" * 2000, "撤" * 1000)):  # typical, then longest
        alert_id = await issue(web, title="凤凰镇山洪红色预警", text=text, instructions=instructions, exercise=True)
        r = await web.get(link(core, await delivery(core.db, alert_id, "g1")))
        assert r.status_code == 200
        assert text in r.text and instructions in r.text
        assert len(r.content) < 20_000, len(r.content)
        assert "<script" not in r.text and "<img" not in r.text
        # nothing else to fetch; the empty data: icon keeps phones from asking for /favicon.ico
        assert not re.search(r'(src|href)="(?!data:)|url\(|@import|https?://', r.text)


async def test_a_long_task_page_fits_too(web: httpx.AsyncClient, core: Core, clock: ManualClock) -> None:
    await issue(web, text=LONG_TEXT, instructions=LONG_INSTRUCTIONS)
    escalation = EscalationEngine(core.db, core.clock)
    for _ in range(2):
        clock.advance(minutes=1)
        await escalation.run_due()
    async with core.db.session() as s:
        task = (await s.execute(select(Delivery).where(col(Delivery.purpose) == Purpose.TASK.value))).scalars().first()
    assert task is not None
    r = await web.get(link(core, task))
    assert "入户户数" in r.text and LONG_INSTRUCTIONS in r.text
    assert len(r.content) < 20_000, len(r.content)


async def test_answering_twice_says_when_and_asking_for_help_says_where_it_went(
    web: httpx.AsyncClient, core: Core, clock: ManualClock
) -> None:
    alert_id = await issue(web)
    url = link(core, await delivery(core.db, alert_id, "g1"))
    first = await web.post(url, data={})
    assert "✓ 已确认收到" in first.text
    assert "求助" not in first.text
    clock.advance(minutes=7)
    again = await web.post(url, data={})
    assert again.status_code == 200
    assert "已收到，无需重复" in again.text
    assert "您已于 2026-07-01 10:00:00（北京时间）确认收到" in again.text  # the first answer's time, not now
    more = await web.post(url, data={"help_needed": "1", "note": "河水漫过桥面"})
    assert "补充情况已记录" in more.text
    assert "已报现场情况：需要支援，备注：河水漫过桥面" in more.text
    assert "求助已报乡镇值班和县值班室" in more.text
    t = await target_of(core.db, await delivery(core.db, alert_id, "g1"))
    assert (t.state, t.answered_at is not None) == ("answered", True)
    assert sum(a.counted for a in await answers(core.db)) == 1


async def test_a_phone_retrying_the_same_answer_writes_nothing_new(
    web: httpx.AsyncClient, core: Core, clock: ManualClock
) -> None:
    """One bar of signal: the answer went through but the page did not come back, so the phone sends it again."""
    alert_id = await issue(web)
    url = link(core, await delivery(core.db, alert_id, "g1"))
    form = {"moved": "3", "note": "已通知沿河住户"}
    first = await web.post(url, data=form)
    assert "✓ 已确认收到" in first.text
    clock.advance(seconds=20)
    retries = [await web.post(url, data=form) for _ in range(3)]
    assert all(r.status_code == 200 and "已收到，无需重复" in r.text for r in retries)
    assert [(a.channel, a.counted) for a in await answers(core.db)] == [("sms", True)]  # one answer, not four
    # something new said over the same link is kept
    more = await web.post(url, data={"help_needed": "1", "note": "桥被冲毁"})
    assert "补充情况已记录" in more.text
    assert len(await answers(core.db)) == 2


async def test_need_help_is_a_button_of_its_own_and_the_duty_room_s_number_is_on_the_page(
    web: httpx.AsyncClient, core: Core
) -> None:
    alert_id = await issue(web)
    url = link(core, await delivery(core.db, alert_id, "g1"))
    page = (await web.get(url)).text
    assert '<button class="askhelp" type="submit" name="help_needed" value="1">需要帮助</button>' in page
    assert "tel:" not in page, "no number configured: none shown"

    core.duty_phone = "023-51521234"
    page = (await web.get(url)).text
    assert '请拨打县值班室：<a href="tel:023-51521234">023-51521234</a>' in page

    pressed = await web.post(url, data={"help_needed": "1"})  # what the 需要帮助 button sends, nothing else
    assert pressed.status_code == 200
    assert "✓ 已确认收到" in pressed.text and "求助已报乡镇值班和县值班室" in pressed.text
    t = await target_of(core.db, await delivery(core.db, alert_id, "g1"))
    assert (t.state, (t.feedback or {}).get("help_needed")) == ("answered", True)
