"""A crash loses nothing: what was in flight is sent after restart, and pending escalation steps still fire."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, DeliveryState
from alerting.store.db import Database
from alerting.store.tables import Delivery
from tests.conftest import SmallCounty
from tests.harness import RED, outbox, sandbox_engine
from tests.processes import exited_process

pytestmark = pytest.mark.both_databases


async def delivery_states(db: Database, alert_id: int) -> dict[str, int]:
    async with db.session() as s:
        rows = await s.execute(
            select(col(Delivery.state), func.count())
            .where(col(Delivery.alert_id) == alert_id)
            .group_by(col(Delivery.state))
        )
        return {str(k): int(v) for k, v in rows.all()}


async def test_deliveries_in_flight_when_the_process_dies_are_sent_after_restart(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    first = sandbox_engine(db, clock)
    first.registry.identity = exited_process()  # it runs as a process of this machine that is about to die
    await first.start(loops=False)
    issued = await first.alerts.trigger(RED, actor="duty:test")
    # the process claims the SMS batch and dies before any result is recorded
    claimed = await first.dispatcher._claim(ChannelKind.SMS)
    assert len(claimed) == 6
    await first.dispatcher.drain()  # other channels went out; the claimed SMS are stuck in 'sending'
    assert (await delivery_states(db, issued.alert_id)).get(DeliveryState.SENDING.value) == 6

    second = sandbox_engine(Database(db.url), clock)  # restarted at once: the first's heartbeat is still fresh
    await second.start(loops=False)
    await second.dispatcher.drain()
    states = await delivery_states(db, issued.alert_id)
    assert states == {DeliveryState.SENT.value: issued.deliveries}
    assert sorted(outbox(second, ChannelKind.SMS)) == ["g1", "g2", "g3", "tw-duty", "v1-head", "v2-head"]
    await second.stop()


async def test_another_node_takes_over_only_after_the_lease_runs_out(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    first = sandbox_engine(db, clock)
    issued = await first.alerts.trigger(RED, actor="duty:test")
    await first.dispatcher._claim(ChannelKind.SMS)
    other = sandbox_engine(Database(db.url), clock)
    other.dispatcher.node = "another-host"
    assert await other.dispatcher.resume() == 0  # the first node may still be sending them
    clock.advance(minutes=3)
    assert await other.dispatcher.resume() == 6
    await other.dispatcher.drain()
    assert (await delivery_states(db, issued.alert_id)).get(DeliveryState.SENDING.value) is None
    await other.stop()


async def test_escalation_steps_survive_a_restart_and_fire_once(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    first = sandbox_engine(db, clock)
    await first.start(loops=False)
    await first.alerts.trigger(RED.model_copy(update={"units": ["50023810100101"]}), actor="duty:test")
    await first.settle()
    await first.stop()  # the engine is down while the answer window runs out

    clock.advance(minutes=12)  # two steps overdue
    second = sandbox_engine(Database(db.url), clock)
    await second.start(loops=False)
    await second.settle()
    # the overdue redial fires at once; the next step waits its full window from then
    assert outbox(second, ChannelKind.VOICE) == ["g1"]
    clock.advance(minutes=5)
    await second.settle()
    assert outbox(second, ChannelKind.VOICE) == ["g1", "v1-deputy"]
    await second.stop()
