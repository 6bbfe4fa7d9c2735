"""The closed loop on a small county: trigger, plan, send, answer, escalate, lift."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import AlertStatus, ChannelKind, DeliveryState, Level, TargetState
from alerting.store.db import Database
from alerting.store.tables import Delivery, Target
from channels.sandbox import SandboxChannel
from config.wiring import AssembledEngine
from tests.conftest import SmallCounty
from tests.harness import outbox, sandbox_engine

pytestmark = pytest.mark.both_databases


@pytest.fixture
async def engine(db: Database, clock: ManualClock, county: SmallCounty) -> AsyncIterator[AssembledEngine]:
    e = sandbox_engine(db, clock)
    await e.start(loops=False)
    yield e
    await e.stop()


def rainstorm(level: Level, units: list[str]) -> AlertRequest:
    return AlertRequest(
        level=level,
        hazard="暴雨",
        title="凤凰镇强降雨",
        text="预计未来3小时降雨超过100毫米。",
        instructions="立即转移危险区群众。",
        units=units,
    )


async def targets_by_person(engine: AssembledEngine, alert_id: int) -> dict[str, Target]:
    async with engine.db.session() as s:
        rows = (await s.execute(select(Target).where(col(Target.alert_id) == alert_id))).scalars()
        return {t.person_id or t.device_id or "": t for t in rows}


async def test_red_alert_reaches_every_responsible_person_and_device_in_the_subtree(engine: AssembledEngine) -> None:
    issued = await engine.alerts.trigger(rainstorm(Level.RED, ["500238101"]), actor="duty:test")
    targets = await targets_by_person(engine, issued.alert_id)
    # primaries of township, villages and grids; not the county above, not the backups
    assert {p for p, t in targets.items() if t.kind == "person"} == {"tw-duty", "v1-head", "v2-head", "g1", "g2", "g3"}
    assert {p for p, t in targets.items() if t.kind == "device"} == {
        "siren-500238101001",
        "siren-500238101002",
        "bz-500238101001",
        "bz-500238101002",
    }
    # red: voice + sms + wecom for people (g2 has no WeCom), sirens and broadcast for devices
    assert issued.by_channel == {"voice": 6, "sms": 6, "wecom": 5, "device": 2, "broadcast": 2}
    await engine.settle()
    assert sorted(outbox(engine, ChannelKind.DEVICE)) == ["siren-500238101001", "siren-500238101002"]
    assert Counter(outbox(engine, ChannelKind.SMS))["g1"] == 1


async def test_a_village_alert_reaches_only_that_village(engine: AssembledEngine) -> None:
    issued = await engine.alerts.trigger(rainstorm(Level.YELLOW, ["500238101002"]), actor="duty:test")
    targets = await targets_by_person(engine, issued.alert_id)
    assert set(targets) == {"v2-head", "g3"}  # yellow has no devices in its first wave
    assert issued.by_channel == {"sms": 2, "wecom": 2}


async def test_unknown_unit_is_refused_and_nothing_is_written(engine: AssembledEngine) -> None:
    from alerting.issue.planning import UnknownUnits

    with pytest.raises(UnknownUnits, match="500238999"):
        await engine.alerts.trigger(rainstorm(Level.RED, ["500238101", "500238999"]), actor="duty:test")
    assert await engine.alerts.list() == []


async def test_blue_uses_sms_only_where_there_is_no_wecom(engine: AssembledEngine) -> None:
    issued = await engine.alerts.trigger(rainstorm(Level.BLUE, ["50023810100101", "50023810100102"]), actor="t")
    async with engine.db.session() as s:
        rows = (
            await s.execute(
                select(col(Delivery.person_id), col(Delivery.channel)).where(col(Delivery.alert_id) == issued.alert_id)
            )
        ).all()
    assert sorted(map(tuple, rows)) == [("g1", "wecom"), ("g2", "sms")]


async def test_answer_counts_once_and_stops_everything_for_that_person(
    engine: AssembledEngine, clock: ManualClock
) -> None:
    issued = await engine.alerts.trigger(rainstorm(Level.RED, ["50023810100101"]), actor="duty:test")
    await engine.settle()
    async with engine.db.session() as s:
        sms = (
            await s.execute(
                select(Delivery).where(col(Delivery.alert_id) == issued.alert_id, col(Delivery.channel) == "sms")
            )
        ).scalar_one()
    clock.advance(seconds=40)
    first = await engine.acks.answer_delivery(sms.id, channel=ChannelKind.SMS, at=clock.now())
    again = await engine.acks.answer_delivery(sms.id, channel=ChannelKind.SMS, at=clock.now())
    assert first.counted
    assert first.state is TargetState.ANSWERED
    assert not again.counted
    assert again.answered_at == first.answered_at
    assert first.alert_closed_now
    assert first.alert_status is AlertStatus.CLOSED
    clock.advance(minutes=30)
    await engine.settle()
    assert outbox(engine, ChannelKind.VOICE) == ["g1"]  # no redial after the answer


async def test_silent_grid_worker_escalates_step_by_step_to_the_county(
    engine: AssembledEngine, clock: ManualClock
) -> None:
    issued = await engine.alerts.trigger(rainstorm(Level.RED, ["50023810100101"]), actor="duty:test")
    await engine.settle()
    reached: list[list[str]] = []
    for _ in range(5):
        before = len(outbox(engine, ChannelKind.VOICE))
        clock.advance(minutes=5)
        await engine.settle()
        reached.append(outbox(engine, ChannelKind.VOICE)[before:])
    # redial, backup (the village deputy), parent (village head), township duty, county duty room
    assert reached == [["g1"], ["v1-deputy"], ["v1-head"], ["tw-duty"], ["county-duty"]]
    target = (await targets_by_person(engine, issued.alert_id))["g1"]
    assert target.step == 5
    assert target.state == TargetState.OPEN


async def test_parent_answering_the_escalation_answers_for_the_silent(
    engine: AssembledEngine, clock: ManualClock
) -> None:
    await engine.alerts.trigger(rainstorm(Level.RED, ["50023810100101"]), actor="duty:test")
    await engine.settle()
    for _ in range(3):
        clock.advance(minutes=5)
        await engine.settle()
    async with engine.db.session() as s:
        to_head = (
            await s.execute(
                select(Delivery).where(col(Delivery.person_id) == "v1-head", col(Delivery.channel) == "sms")
            )
        ).scalar_one()
    result = await engine.acks.answer_delivery(to_head.id, channel=ChannelKind.SMS, at=clock.now())
    assert result.state is TargetState.ANSWERED_FOR
    assert result.answered_by == "v1-head"
    clock.advance(minutes=30)
    await engine.settle()
    assert "tw-duty" not in outbox(engine, ChannelKind.VOICE)


async def test_cancel_stops_unsent_and_tells_those_reached(engine: AssembledEngine, clock: ManualClock) -> None:
    issued = await engine.alerts.trigger(rainstorm(Level.RED, ["500238101001"]), actor="duty:test")
    await engine.dispatcher.run_once(ChannelKind.SMS)  # only SMS went out before the cancel
    lifted = await engine.alerts.cancel(issued.alert_id, actor="duty:test", reason="降雨减弱")
    assert lifted.lift_notices == 3  # v1-head, g1, g2 were texted
    clock.advance(minutes=20)
    await engine.settle()
    async with engine.db.session() as s:
        states: dict[str, int] = dict(
            (
                await s.execute(
                    select(col(Delivery.channel), func.count())
                    .where(
                        col(Delivery.alert_id) == issued.alert_id,
                        col(Delivery.state) == DeliveryState.CANCELLED.value,
                    )
                    .group_by(col(Delivery.channel))
                )
            ).all()
        )
    assert states["voice"] == 3
    assert states["device"] == 1
    assert outbox(engine, ChannelKind.VOICE) == []  # nothing but the lift notices went out after the cancel
    sms = engine.channels[ChannelKind.SMS]
    assert isinstance(sms, SandboxChannel)
    assert Counter(r.message.purpose.value for r in sms.outbox) == {"warn": 3, "lift": 3}


async def test_one_siren_cannot_answer_for_another(engine: AssembledEngine, clock: ManualClock) -> None:
    from alerting.answer.events import DeviceReport

    issued = await engine.alerts.trigger(rainstorm(Level.RED, ["500238101"]), actor="duty:test")
    await engine.settle()
    async with engine.db.session() as s:
        command = (await s.execute(select(Delivery).where(Delivery.device_id == "siren-500238101001"))).scalar_one()  # type: ignore[arg-type]
    await engine.inbound(DeviceReport("siren-500238101002", command.id, "sounding", clock.now()))
    assert (await targets_by_person(engine, issued.alert_id))["siren-500238101001"].state == TargetState.OPEN
    await engine.inbound(DeviceReport("siren-500238101001", command.id, "sounding", clock.now()))
    assert (await targets_by_person(engine, issued.alert_id))["siren-500238101001"].state == TargetState.ANSWERED


async def test_a_call_for_help_reaches_the_township_and_county_on_duty_at_once(
    engine: AssembledEngine, clock: ManualClock
) -> None:
    await engine.alerts.trigger(rainstorm(Level.RED, ["50023810100101"]), actor="duty:test")
    await engine.settle()
    async with engine.db.session() as s:
        sms = (await s.execute(select(Delivery).where(Delivery.channel == "sms"))).scalar_one()  # type: ignore[arg-type]
    clock.advance(seconds=30)
    result = await engine.acks.answer_delivery(
        sms.id, channel=ChannelKind.SMS, at=clock.now(), feedback={"help_needed": True, "note": "桥被冲断"}
    )
    assert result.counted and result.help_needed
    await engine.settle()  # no deadline passed: the help goes out now
    channel = engine.channels[ChannelKind.VOICE]
    assert isinstance(channel, SandboxChannel)
    help_calls = [r.message for r in channel.outbox if r.message.purpose.value == "help"]
    assert sorted(m.address.person_id or "" for m in help_calls) == ["county-duty", "tw-duty"]
    assert all("网格员甲" in m.text and "求助" in m.text for m in help_calls)
