"""A big alert starts going out at once: the critical first wave is committed first, grid workers follow in pages.

The small county has three grid workers; with pages of one the same story plays as on a county of 100,000.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.issue import alerts as alerts_module
from alerting.issue.planning import resolve_targets
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Level
from alerting.model.plan import PlanSet
from alerting.store.db import Database
from alerting.store.tables import Alert, AuditEvent, Delivery, Target
from tests.conftest import SmallCounty
from tests.harness import RED, outbox, sandbox_engine

pytestmark = pytest.mark.both_databases


@pytest.fixture
def pages_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_module, "FIRST_GRID_WORKERS", 1)
    monkeypatch.setattr(alerts_module, "PAGE", 1)


async def targets_of(db: Database, alert_id: int) -> list[Target]:
    async with db.session() as s:
        return list((await s.execute(select(Target).where(col(Target.alert_id) == alert_id))).scalars())


async def test_paged_issuing_reaches_exactly_whom_issuing_at_once_would(
    db: Database, clock: ManualClock, county: SmallCounty, pages_of_one: None
) -> None:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(RED, actor="duty:test")
    targets = await targets_of(db, issued.alert_id)
    async with db.session() as s:
        whole = await resolve_targets(s, RED.units, engine.alerts.planner.plan_for(Level.RED, RED.hazard, RED.units))
        alert = await s.get(Alert, issued.alert_id)
        planned = list((await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == "alert.planned"))).scalars())
        deliveries = list(
            (await s.execute(select(Delivery).where(col(Delivery.alert_id) == issued.alert_id))).scalars()
        )
    assert sorted((t.person_id or "", t.device_id or "", t.role) for t in targets) == sorted(
        (t.person_id or "", t.device_id or "", t.role) for t in whole
    )
    assert issued.targets == len(targets) and issued.deliveries == len(deliveries)
    assert alert is not None and not alert.planning_pending
    assert len(planned) == 1 and planned[0].data["targets"] == len(targets)
    await engine.dispatcher.drain()
    assert sorted(outbox(engine, ChannelKind.SMS)) == sorted(t.person_id for t in targets if t.person_id)
    await engine.stop()


async def test_the_first_commit_holds_the_critical_first_wave(
    db: Database, clock: ManualClock, county: SmallCounty, pages_of_one: None
) -> None:
    engine = sandbox_engine(db, clock)
    async with db.session() as s:
        issued, page = await engine.alerts._issue(s, RED, actor="duty:test", now=clock.now())
    assert page is not None  # more grid workers to come
    first = await targets_of(db, issued.alert_id)
    roles = {t.role for t in first}
    assert {"township_duty", "village_head"} <= roles  # every responsible person above the grid
    assert sum(1 for t in first if t.role == "grid_worker") == 1  # and the first page of grid workers
    assert any(t.device_id for t in first)  # sirens and broadcast zones
    # the process dies here; the next one to start finishes the plan, and nobody is planned twice
    assert await engine.alerts.resume_planning() == 1
    after = await targets_of(db, issued.alert_id)
    assert len(after) == len({(t.person_id, t.device_id) for t in after})
    assert sorted(t.person_id or "" for t in after if t.role == "grid_worker") == ["g1", "g2", "g3"]
    assert await engine.alerts.resume_planning() == 0
    await engine.stop()


async def test_a_cancel_between_pages_stops_the_rest_of_the_plan(
    db: Database, clock: ManualClock, county: SmallCounty, pages_of_one: None
) -> None:
    engine = sandbox_engine(db, clock)
    async with db.session() as s:
        issued, page = await engine.alerts._issue(s, RED, actor="duty:test", now=clock.now())
    before = len(await targets_of(db, issued.alert_id))
    await engine.alerts.cancel(issued.alert_id, actor="duty:test", reason="解除")
    assert await engine.alerts.resume_planning() == 0  # a lifted alert has nobody left to call
    assert page is not None
    more, nxt = await engine.alerts._plan_page(issued.alert_id, page, clock.now())
    assert (more.targets, nxt) == (0, None)
    assert len(await targets_of(db, issued.alert_id)) == before
    async with db.session() as s:
        alert = await s.get(Alert, issued.alert_id)
    assert alert is not None and not alert.planning_pending
    assert PlanSet.stored(alert.plan).default.level is Level.RED
    await engine.stop()
