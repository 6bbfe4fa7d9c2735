"""What an alert replaced or lifted still has going is stopped in pages after the commit that ended it: the new
alert's first wave or the lift notices go out first, nothing of the old alert goes out meanwhile, and a process
that dies part-way leaves a stop the next start finishes. Pages of two rows, so the small county needs several."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alerting.issue import stopping
from alerting.issue.alerts import AlertChange, AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, DeadlineState, DeliveryState, Level, Purpose, TargetState
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Deadline, Delivery, Target
from channels.sandbox import SandboxChannel
from config.wiring import AssembledEngine
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

pytestmark = pytest.mark.both_databases

FENGHUANG = "500238101"


def orange() -> AlertRequest:
    title = "凤凰镇暴雨橙色预警"
    return AlertRequest(level=Level.ORANGE, hazard="暴雨", title=title, text="强降雨。", units=[FENGHUANG])


async def still_going(db: Database, alert_id: int) -> tuple[int, int, int]:
    """(warnings and tasks not handed over, pending steps, open targets) of the alert."""
    async with db.session() as s:
        unsent = await s.scalar(
            select(func.count()).where(
                col(Delivery.alert_id) == alert_id,
                col(Delivery.state).in_([DeliveryState.PENDING.value, DeliveryState.SENDING.value]),
                col(Delivery.handed_at).is_(None),
                col(Delivery.purpose).notin_([Purpose.LIFT.value, Purpose.HELP.value]),
            )
        )
        steps = await s.scalar(
            select(func.count()).where(
                col(Deadline.alert_id) == alert_id, col(Deadline.state) == DeadlineState.PENDING.value
            )
        )
        targets = await s.scalar(
            select(func.count()).where(col(Target.alert_id) == alert_id, col(Target.state) == TargetState.OPEN.value)
        )
    return int(unsent or 0), int(steps or 0), int(targets or 0)


async def stopped_on_record(db: Database, alert_id: int) -> list[dict[str, Any]]:
    async with db.session() as s:
        rows = await s.execute(
            select(AuditEvent).where(col(AuditEvent.kind) == "alert.stopped", col(AuditEvent.alert_id) == alert_id)
        )
        return [e.data for e in rows.scalars()]


def sms_sandbox(engine: AssembledEngine) -> SandboxChannel:
    channel = engine.channels[ChannelKind.SMS]
    assert isinstance(channel, SandboxChannel)
    return channel


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stopping, "STOP_PAGE", 2)


@pytest.mark.usefixtures("small_pages")
async def test_an_update_stops_the_old_alert_in_pages_and_none_of_it_goes_out(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    first = await engine.alerts.trigger(orange(), actor="duty:test")  # nothing sent yet: all of it is queued
    unsent, steps, targets = await still_going(db, first.alert_id)
    assert unsent > 2 and steps > 2 and targets > 2, "the county is too small to need several pages"

    second = await engine.alerts.update(first.alert_id, AlertChange(text="雨势加大。"), actor="duty:test")
    assert await still_going(db, first.alert_id) == (0, 0, 0)
    assert await stopped_on_record(db, first.alert_id) == [
        {"stopped": unsent, "why": f"superseded by alert {second.alert_id}"}
    ]
    await engine.settle()
    sent = [(r.message.alert_id, r.message.text) for r in sms_sandbox(engine).outbox]
    assert sent and all(alert_id == second.alert_id and "雨势加大" in text for alert_id, text in sent), (
        "the replaced alert's text went out"
    )


@pytest.mark.usefixtures("small_pages")
async def test_a_lift_stops_what_was_queued_and_reports_how_many(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    first = await engine.alerts.trigger(orange(), actor="duty:test")
    unsent, _, _ = await still_going(db, first.alert_id)
    lifted = await engine.alerts.cancel(first.alert_id, actor="duty:test", reason="雨停")
    assert lifted.cancelled_deliveries == unsent
    assert lifted.lift_notices == 0, "nothing had gone out: there is nobody to tell it is lifted"
    assert await still_going(db, first.alert_id) == (0, 0, 0)
    await engine.settle()
    assert list(sms_sandbox(engine).outbox) == []


@pytest.mark.usefixtures("small_pages")
async def test_a_stop_cut_short_by_a_dying_process_is_finished_at_the_next_start(
    db: Database, clock: ManualClock, county: SmallCounty, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sandbox_engine(db, clock)
    first = await engine.alerts.trigger(orange(), actor="duty:test")
    real_page = stopping.stop_page
    pages = 0

    async def dies_after_two_pages(*args: Any) -> tuple[int, int]:
        nonlocal pages
        pages += 1
        if pages > 2:
            raise SystemExit("the process died here")
        return await real_page(*args)

    monkeypatch.setattr(stopping, "stop_page", dies_after_two_pages)
    with pytest.raises(SystemExit):
        await engine.alerts.update(first.alert_id, AlertChange(level=Level.RED), actor="duty:test")
    left = await still_going(db, first.alert_id)
    assert left[2] > 0, "the stop finished before the simulated death: nothing is tested"
    assert await stopping.unfinished(db) == [first.alert_id]

    monkeypatch.setattr(stopping, "stop_page", real_page)
    restarted = sandbox_engine(db, clock)
    await restarted.alerts.resume_planning()
    assert await still_going(db, first.alert_id) == (0, 0, 0)
    assert await stopping.unfinished(db) == []
    [record] = await stopped_on_record(db, first.alert_id)
    assert record["why"] == "alert ended (stopped after a restart)"
