"""Manual tasks travel over the person's own channels, and what they report rolls up per village and township."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import col

from alerting.deliver.port import Address, Channel, DeliveryError
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Level, Purpose, TargetState, TaskKind
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Delivery
from alerting.views.report.build import build_report
from channels.manual import ManualTaskChannel
from channels.sandbox import SandboxChannel
from config.settings import Settings
from config.wiring import build_engine
from tests.alerting.deliver.test_dispatch_failures import ScriptedProvider
from tests.channels.contract import make_message
from tests.conftest import SmallCounty


async def test_a_task_goes_over_wecom_when_the_person_has_it_and_sms_otherwise() -> None:
    wecom, sms = SandboxChannel(ChannelKind.WECOM), SandboxChannel(ChannelKind.SMS)
    manual = ManualTaskChannel([wecom, sms])
    task = make_message(ChannelKind.MANUAL, purpose=Purpose.TASK, task=TaskKind.GONG)
    receipt = await manual.send(task)
    assert receipt.provider == "manual+sandbox+sandbox" and receipt.detail["carrier"] == "wecom"
    no_wecom = make_message(
        ChannelKind.MANUAL,
        purpose=Purpose.TASK,
        task=TaskKind.GONG,
        address=Address(person_id="g2", name="网格员乙", phone="+8613900000009"),
    )
    assert (await manual.send(no_wecom)).detail["carrier"] == "sms"
    assert [r.message.channel for r in sms.outbox] == [ChannelKind.SMS]


async def test_a_carrier_refusing_for_good_hands_the_task_to_the_next() -> None:
    refusing = ScriptedProvider(
        ChannelKind.WECOM, [DeliveryError("no such member", retryable=False, code="wecom_60111")]
    )
    sms = SandboxChannel(ChannelKind.SMS)
    receipt = await ManualTaskChannel([refusing, sms]).send(make_message(ChannelKind.MANUAL, purpose=Purpose.TASK))
    assert receipt.detail["carrier"] == "sms"


async def test_a_silent_siren_becomes_a_gong_task_whose_report_rolls_up(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    carriers: dict[ChannelKind, Channel] = {k: SandboxChannel(k) for k in ChannelKind}
    channels = {
        **carriers,
        ChannelKind.MANUAL: ManualTaskChannel([carriers[ChannelKind.WECOM], carriers[ChannelKind.SMS]]),
    }
    engine = build_engine(Settings(database_url=db.url, secret_key="t"), clock=clock, channels=channels)
    issued = await engine.alerts.trigger(
        AlertRequest(level=Level.RED, hazard="山洪", title="山洪红色预警", text="山洪。", units=["500238101001"]),
        actor="duty:test",
    )
    await engine.settle()
    for _ in range(2):  # the siren never confirms: resend, then the task
        clock.advance(minutes=1)
        await engine.settle()
    async with db.session() as s:
        task = (await s.execute(select(Delivery).where(col(Delivery.channel) == "manual"))).scalars().all()
    siren_task = [t for t in task if t.detail and t.detail["task"] == TaskKind.GONG.value]
    assert {t.person_id for t in siren_task} == {"v1-head"}
    async with db.session() as s:
        failed = (await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == "device.failed"))).scalars().all()
    assert {e.data["device"] for e in failed} == {"siren-500238101001", "bz-500238101001"}
    result = await engine.acks.answer_delivery(
        siren_task[0].id, channel=ChannelKind.MANUAL, at=clock.now(), feedback={"households": 23, "moved": 41}
    )
    assert result.state is TargetState.ANSWERED_FOR
    report = await build_report(db, issued.alert_id, now=clock.now())
    township = next(t for t in report.townships if t.code == "500238101")
    assert (township.households, township.moved) >= (23, 41)
    assert [(v.code, v.households, v.moved) for v in report.villages] == [("500238101001", 23, 41)]
