"""Updating an alert: raised levels reach everyone again; the same content does not bother those who answered."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.issue import alerts as alerts_module
from alerting.issue.alerts import AlertChange, AlertRequest, AlertService, Issued
from alerting.model.clock import ManualClock
from alerting.model.domain import AlertStatus, ChannelKind, Level, TargetState
from alerting.store.db import Database
from alerting.store.tables import Delivery, Target
from config.wiring import AssembledEngine
from tests.conftest import SmallCounty
from tests.harness import outbox, sandbox_engine

pytestmark = pytest.mark.both_databases

VILLAGE = "500238101001"  # 东坪村: v1-head, g1, g2


def orange() -> AlertRequest:
    return AlertRequest(level=Level.ORANGE, hazard="暴雨", title="东坪村暴雨橙色预警", text="强降雨。", units=[VILLAGE])


async def answer(engine: AssembledEngine, alert_id: int, person_id: str, clock: ManualClock) -> None:
    async with engine.db.session() as s:
        sms = (
            await s.execute(
                select(Delivery).where(
                    col(Delivery.alert_id) == alert_id,
                    col(Delivery.person_id) == person_id,
                    col(Delivery.channel) == "sms",
                )
            )
        ).scalar_one()
    clock.advance(seconds=60)
    await engine.acks.answer_delivery(sms.id, channel=ChannelKind.SMS, at=clock.now())


async def states(db: Database, alert_id: int) -> dict[str, str]:
    async with db.session() as s:
        rows = (await s.execute(select(Target).where(col(Target.alert_id) == alert_id))).scalars()
        return {t.person_id or t.device_id or "": t.state for t in rows}


async def test_raising_the_level_reaches_everyone_again_and_stops_the_old_alert(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    first = await engine.alerts.trigger(orange(), actor="duty:test")
    await engine.settle()
    await answer(engine, first.alert_id, "g1", clock)
    sent_before = len(outbox(engine, ChannelKind.SMS))

    raised = await engine.alerts.update(first.alert_id, AlertChange(level=Level.RED), actor="duty:test")
    await engine.settle()
    assert (await engine.alerts.get(first.alert_id)).status == AlertStatus.SUPERSEDED
    assert (await engine.alerts.get(raised.alert_id)).supersedes_id == first.alert_id
    # g1 answered the orange alert, but red is new news: g1 is called again, with everyone else
    assert set(outbox(engine, ChannelKind.SMS)[sent_before:]) == {"g1", "g2", "v1-head"}
    assert set((await states(db, raised.alert_id)).values()) == {TargetState.OPEN.value}
    # the old alert escalates no more
    clock.advance(minutes=15)
    await engine.settle()
    async with db.session() as s:
        old_after = (
            (await s.execute(select(Delivery).where(col(Delivery.alert_id) == first.alert_id, col(Delivery.step) > 0)))
            .scalars()
            .all()
        )
    assert old_after == []


async def test_the_same_level_again_carries_answers_over_and_calls_only_the_silent(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    first = await engine.alerts.trigger(orange(), actor="duty:test")
    await engine.settle()
    await answer(engine, first.alert_id, "g1", clock)
    sent_before = len(outbox(engine, ChannelKind.SMS))

    updated = await engine.alerts.update(first.alert_id, AlertChange(text="强降雨持续，河水上涨。"), actor="duty:test")
    await engine.settle()
    assert set(outbox(engine, ChannelKind.SMS)[sent_before:]) == {"g2", "v1-head"}
    now = await states(db, updated.alert_id)
    assert now["g1"] == TargetState.ANSWERED.value and now["g2"] == TargetState.OPEN.value
    assert (await engine.alerts.get(updated.alert_id)).text == "强降雨持续，河水上涨。"


@pytest.mark.parametrize("crash_after_first_commit", [False, True])
async def test_a_paged_update_keeps_each_answer_on_every_page_even_after_a_crash(
    db: Database,
    clock: ManualClock,
    county: SmallCounty,
    monkeypatch: pytest.MonkeyPatch,
    crash_after_first_commit: bool,
) -> None:
    # pages of one grid worker: g1 goes in the update's first commit, g2 on a page after it
    monkeypatch.setattr(alerts_module, "FIRST_GRID_WORKERS", 1)
    monkeypatch.setattr(alerts_module, "PAGE", 1)
    engine = sandbox_engine(db, clock)
    first = await engine.alerts.trigger(orange(), actor="duty:test")
    await engine.settle()
    await answer(engine, first.alert_id, "g1", clock)
    await answer(engine, first.alert_id, "g2", clock)
    if crash_after_first_commit:  # the issuing process dies once the first commit is in: nobody plans the pages

        async def dies(self: AlertService, issued: Issued, page: object, now: object) -> Issued:
            return issued

        monkeypatch.setattr(AlertService, "_plan_rest", dies)
    sent_before = len(outbox(engine, ChannelKind.SMS))

    updated = await engine.alerts.update(first.alert_id, AlertChange(text="强降雨，山洪风险高。"), actor="duty:test")
    if crash_after_first_commit:
        monkeypatch.undo()
        assert await sandbox_engine(db, clock).alerts.resume_planning() == 1  # the next process finishes the plan
    await engine.settle()

    got = await states(db, updated.alert_id)
    assert got["g1"] == got["g2"] == TargetState.ANSWERED  # both answers carried, on the first commit and the page
    assert got["v1-head"] == TargetState.OPEN
    assert outbox(engine, ChannelKind.SMS)[sent_before:] == ["v1-head"]  # the two who answered are not texted again
    assert (await engine.alerts.get(updated.alert_id)).planning_pending is False
    await engine.stop()


async def test_an_update_after_the_responsible_people_answered_goes_out(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    # the first rows of the update's first commit are the responsible people above the grid: answered, they are
    # written with their answer beside rows without one, in one insert
    engine = sandbox_engine(db, clock)
    first = await engine.alerts.trigger(orange(), actor="duty:test")
    await engine.settle()
    await answer(engine, first.alert_id, "v1-head", clock)
    sent_before = len(outbox(engine, ChannelKind.SMS))

    updated = await engine.alerts.update(first.alert_id, AlertChange(text="强降雨，山洪风险高。"), actor="duty:test")
    await engine.settle()

    got = await states(db, updated.alert_id)
    assert got["v1-head"] == TargetState.ANSWERED and got["g1"] == got["g2"] == TargetState.OPEN
    assert sorted(outbox(engine, ChannelKind.SMS)[sent_before:]) == ["g1", "g2"]
    await engine.stop()
