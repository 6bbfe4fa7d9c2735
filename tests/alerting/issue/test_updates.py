"""Updating an alert: raised levels reach everyone again; the same content does not bother those who answered."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.issue.alerts import AlertChange, AlertRequest
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


async def answer_g1(engine: AssembledEngine, alert_id: int, clock: ManualClock) -> None:
    async with engine.db.session() as s:
        sms = (
            await s.execute(
                select(Delivery).where(
                    col(Delivery.alert_id) == alert_id, col(Delivery.person_id) == "g1", col(Delivery.channel) == "sms"
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
    await answer_g1(engine, first.alert_id, clock)
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
    await answer_g1(engine, first.alert_id, clock)
    sent_before = len(outbox(engine, ChannelKind.SMS))

    updated = await engine.alerts.update(first.alert_id, AlertChange(text="强降雨持续，河水上涨。"), actor="duty:test")
    await engine.settle()
    assert set(outbox(engine, ChannelKind.SMS)[sent_before:]) == {"g2", "v1-head"}
    now = await states(db, updated.alert_id)
    assert now["g1"] == TargetState.ANSWERED.value and now["g2"] == TargetState.OPEN.value
    assert (await engine.alerts.get(updated.alert_id)).text == "强降雨持续，河水上涨。"
