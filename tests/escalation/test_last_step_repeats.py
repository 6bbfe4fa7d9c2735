"""The loop never goes quiet: the county duty room is called again at the last step's wait until the silent
person answers or the alert is lifted (DESIGN.md: "county duty room every 5 min"), on the injected clock."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from sqlmodel import col

from alerting.answer.acks import AckService
from alerting.issue.alerts import AlertRequest, AlertService
from alerting.model.actor import Actor
from alerting.model.clock import ManualClock
from alerting.model.domain import DeadlineState, Level
from alerting.store.db import Database
from alerting.store.tables import Deadline, Delivery, Target
from escalation.engine import EscalationEngine
from escalation.policy.rules import parse_policy
from tests.conftest import SmallCounty

# first wave, then straight to the county duty room, which is the last step and repeats every five minutes
POLICY = """\
levels:
  red:
    person_steps:
      - {who: target, channels: [sms], wait_s: 300}
      - {who: county_duty, channels: [voice], wait_s: 300}
    device_steps:
      - {who: target, channels: [device], wait_s: 60}
  orange: {person_steps: [{who: target, channels: [sms], wait_s: 600}]}
  yellow: {person_steps: [{who: target, channels: [sms], wait_s: 1800}]}
  blue: {person_steps: [{who: target, channels: [sms], wait_s: 3600}]}
"""

GRID = "50023810100101"  # one grid: its worker g1 is the only person warned


async def county_calls(db: Database, alert_id: int) -> Counter[str]:
    """silent person -> how many county-step voice calls were written about them."""
    async with db.session() as s:
        rows = await s.execute(
            select(col(Target.person_id))
            .select_from(Delivery)
            .join(Target, col(Target.id) == Delivery.target_id)
            .where(col(Delivery.alert_id) == alert_id, col(Delivery.step) == 1, col(Delivery.channel) == "voice")
        )
        return Counter(str(p) for (p,) in rows.all())


async def pending(db: Database, alert_id: int) -> list[Deadline]:
    async with db.session() as s:
        rows = await s.execute(
            select(Deadline).where(
                col(Deadline.alert_id) == alert_id, col(Deadline.state) == DeadlineState.PENDING.value
            )
        )
        return list(rows.scalars())


async def issue_red(db: Database, clock: ManualClock) -> tuple[AlertService, int]:
    """A red warning to the one grid, issued on the test's clock; the service and the alert's id."""
    alerts = AlertService(db, clock, parse_policy(POLICY, "policy.yaml"))
    req = AlertRequest(
        level=Level.RED, hazard="暴雨", title="强降雨", text="预计未来3小时降雨超过100毫米。", units=[GRID]
    )
    issued = await alerts.trigger(req, actor="duty:test")
    return alerts, issued.alert_id


async def test_the_county_step_repeats_every_five_minutes_until_the_person_answers(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    _, alert_id = await issue_red(db, clock)
    engine = EscalationEngine(db, clock)

    for minute, calls in ((5, 1), (10, 2), (15, 3), (20, 4)):
        clock.advance(minutes=5)
        await engine.run_due()
        assert (await county_calls(db, alert_id))["g1"] == calls, f"after {minute} min"
        [repeat] = await pending(db, alert_id)  # the loop stays open: the next county call is due
        assert repeat.step == 1

    async with db.session() as s:
        target = (await s.execute(select(Target).where(col(Target.person_id) == "g1"))).scalar_one()
    await AckService(db).answer_on_behalf(
        alert_id, target.id, by=Actor.officer("user:duty"), reason="网格员来电", at=clock.now()
    )
    for _ in range(3):
        clock.advance(minutes=5)
        await engine.run_due()
    assert (await county_calls(db, alert_id))["g1"] == 4, "the county was called again after the answer"
    assert await pending(db, alert_id) == []


async def test_the_county_step_stops_repeating_when_the_alert_is_lifted(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    alerts, alert_id = await issue_red(db, clock)
    engine = EscalationEngine(db, clock)
    for _ in range(2):
        clock.advance(minutes=5)
        await engine.run_due()
    assert (await county_calls(db, alert_id))["g1"] == 2

    await alerts.cancel(alert_id, actor="duty:test", reason="雨停")
    for _ in range(3):
        clock.advance(minutes=5)
        await engine.run_due()
    assert (await county_calls(db, alert_id))["g1"] == 2, "the county was called again after 解除"
    assert await pending(db, alert_id) == []
