"""What the dispatcher does when providers fail: retry what may pass, give up on what cannot and escalate at
once, stop hammering a provider that is down, and pace what one recipient may receive."""

from __future__ import annotations

from collections import deque
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.answer.events import EventSink
from alerting.deliver.port import ChannelLimits, DeliveryError, OutboundMessage, Receipt, Webhook
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, DeliveryState, Level
from alerting.store.db import Database
from alerting.store.tables import Delivery
from channels.sandbox import SandboxChannel
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine
from tests.conftest import SmallCounty

# the channels record their rounds in concurrent transactions: PostgreSQL shows what SQLite's single writer hides
pytestmark = pytest.mark.both_databases

RED_G1 = AlertRequest(level=Level.RED, hazard="暴雨", title="暴雨红色预警", text="强降雨。", units=["50023810100101"])


class ScriptedProvider:
    """A channel whose provider answers each send with the next scripted outcome (then accepts everything)."""

    provider = "scripted"
    sandbox = False
    webhooks: tuple[Webhook, ...] = ()

    def __init__(self, kind: ChannelKind, script: list[DeliveryError], limits: ChannelLimits | None = None) -> None:
        self.kind, self.script = kind, deque(script)
        self.limits = limits or ChannelLimits()
        self.accepted: list[OutboundMessage] = []

    async def start(self, events: EventSink) -> None:
        return None

    async def send(self, message: OutboundMessage) -> Receipt:
        if self.script:
            raise self.script.popleft()
        self.accepted.append(message)
        return Receipt(provider=self.provider, provider_id=f"p-{len(self.accepted)}")

    async def close(self) -> None:
        return None


def engine_with(db: Database, clock: ManualClock, **channels: ScriptedProvider) -> AssembledEngine:
    chosen = {k: SandboxChannel(k) for k in ChannelKind} | {ChannelKind(k): c for k, c in channels.items()}
    settings = Settings(database_url=db.url, secret_key="t")
    return build_engine(settings, clock=clock, channels=chosen)


async def states(db: Database, channel: ChannelKind) -> list[tuple[str, int, str | None]]:
    async with db.session() as s:
        rows = await s.execute(
            select(col(Delivery.state), col(Delivery.attempts), col(Delivery.error)).where(
                col(Delivery.channel) == channel.value
            )
        )
        return [(r.state, r.attempts, r.error) for r in rows]


async def test_a_retryable_failure_is_sent_later_honouring_retry_after(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    sms = ScriptedProvider(ChannelKind.SMS, [DeliveryError("busy", retryable=True, code="http_429", retry_after=90)])
    engine = engine_with(db, clock, sms=sms)
    await engine.alerts.trigger(RED_G1, actor="t")
    await engine.dispatcher.drain()
    assert await states(db, ChannelKind.SMS) == [("pending", 1, "http_429: busy")]
    clock.advance(seconds=60)
    await engine.dispatcher.drain()
    assert sms.accepted == []  # not before the provider said
    clock.advance(seconds=40)
    await engine.dispatcher.drain()
    assert [m.address.person_id for m in sms.accepted] == ["g1"]
    assert (await states(db, ChannelKind.SMS))[0][:2] == ("sent", 2)


async def test_when_every_channel_fails_for_good_the_next_step_comes_at_once(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    invalid = [DeliveryError("invalid number", retryable=False, code="twilio_21211")]
    engine = engine_with(
        db,
        clock,
        sms=ScriptedProvider(ChannelKind.SMS, list(invalid)),
        voice=ScriptedProvider(ChannelKind.VOICE, list(invalid) * 2),
        wecom=ScriptedProvider(ChannelKind.WECOM, [DeliveryError("no such user", retryable=False, code="wecom_60111")]),
    )
    await engine.alerts.trigger(RED_G1, actor="t")
    await engine.settle()
    # without waiting five minutes: the redial (also failing), then the backup is called
    assert ("failed", 1, "twilio_21211: invalid number") in await states(db, ChannelKind.SMS)
    async with db.session() as s:
        reached = set((await s.execute(select(col(Delivery.person_id)).where(col(Delivery.step) >= 1))).scalars())
    assert "v1-deputy" in reached


async def test_a_provider_that_keeps_failing_is_paused_and_resumed(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    # five failures in a row open the breaker; with one slot, each round claims and tries one delivery
    down = [DeliveryError("503", retryable=True, code="http_503") for _ in range(5)]
    sms = ScriptedProvider(ChannelKind.SMS, down, ChannelLimits(concurrency=1))
    engine = engine_with(db, clock, sms=sms)
    engine.dispatcher.retry = engine.dispatcher.retry.__class__(max_attempts=50, base_s=1, cap_s=1, jitter=0)
    await engine.alerts.trigger(
        AlertRequest(level=Level.YELLOW, hazard="高温", title="t", text="t", units=["500238101"]), actor="t"
    )
    for _ in range(5):
        clock.advance(seconds=2)
        await engine.dispatcher.run_once(ChannelKind.SMS)
    assert engine.dispatcher.breakers[ChannelKind.SMS].state == "open"
    tried = len(sms.script)
    clock.advance(seconds=2)
    await engine.dispatcher.run_once(ChannelKind.SMS)
    assert len(sms.script) == tried  # paused: the provider was not called again
    clock.advance(timedelta(seconds=31))
    await engine.dispatcher.drain()
    await engine.dispatcher.drain()
    assert {st for st, _a, _e in await states(db, ChannelKind.SMS)} == {DeliveryState.SENT.value}
    assert engine.dispatcher.breakers[ChannelKind.SMS].state == "closed"


async def test_a_recipient_limit_defers_without_counting_an_attempt(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    wecom = ScriptedProvider(ChannelKind.WECOM, [], ChannelLimits(per_recipient_per_minute=1))
    engine = engine_with(db, clock, wecom=wecom)
    for _ in range(2):
        await engine.alerts.trigger(RED_G1, actor="t")
    await engine.dispatcher.drain()
    assert len(wecom.accepted) == 1
    assert sorted(await states(db, ChannelKind.WECOM)) == [("pending", 0, None), ("sent", 1, None)]
