"""The phone answer page as a grid worker uses it: open the link from the SMS, read the warning, press 收到."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col, select

from alerting.clock import ManualClock
from alerting.core import Core
from alerting.domain import DeliveryState, Purpose
from alerting.store.db import Database
from alerting.store.tables import Acknowledgement, Delivery, Target
from escalation.engine import EscalationEngine
from tests.alerting.test_api import AUDITOR, DUTY, make_core, rainstorm, serve
from tests.conftest import SmallCounty


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
    assert "入户户数" in page
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
