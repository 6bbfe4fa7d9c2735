"""The pipeline's promises, one delivery at a time, against a provider that holds each send as long as the test says.

What a duty officer relies on: an answer or a 解除 stops every warning not yet handed to the provider; one that was
handed over is recorded as sent and hears the lift; the rows and the audit say the same; a provider's report that
comes back before the send is written is kept; throttling costs no attempt; a new red first wave goes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.answer.events import EventSink, StatusUpdate
from alerting.deliver.port import ChannelLimits, DeliveryError, OutboundMessage, Receipt, Webhook
from alerting.issue.alerts import AlertRequest
from alerting.issue.planning import queue_priority
from alerting.model.actor import Actor
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, DeliveryState, Level, Purpose
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Delivery
from alerting.views.queue import queue_lines
from channels.sandbox import SandboxChannel
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

YELLOW = AlertRequest(level=Level.YELLOW, hazard="高温", title="高温黄色预警", text="高温。", units=["500238101"])


class HeldProvider:
    """An SMS provider that takes each message only when `before_answer` lets it, and logs what it took."""

    provider = "held"
    sandbox = False
    webhooks: tuple[Webhook, ...] = ()
    kind = ChannelKind.SMS

    def __init__(self, limits: ChannelLimits) -> None:
        self.limits = limits
        self.received: list[OutboundMessage] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.before_answer: Callable[[OutboundMessage], Awaitable[None]] | None = None
        self.throttle = 0  # answer this many sends with a 429 first

    async def start(self, events: EventSink) -> None:
        return None

    async def send(self, message: OutboundMessage) -> Receipt:
        if self.throttle:
            self.throttle -= 1
            raise DeliveryError("429 slow down", retryable=True, code="http_429", retry_after=1, throttled=True)
        self.received.append(message)
        self.arrived.set()
        await self.release.wait()
        if self.before_answer is not None:
            await self.before_answer(message)
        return Receipt(provider=self.provider, provider_id=f"SM{len(self.received):04d}")

    async def close(self) -> None:
        return None


def engine_with(db: Database, clock: ManualClock, sms: HeldProvider) -> AssembledEngine:
    chosen = {k: SandboxChannel(k) for k in ChannelKind} | {ChannelKind.SMS: sms}
    settings = Settings(database_url=db.url, public_url="https://jy.example.test", secret_key="test-secret")
    return build_engine(settings, clock=clock, channels=chosen)


async def claim_and_deliver(engine: AssembledEngine, n: int) -> tuple[list[Delivery], list[asyncio.Task[None]]]:
    """Claim `n` SMS and start each through the pipeline, as the channel's loop would."""
    claimed = await engine.dispatcher._claim(ChannelKind.SMS, n)
    messages = await engine.dispatcher._compose(claimed)
    tasks = [asyncio.create_task(engine.dispatcher._deliver(ChannelKind.SMS, d, messages[d.id])) for d in claimed]
    return claimed, tasks


async def sms_rows(db: Database, alert_id: int) -> list[Delivery]:
    async with db.session() as s:
        q = select(Delivery).where(
            col(Delivery.alert_id) == alert_id,
            col(Delivery.channel) == ChannelKind.SMS.value,
            col(Delivery.purpose) == Purpose.WARN.value,
        )
        return list((await s.execute(q)).scalars())


async def audited(db: Database, kind: str) -> list[AuditEvent]:
    async with db.session() as s:
        return list((await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == kind))).scalars())


async def test_an_answer_stops_a_claimed_warning_that_was_not_yet_handed_over(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    sms = HeldProvider(ChannelLimits(concurrency=1, per_second=1000, burst=100))
    engine = engine_with(db, clock, sms)
    issued = await engine.alerts.trigger(YELLOW, actor="t")
    # three claimed, one slot: two wait their turn after the claim
    claimed, tasks = await claim_and_deliver(engine, 3)
    await sms.arrived.wait()  # the first is at the provider; the other two hold their claim, waiting for the slot
    first = sms.received[0].delivery_id
    waiting = [d for d in claimed if d.id != first]
    for d in waiting:
        await engine.acks.answer_on_behalf(
            issued.alert_id, d.target_id, by=Actor.officer("user:duty"), reason="电话确认", at=clock.now()
        )
    sms.release.set()
    await asyncio.gather(*tasks)

    assert [m.delivery_id for m in sms.received] == [first]  # nothing reached the provider after the answers
    by_id = {r.id: r for r in await sms_rows(db, issued.alert_id)}
    assert by_id[first].state == DeliveryState.SENT.value
    for d in waiting:
        assert by_id[d.id].state == DeliveryState.CANCELLED.value
        assert (by_id[d.id].error or "").startswith("not sent")
    sent_audit = {e.subject for e in await audited(db, "delivery.sent") if e.subject in by_id}
    assert sent_audit == {r.id for r in by_id.values() if r.state == DeliveryState.SENT.value} == {first}
    await engine.stop()


async def test_a_cancel_while_a_warning_is_at_the_provider_keeps_it_sent_and_sends_it_the_lift(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    sms = HeldProvider(ChannelLimits(concurrency=1, per_second=1000, burst=100))
    engine = engine_with(db, clock, sms)
    issued = await engine.alerts.trigger(YELLOW, actor="t")
    _, tasks = await claim_and_deliver(engine, 3)
    await sms.arrived.wait()
    at_provider = sms.received[0].delivery_id
    lifted = await engine.alerts.cancel(issued.alert_id, actor="t", reason="降雨减弱")
    sms.release.set()
    await asyncio.gather(*tasks)

    rows = {r.id: r for r in await sms_rows(db, issued.alert_id)}
    assert rows[at_provider].state == DeliveryState.SENT.value  # handed over before the cancel: it went out
    assert [m.delivery_id for m in sms.received] == [at_provider]
    assert {r.id for r in rows.values() if r.state != DeliveryState.CANCELLED.value} == {at_provider}
    sent_audit = {e.subject for e in await audited(db, "delivery.sent") if e.subject in rows}
    assert sent_audit == {at_provider}  # rows and audit agree
    async with db.session() as s:
        lifts = list(
            (
                await s.execute(
                    select(Delivery).where(
                        col(Delivery.alert_id) == issued.alert_id,
                        col(Delivery.purpose) == Purpose.LIFT.value,
                        col(Delivery.channel) == ChannelKind.SMS.value,
                    )
                )
            ).scalars()
        )
    assert [d.target_id for d in lifts] == [rows[at_provider].target_id]  # the one who got the warning hears 解除
    assert lifted.lift_notices >= 1
    await engine.stop()


async def test_a_report_that_comes_before_the_send_is_written_is_kept_and_a_stale_one_changes_nothing(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    sms = HeldProvider(ChannelLimits(concurrency=5, per_second=1000, burst=100))
    sms.release.set()
    engine = engine_with(db, clock, sms)

    async def delivered_first(message: OutboundMessage) -> None:
        await engine.inbound(StatusUpdate(ChannelKind.SMS, clock.now(), True, delivery_id=message.delivery_id))

    sms.before_answer = delivered_first
    issued = await engine.alerts.trigger(YELLOW, actor="t")
    await engine.dispatcher.drain()
    rows = await sms_rows(db, issued.alert_id)
    assert rows and {r.state for r in rows} == {DeliveryState.DELIVERED.value}
    assert all(r.provider_id and r.sent_at and r.attempts == 1 for r in rows)

    one = rows[0]
    stale = StatusUpdate(ChannelKind.SMS, clock.now(), False, delivery_id=one.id, error="twilio_30003")
    await engine.inbound(stale)
    await engine.inbound(stale)  # posted twice: taken in once
    async with db.session() as s:
        again = await s.get(Delivery, one.id)
    assert again is not None and again.state == DeliveryState.DELIVERED.value
    kept = [e for e in await audited(db, "delivery.undelivered") if e.subject == one.id]
    assert len(kept) == 1 and kept[0].data["applied"] is False
    await engine.stop()


async def test_throttling_costs_no_attempt(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    sms = HeldProvider(ChannelLimits(concurrency=5, per_second=1000, burst=100))
    sms.release.set()
    sms.throttle = 40  # far more 429s than the five attempts a delivery has
    engine = engine_with(db, clock, sms)
    issued = await engine.alerts.trigger(YELLOW, actor="t")
    for _ in range(60):
        await engine.dispatcher.drain()
        clock.advance(seconds=2)
        engine.dispatcher._buckets[ChannelKind.SMS].pause(0)
    rows = await sms_rows(db, issued.alert_id)
    assert {r.state for r in rows} == {DeliveryState.SENT.value}
    assert {r.attempts for r in rows} == {1}


def test_queue_order_puts_first_waves_before_escalations_before_lift_notices_and_red_before_yellow() -> None:
    red_first = queue_priority(Level.RED, Purpose.WARN, 0, device=False)
    yellow_first = queue_priority(Level.YELLOW, Purpose.WARN, 0, device=False)
    red_escalation = queue_priority(Level.RED, Purpose.WARN, 2, device=False)
    help_call = queue_priority(Level.BLUE, Purpose.HELP, 3, device=False)
    red_lift = queue_priority(Level.RED, Purpose.LIFT, 0, device=False)
    siren = queue_priority(Level.RED, Purpose.WARN, 0, device=True)
    assert siren < red_first < yellow_first < red_escalation < red_lift
    assert help_call < red_escalation


async def test_a_new_red_first_wave_is_claimed_before_an_older_alert_s_lift_notices(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    sms = HeldProvider(ChannelLimits(concurrency=2, per_second=1000, burst=100))
    sms.release.set()
    engine = engine_with(db, clock, sms)
    older = await engine.alerts.trigger(YELLOW, actor="t")
    await engine.dispatcher.drain()
    await engine.alerts.cancel(older.alert_id, actor="t", reason="解除")  # lift notices queue up
    clock.advance(seconds=1)
    red = await engine.alerts.trigger(
        AlertRequest(level=Level.RED, hazard="山洪", title="山洪红色预警", text="转移。", units=["500238101"]),
        actor="t",
    )
    lines = {(q.channel, q.band): q for q in await queue_lines(db, clock.now())}
    assert lines[("sms", "解除通知")].due > 0 and lines[("sms", "首轮/求助")].due > 0
    claimed = await engine.dispatcher._claim(ChannelKind.SMS, 2)
    assert {d.alert_id for d in claimed} == {red.alert_id}
    assert {d.purpose for d in claimed} == {Purpose.WARN.value}
    await engine.stop()


async def test_a_restart_repeats_only_what_was_handed_over(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    sms = HeldProvider(ChannelLimits(concurrency=1, per_second=1000, burst=100))
    engine = engine_with(db, clock, sms)
    issued = await engine.alerts.trigger(YELLOW, actor="t")
    claimed, tasks = await claim_and_deliver(engine, 3)
    await sms.arrived.wait()  # one is at the provider, two wait for the slot: then the process "dies"
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    async with db.session() as s:
        states = {
            d.id: (d.state, d.handed_at is not None)
            for d in (await s.execute(select(Delivery).where(col(Delivery.id).in_([d.id for d in claimed])))).scalars()
        }
    assert sorted(states.values()) == [("sending", False), ("sending", False), ("sending", True)]

    clock.advance(timedelta(minutes=5))  # past the lease: the claims are anyone's again
    successor = HeldProvider(ChannelLimits())
    successor.release.set()
    other = engine_with(db, clock, successor)
    other.dispatcher.node = "another-host"
    assert await other.dispatcher.resume() == 3
    resumed = await audited(db, "dispatch.resumed")
    assert resumed[-1].data["may_repeat"] == 1 and resumed[-1].data["never_handed"] == 2
    await other.dispatcher.drain()
    assert {r.state for r in await sms_rows(db, issued.alert_id)} == {DeliveryState.SENT.value}  # none lost
    await engine.stop()
    await other.stop()


async def test_a_claim_that_cannot_be_composed_goes_back_to_the_queue(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    sms = HeldProvider(ChannelLimits(concurrency=5, per_second=1000, burst=100))
    sms.release.set()
    engine = engine_with(db, clock, sms)
    real = engine.dispatcher.composer

    class FailsOnce:
        failed = False

        async def compose(self, s: Any, rows: Any) -> Any:
            if not self.failed:
                self.failed = True
                raise RuntimeError("the database went away mid-compose")
            return await real.compose(s, rows)

    engine.dispatcher.composer = FailsOnce()  # type: ignore[assignment]
    issued = await engine.alerts.trigger(YELLOW, actor="t")
    with pytest.raises(RuntimeError):
        await engine.dispatcher.run_once(ChannelKind.SMS)
    rows = await sms_rows(db, issued.alert_id)
    assert {(r.state, r.claimed_by) for r in rows} == {(DeliveryState.PENDING.value, None)}  # not held by us
    await engine.dispatcher.drain()
    assert {r.state for r in await sms_rows(db, issued.alert_id)} == {DeliveryState.SENT.value}
    await engine.stop()
