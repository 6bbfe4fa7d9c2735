"""One 鸣锣吹哨 per village: a village head whose siren and broadcast zone both stay silent is sent out once.

A red warning on 凤凰镇 reaches the siren and the broadcast zone of each of its two villages, and none of the four
answers. After the first window and the resend, the plan hands each device to its village head. What the village
head and the auditor rely on: each head gets one task (not one per device), the second device's record says whose
task stands in for it; when 东坪村's head answers with 12 households and 30 people moved, both of 东坪村's devices
are answered, the report counts 12 households once, and 西坪村 is still waiting.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.model.access import AccountRole, Principal
from alerting.model.clock import ManualClock
from alerting.model.domain import TASK_SHARED_WITH, ChannelKind, DeliveryState, TargetKind, TargetState
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Delivery, Target
from alerting.views.report.build import build_report
from alerting.views.timeline import read_alert
from config.wiring import AssembledEngine
from tests.conftest import SmallCounty
from tests.harness import RED, sandbox_engine

pytestmark = pytest.mark.both_databases


async def to_the_task_step(engine: AssembledEngine, clock: ManualClock, *, one_batch: bool) -> None:
    for _ in range(2):  # the devices' first window, then the resend's
        clock.advance(timedelta(seconds=61))
        if one_batch:
            await engine.escalation.run_due()
        else:  # each deadline in a transaction of its own: the second device finds the task in the store
            for claim in await engine.escalation.claims.claim():
                await engine.escalation.fire(claim)
        await engine.dispatcher.drain()


@pytest.mark.parametrize("one_batch", [True, False], ids=["same-batch", "one-by-one"])
async def test_a_village_head_is_sent_one_task_for_all_the_silent_devices_of_the_village(
    db: Database, clock: ManualClock, county: SmallCounty, one_batch: bool
) -> None:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(RED, actor="t")
    await engine.dispatcher.drain()
    await to_the_task_step(engine, clock, one_batch=one_batch)

    async with db.session() as s:
        tasks = list(
            (
                await s.execute(
                    select(Delivery).where(
                        col(Delivery.alert_id) == issued.alert_id, col(Delivery.channel) == ChannelKind.MANUAL.value
                    )
                )
            ).scalars()
        )
        devices = {
            t.id: t
            for t in (
                await s.execute(
                    select(Target).where(
                        col(Target.alert_id) == issued.alert_id, col(Target.kind) == TargetKind.DEVICE.value
                    )
                )
            ).scalars()
        }
        escalated = (await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == "target.escalated"))).scalars()
        shared_entries = [e for e in escalated if e.data.get("shared_task_of")]
    sent = [d for d in tasks if d.state != DeliveryState.CANCELLED.value]
    shared = [d for d in tasks if d.state == DeliveryState.CANCELLED.value]
    heads = [d.person_id or "" for d in sent]
    assert sorted(set(heads)) == ["v1-head", "v2-head"]
    assert len(heads) == len({(d.person_id, d.channel) for d in sent}), "a village head was sent the task twice"
    assert len(devices) == 4 and len(shared) == 2 and len(shared_entries) == 2
    by_target = {d.target_id: d for d in sent}
    for d in shared:  # the second device names the task that stands in for it, in the same village
        assert d.detail is not None
        primary = str(d.detail[TASK_SHARED_WITH])
        assert primary in by_target and devices[primary].unit_code == devices[d.target_id].unit_code

    v1_task = next(d for d in sent if d.person_id == "v1-head")
    v1 = devices[v1_task.target_id].unit_code
    await engine.acks.answer_delivery(
        v1_task.id, channel=ChannelKind.MANUAL, at=clock.now(), feedback={"households": 12, "moved": 30}
    )
    async with db.session() as s:
        states = {
            t.id: (t.unit_code, t.state, t.answered_by)
            for t in (await s.execute(select(Target).where(col(Target.id).in_(list(devices))))).scalars()
        }
    answered = {TargetState.ANSWERED.value, TargetState.ANSWERED_FOR.value}
    assert all(state in answered and by == "v1-head" for unit, state, by in states.values() if unit == v1)
    assert all(state == TargetState.OPEN.value for unit, state, _ in states.values() if unit != v1)

    report = await build_report(db, issued.alert_id, now=clock.now())
    assert (report.summary.households, report.summary.moved) == (12, 30)  # once, not once per device
    assert report.summary.failed == 4  # every device was written off and stood in for
    view = await read_alert(db, Principal(AccountRole.DUTY, "user:duty", "王值班"), issued.alert_id)
    assert view is not None
    (gong,) = view.tasks
    assert (gong.task, gong.assigned, gong.answered, gong.households) == ("鸣锣吹哨", 2, 1, 12)
    await engine.stop()
