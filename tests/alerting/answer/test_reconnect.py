"""The device link is back after an outage: who is asked again, and who gets time before being written off.

A red warning on 凤凰镇 sounds its two sirens. While the link was down one siren's "sounding" was taken in and the
other's ack was lost; then the link comes back (`DevicesReconnected`). What the duty room relies on: only the
unconfirmed siren's command goes out again, with the same command id; its next deadline (the village head's
鸣锣吹哨) moves to give it the resend window, and a claim taken on the old due time can no longer fire it; the
audit says so; and once it confirms, the alert closes with nobody sent out.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.answer.events import DeviceReport, DevicesReconnected, DeviceStatus
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, DeadlineState, DeliveryState, TargetState
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Deadline, Delivery, Target
from tests.conftest import SmallCounty
from tests.harness import RED, outbox, sandbox_engine

pytestmark = pytest.mark.both_databases


async def on_channel(db: Database, alert_id: int, channel: ChannelKind) -> list[Delivery]:
    async with db.session() as s:
        found = await s.execute(
            select(Delivery).where(col(Delivery.alert_id) == alert_id, col(Delivery.channel) == channel.value)
        )
        return list(found.scalars())


async def test_only_the_unconfirmed_siren_is_asked_again_and_given_time(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(RED, actor="t")
    await engine.dispatcher.drain()
    sirens = await on_channel(db, issued.alert_id, ChannelKind.DEVICE)
    assert len(sirens) == 2
    heard, lost = sirens
    zones = await on_channel(db, issued.alert_id, ChannelKind.BROADCAST)
    for zone in zones:  # the broadcast gateway confirmed: only the sirens are in question here
        await engine.acks.answer_delivery(zone.id, channel=ChannelKind.BROADCAST, at=clock.now())
    await engine.inbound(DeviceReport(heard.device_id or "", heard.id, "sounding", clock.now()))
    sent_first = outbox(engine, ChannelKind.DEVICE)

    clock.advance(timedelta(seconds=50))  # the sirens' first window is 60 s: 10 s left when the link comes back
    async with db.session() as s:
        (deadline,) = (
            await s.execute(
                select(Deadline).where(
                    col(Deadline.target_id) == lost.target_id, col(Deadline.state) == DeadlineState.PENDING.value
                )
            )
        ).scalars()
    # nothing due yet: the claim must not be able to fire it later either
    claims = await engine.escalation.claims.claim()
    assert claims == []
    engine.inbound.resend_window = timedelta(seconds=45)
    await engine.inbound(DevicesReconnected(connected_at=clock.now(), session_kept=False))

    async with db.session() as s:
        again = await s.get(Delivery, lost.id)
        kept = await s.get(Delivery, heard.id)
        moved = await s.get(Deadline, deadline.id)
        entries = list(
            (
                await s.execute(
                    select(AuditEvent).where(
                        col(AuditEvent.alert_id) == issued.alert_id, col(AuditEvent.kind) == "device.asked_again"
                    )
                )
            ).scalars()
        )
    assert again is not None and again.state == DeliveryState.PENDING.value
    assert kept is not None and kept.state != DeliveryState.PENDING.value  # confirmed: not sent again
    assert moved is not None and moved.due_at == clock.now() + timedelta(seconds=45)
    assert moved.fence == deadline.fence + 1
    (entry,) = entries
    assert entry.data["devices"] == [lost.device_id]
    assert entry.data["targets_given_time"] == [lost.target_id]

    await engine.dispatcher.drain()
    assert outbox(engine, ChannelKind.DEVICE) == [*sent_first, lost.device_id]  # the one command, once more

    clock.advance(timedelta(seconds=20))  # past the first window, inside the new one: nobody is sent out
    assert await engine.escalation.run_due() == 0
    await engine.inbound(DeviceReport(lost.device_id or "", lost.id, "sounding", clock.now()))
    clock.advance(timedelta(minutes=5))
    await engine.settle()
    async with db.session() as s:
        targets = list(
            (
                await s.execute(
                    select(Target).where(
                        col(Target.alert_id) == issued.alert_id, col(Target.id).in_([heard.target_id, lost.target_id])
                    )
                )
            ).scalars()
        )
        tasks = await s.scalar(
            select(col(Delivery.id)).where(
                col(Delivery.alert_id) == issued.alert_id, col(Delivery.channel) == ChannelKind.MANUAL.value
            )
        )
    assert {t.state for t in targets} == {TargetState.ANSWERED.value}
    assert tasks is None, "a village head was sent to 鸣锣吹哨 for a siren that sounded"


async def test_a_link_back_with_nothing_unconfirmed_changes_nothing(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(RED, actor="t")
    await engine.dispatcher.drain()
    sirens = await on_channel(db, issued.alert_id, ChannelKind.DEVICE)
    for d in sirens:
        await engine.inbound(DeviceReport(d.device_id or "", d.id, "sounding", clock.now()))
    sent = outbox(engine, ChannelKind.DEVICE)
    await engine.inbound(DevicesReconnected(connected_at=clock.now(), session_kept=True))
    await engine.dispatcher.drain()
    async with db.session() as s:
        entries = await s.scalar(select(col(AuditEvent.seq)).where(col(AuditEvent.kind) == "device.asked_again"))
    assert outbox(engine, ChannelKind.DEVICE) == sent and entries is None


async def test_a_siren_back_online_is_sent_again_what_it_missed_but_its_deadline_stays(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    """The siren, not the engine, lost its link: it reconnects without a session, so the command sent while it
    was away never reached it. Its fresh "online" gets the command sent again; the retained status read again
    later does not, and the village head's turn is not postponed by a siren that drops off."""
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(RED, actor="t")
    await engine.dispatcher.drain()
    heard, away = await on_channel(db, issued.alert_id, ChannelKind.DEVICE)
    await engine.inbound(DeviceReport(heard.device_id or "", heard.id, "sounding", clock.now()))
    async with db.session() as s:
        due_before = await s.scalar(
            select(col(Deadline.due_at)).where(
                col(Deadline.target_id) == away.target_id, col(Deadline.state) == DeadlineState.PENDING.value
            )
        )
    sent = outbox(engine, ChannelKind.DEVICE)

    clock.advance(timedelta(seconds=20))
    back = DeviceStatus(away.device_id or "", online=True, at=clock.now())
    for status in (back, DeviceStatus(heard.device_id or "", online=True, at=clock.now())):
        await engine.inbound(status)
    await engine.dispatcher.drain()
    assert outbox(engine, ChannelKind.DEVICE) == [*sent, away.device_id]  # only the one that had not confirmed

    clock.advance(timedelta(seconds=5))
    await engine.inbound(back)  # the same retained status, handed over again on a reconnect
    await engine.dispatcher.drain()
    assert outbox(engine, ChannelKind.DEVICE) == [*sent, away.device_id]
    async with db.session() as s:
        due_after = await s.scalar(
            select(col(Deadline.due_at)).where(
                col(Deadline.target_id) == away.target_id, col(Deadline.state) == DeadlineState.PENDING.value
            )
        )
        (entry,) = (await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == "device.asked_again"))).scalars()
    assert due_after == due_before
    assert entry.data["devices"] == [away.device_id] and entry.data["deadlines_moved_to"] is None
