"""A provider's retry or a captured request posted again changes nothing: every inbound event is taken in once.

Twilio signs a webhook without a timestamp, so a byte-identical request verifies again; WeCom and the broadcast
gateway retry what they think failed. The key is the provider's own id for the event, stored with the answer.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alerting.answer.events import Answer, InboundText
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Level, TargetState
from alerting.store.db import Database
from alerting.store.tables import Acknowledgement, AuditEvent, Delivery, Person, Target
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

pytestmark = pytest.mark.both_databases

HEAT = AlertRequest(level=Level.YELLOW, hazard="高温", title="高温黄色预警", text="高温。", units=["500238101001"])
STORM = AlertRequest(level=Level.YELLOW, hazard="暴雨", title="暴雨黄色预警", text="暴雨。", units=["500238101001"])


async def target_of(db: Database, alert_id: int, person_id: str) -> Target:
    async with db.session() as s:
        t = await s.scalar(select(Target).where(col(Target.alert_id) == alert_id, col(Target.person_id) == person_id))
    assert t is not None
    return t


async def count(db: Database, model: type[Acknowledgement] | type[AuditEvent], *where: object) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


async def test_a_replayed_sms_reply_does_not_answer_an_alert_issued_since(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    first = await engine.alerts.trigger(HEAT, actor="t")
    await engine.dispatcher.drain()
    async with db.session() as s:
        phone = await s.scalar(select(col(Person.phone)).where(col(Person.id) == "g1"))
    assert phone
    reply = Answer(ChannelKind.SMS, clock.now(), from_phone=phone, event_id="twilio-sms:SM0001")
    await engine.inbound(reply)
    assert (await target_of(db, first.alert_id, "g1")).state == TargetState.ANSWERED.value

    clock.advance(minutes=3)
    second = await engine.alerts.trigger(STORM, actor="t")
    await engine.dispatcher.drain()
    await engine.inbound(reply)  # the same signed request, posted again

    assert (await target_of(db, second.alert_id, "g1")).state == TargetState.OPEN.value
    assert await count(db, Acknowledgement, col(Acknowledgement.person_id) == "g1") == 1
    # a new reply (a new MessageSid) is a new answer
    await engine.inbound(Answer(ChannelKind.SMS, clock.now(), from_phone=phone, event_id="twilio-sms:SM0002"))
    assert (await target_of(db, second.alert_id, "g1")).state == TargetState.ANSWERED.value
    await engine.stop()


@pytest.mark.parametrize(
    ("channel", "event_id"),
    [
        (ChannelKind.VOICE, "twilio-gather:CA0001:1"),
        (ChannelKind.WECOM, "wecom-button:wx1:1782871200:ack:{d}"),
        (ChannelKind.SMS, "twilio-sms:SM0003"),
    ],
)
async def test_the_same_button_press_or_key_twice_is_one_answer_and_one_audit_entry(
    db: Database, clock: ManualClock, county: SmallCounty, channel: ChannelKind, event_id: str
) -> None:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(HEAT, actor="t")
    await engine.dispatcher.drain()
    async with db.session() as s:
        delivery = await s.scalar(
            select(Delivery).where(col(Delivery.alert_id) == issued.alert_id, col(Delivery.person_id) == "g1").limit(1)
        )
    assert delivery is not None
    press = Answer(channel, clock.now(), delivery_id=delivery.id, event_id=event_id.format(d=delivery.id))
    await engine.inbound(press)
    restarted = sandbox_engine(Database(db.url), clock)  # the retry comes to another process, after a restart
    await restarted.inbound(press)

    assert await count(db, Acknowledgement, col(Acknowledgement.alert_id) == issued.alert_id) == 1
    assert await count(db, AuditEvent, col(AuditEvent.kind).in_(["target.answered", "ack.repeated"])) == 1
    await engine.stop()
    await restarted.stop()


async def test_a_replayed_free_text_reply_is_kept_once(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    engine = sandbox_engine(db, clock)
    text = InboundText(
        ChannelKind.SMS, clock.now(), text="我在开会", from_phone="+8613900000001", event_id="twilio-sms:SM9"
    )
    await engine.inbound(text)
    await engine.inbound(text)
    assert await count(db, AuditEvent, col(AuditEvent.kind) == "inbound.text") == 1
    await engine.stop()


async def test_one_sms_reply_answers_every_request_waiting_on_that_number(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    """The village head has their own warning and, once a grid worker stays silent, a request to stand in for
    them. One "收到" by SMS answers both: their own warning, and the grid worker's loop as answered for by them.
    Answering only the newest would leave their own warning open, and they would be called again about it."""
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(HEAT, actor="t")
    await engine.dispatcher.drain()
    clock.advance(minutes=61)  # past both of the grid worker's own steps: the parent (the village head) is asked
    await engine.escalation.run_due()
    await engine.dispatcher.drain()
    clock.advance(minutes=31)
    await engine.escalation.run_due()
    await engine.dispatcher.drain()
    async with db.session() as s:
        rows = (
            await s.execute(
                select(col(Delivery.person_id), col(Delivery.target_id))
                .join(Target, col(Target.id) == col(Delivery.target_id))
                .where(col(Delivery.alert_id) == issued.alert_id, col(Target.state) == TargetState.OPEN.value)
            )
        ).all()
    asked: dict[str, set[str]] = {}
    for person_id, target_id in rows:
        asked.setdefault(person_id or "", set()).add(target_id)
    standing_in = {p: ts for p, ts in asked.items() if len(ts) > 1}
    assert standing_in, "nobody was asked to stand in for a silent colleague: the test would show nothing"
    head, waiting = next(iter(standing_in.items()))
    async with db.session() as s:
        phone = await s.scalar(select(col(Person.phone)).where(col(Person.id) == head))
    assert phone

    await engine.inbound(Answer(ChannelKind.SMS, clock.now(), from_phone=phone, event_id="twilio-sms:SM0100"))

    async with db.session() as s:
        answered = list((await s.execute(select(Target).where(col(Target.id).in_(waiting)))).scalars())
    states = {t.person_id: t.state for t in answered}
    assert states[head] == TargetState.ANSWERED.value  # their own warning
    assert all(state == TargetState.ANSWERED_FOR.value for p, state in states.items() if p != head)
    assert {t.answered_by for t in answered} == {head} and len(answered) == len(waiting) > 1
    await engine.stop()
