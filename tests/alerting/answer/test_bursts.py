"""Answers that arrive together: a red alert's sirens ack within seconds and grid workers open their links at once.

They are applied in shared batches; what a user relies on must hold all the same: each target counted once, by
the first answer to reach it, every later answer kept, the alert closed once, and a siren never answering for
another one.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alerting.answer.events import Answer, DeviceReport, DeviceStatus
from alerting.answer.outcomes import AnswerRejected, AnswerResult
from alerting.audit import chain as audit
from alerting.issue.alerts import AlertRequest
from alerting.model.actor import Actor
from alerting.model.clock import ManualClock
from alerting.model.domain import AlertStatus, ChannelKind, DeliveryState, Level, TargetState
from alerting.store.db import Database
from alerting.store.tables import Acknowledgement, Alert, AuditEvent, Delivery, Device, InboundSeen, Target
from config.wiring import AssembledEngine
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

pytestmark = pytest.mark.both_databases

FLOOD = AlertRequest(
    level=Level.RED, hazard="暴雨", title="暴雨红色预警", text="大暴雨，立即转移。", units=["500238101"]
)


async def red_alert(db: Database, clock: ManualClock) -> tuple[AssembledEngine, int, list[Delivery]]:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(FLOOD, actor="t")
    await engine.dispatcher.drain()
    async with db.session() as s:
        deliveries = list(
            (await s.execute(select(Delivery).where(col(Delivery.alert_id) == issued.alert_id))).scalars()
        )
    return engine, issued.alert_id, deliveries


async def count(db: Database, model: type[Acknowledgement] | type[AuditEvent], *where: object) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


async def test_a_burst_of_answers_counts_each_target_once_and_closes_the_alert_once(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine, alert_id, deliveries = await red_alert(db, clock)
    people = [d for d in deliveries if d.person_id and d.channel in (ChannelKind.SMS.value, ChannelKind.WECOM.value)]
    sirens = [d for d in deliveries if d.channel == ChannelKind.DEVICE.value]
    zones = [d for d in deliveries if d.channel == ChannelKind.BROADCAST.value]
    assert len({d.target_id for d in people}) == 6 and len(sirens) == 2 and len(zones) == 2
    commits_before = db.writer.commits

    # every siren acks twice at once (QoS 1 repeats), then every person answers on SMS and WeCom at the same moment
    answers = [
        engine.acks.answer_delivery(d.id, channel=ChannelKind(d.channel), at=clock.now()) for d in people + zones
    ]
    acks = [
        engine.inbound(DeviceReport(d.device_id or "", d.id, "sounding", clock.now())) for d in sirens for _ in (1, 2)
    ]
    await asyncio.gather(*acks)
    results = await asyncio.gather(*answers)  # the last of them to count closes the alert

    async with db.session() as s:
        targets = list((await s.execute(select(Target).where(col(Target.alert_id) == alert_id))).scalars())
        alert = await s.get(Alert, alert_id)
    assert alert is not None and alert.status == AlertStatus.CLOSED.value
    assert {t.state for t in targets} == {TargetState.ANSWERED.value}
    counted = await count(db, Acknowledgement, col(Acknowledgement.alert_id) == alert_id, col(Acknowledgement.counted))
    assert counted == len(targets)  # one counted answer per target, however many came in together
    # every answer kept: people on both channels, zones once, each siren's ack once (its repeat is the same report)
    kept = len(people) + len(zones) + len(sirens)
    assert await count(db, Acknowledgement, col(Acknowledgement.alert_id) == alert_id) == kept
    assert await count(db, AuditEvent, col(AuditEvent.kind) == "alert.closed") == 1
    closers = [r for r in results if isinstance(r, AnswerResult) and r.alert_closed_now]
    assert len(closers) == 1
    assert db.writer.commits - commits_before < len(answers) + len(acks)  # they shared commits
    assert (await audit.verify(db)).ok
    await engine.stop()


async def test_of_two_answers_to_one_target_in_one_batch_the_first_counts_and_the_second_adds_its_report(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine, _, deliveries = await red_alert(db, clock)
    sms, wecom = (next(d for d in deliveries if d.person_id == "g1" and d.channel == k) for k in ("sms", "wecom"))
    first, second = await asyncio.gather(
        engine.acks.answer_delivery(sms.id, channel=ChannelKind.SMS, at=clock.now()),
        engine.acks.answer_delivery(
            wecom.id, channel=ChannelKind.WECOM, at=clock.now() + timedelta(seconds=1), feedback={"moved": 12}
        ),
    )
    assert first.counted and not second.counted
    assert second.state is TargetState.ANSWERED and second.answered_at == first.answered_at
    async with db.session() as s:
        target = await s.get(Target, sms.target_id)
    assert target is not None
    assert target.answer_channel == ChannelKind.SMS.value and target.feedback == {"moved": 12}
    async with db.session() as s:
        about = select(col(AuditEvent.kind)).where(col(AuditEvent.subject) == sms.target_id)
        kinds = list((await s.execute(about.order_by(col(AuditEvent.seq)))).scalars())
    assert kinds[-2:] == ["target.answered", "ack.repeated"]
    await engine.stop()


async def test_a_siren_cannot_answer_or_report_on_another_sirens_command(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine, _, deliveries = await red_alert(db, clock)
    east, west = sorted(
        (d for d in deliveries if d.channel == ChannelKind.DEVICE.value), key=lambda d: d.device_id or ""
    )
    assert east.device_id != west.device_id

    for status in ("received", "sounding"):
        await engine.inbound(DeviceReport(west.device_id or "", east.id, status, clock.now()))

    async with db.session() as s:
        target = await s.get(Target, east.target_id)
        delivery = await s.get(Delivery, east.id)
    assert target is not None and target.state == TargetState.OPEN.value
    assert delivery is not None and delivery.state == DeliveryState.SENT.value  # "received" from the wrong siren
    assert await count(db, Acknowledgement, col(Acknowledgement.target_id) == east.target_id) == 0
    assert engine.inbound.rejected == 1

    await engine.inbound(DeviceReport(east.device_id or "", east.id, "sounding", clock.now()))
    async with db.session() as s:
        target = await s.get(Target, east.target_id)
    assert target is not None and target.state == TargetState.ANSWERED.value
    await engine.stop()


async def test_a_refused_answer_in_a_burst_holds_up_nobody_and_leaves_no_key_behind(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine, _, deliveries = await red_alert(db, clock)
    sms = [d for d in deliveries if d.channel == ChannelKind.SMS.value and d.person_id]
    results = await asyncio.gather(
        *(engine.acks.answer_delivery(d.id, channel=ChannelKind.SMS, at=clock.now()) for d in sms),
        engine.acks.answer_delivery("no-such-delivery", channel=ChannelKind.SMS, at=clock.now(), once="k-refused"),
        engine.acks.answer_by_phone("+8613000000000", channel=ChannelKind.SMS, at=clock.now(), once="k-nobody"),
        return_exceptions=True,
    )
    assert all(isinstance(r, AnswerResult) and r.counted for r in results[: len(sms)])
    assert [type(r) for r in results[len(sms) :]] == [AnswerRejected, AnswerRejected]
    assert "no delivery no-such-delivery" in str(results[len(sms)])
    assert "belongs to nobody" in str(results[len(sms) + 1])
    async with db.session() as s:
        keys = set((await s.execute(select(col(InboundSeen.key)))).scalars())
    assert not {"k-refused", "k-nobody"} & keys  # a refused answer's retry is judged afresh
    await engine.stop()


async def test_an_officer_answering_for_someone_while_their_own_answer_arrives_counts_one_of_them(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine, alert_id, deliveries = await red_alert(db, clock)
    sms = next(d for d in deliveries if d.person_id == "g2" and d.channel == ChannelKind.SMS.value)
    own, for_them = await asyncio.gather(
        engine.acks.answer_delivery(sms.id, channel=ChannelKind.SMS, at=clock.now()),
        engine.acks.answer_on_behalf(
            alert_id, sms.target_id, by=Actor.officer("user:duty"), reason="打电话确认", at=clock.now()
        ),
    )
    assert [own.counted, for_them.counted].count(True) == 1
    assert own.state == for_them.state
    counted = col(Acknowledgement.target_id) == sms.target_id, col(Acknowledgement.counted)
    assert await count(db, Acknowledgement, *counted) == 1
    await engine.stop()


async def test_a_late_retained_status_does_not_undo_a_newer_one(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    siren = "siren-500238101001"
    now = clock.now()
    # the will (offline) arrives, then the broker hands over the older retained "online", then both together
    await engine.inbound(DeviceStatus(siren, False, now))
    await engine.inbound(DeviceStatus(siren, True, now - timedelta(seconds=30)))
    await asyncio.gather(
        engine.inbound(DeviceStatus(siren, True, now - timedelta(seconds=10))),
        engine.inbound(DeviceStatus(siren, False, now + timedelta(seconds=5))),
        engine.inbound(DeviceStatus(siren, True, now - timedelta(seconds=20))),
    )
    async with db.session() as s:
        device = await s.get(Device, siren)
    assert device is not None and device.online is False
    assert device.status_at is not None and abs((device.status_at - (now + timedelta(seconds=5))).total_seconds()) < 1
    await engine.stop()


async def test_answers_through_the_inbound_sink_and_the_service_share_the_same_rule(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    """An SMS reply and a link answer for the same person in one batch: one counts, both are kept."""
    engine, _, deliveries = await red_alert(db, clock)
    sms = next(d for d in deliveries if d.person_id == "g3" and d.channel == ChannelKind.SMS.value)
    phone = "+8613900000010"  # g3's number in the small county
    await asyncio.gather(
        engine.inbound(Answer(ChannelKind.SMS, clock.now(), from_phone=phone, event_id="twilio-sms:SMburst1")),
        engine.acks.answer_delivery(sms.id, channel=ChannelKind.SMS, at=clock.now()),
    )
    about = col(Acknowledgement.target_id) == sms.target_id
    assert await count(db, Acknowledgement, about) == 2
    assert await count(db, Acknowledgement, about, col(Acknowledgement.counted)) == 1
    await engine.stop()
