"""The audit trail is append-only in fact: editing or removing any row is caught and named, also by someone who
dropped the triggers that refuse it first."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from alerting.audit import chain as audit
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import Level
from alerting.store.db import Database
from tests.alerting.audit.tamper import unguarded
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

pytestmark = pytest.mark.both_databases


async def record_an_alert(db: Database, clock: ManualClock) -> None:
    engine = sandbox_engine(db, clock)
    await engine.alerts.trigger(
        AlertRequest(level=Level.ORANGE, hazard="暴雨", title="暴雨橙色预警", text="强降雨。", units=["500238101001"]),
        actor="duty:test",
    )
    await engine.dispatcher.drain()


async def verify(db: Database) -> audit.Verification:
    return await audit.verify(db, batch=7)  # small batches, so the walk crosses batch ends


async def test_an_untouched_chain_verifies(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    await record_an_alert(db, clock)
    result = await verify(db)
    assert result.ok
    assert result.rows > 5
    assert result.unkeyed == 0  # a new database is keyed from its first row
    assert len(result.keys) == 1


async def test_an_edited_row_is_found(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    await record_an_alert(db, clock)
    async with unguarded(db) as s:
        await s.execute(text("UPDATE audit_event SET actor = 'someone-else' WHERE seq = 3"))
    result = await verify(db)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert "edited" in result.reason


async def test_a_deleted_row_is_found(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    await record_an_alert(db, clock)
    async with unguarded(db) as s:
        await s.execute(text("DELETE FROM audit_event WHERE seq = 4"))
    result = await verify(db)
    assert not result.ok
    assert result.first_bad_seq == 4


async def test_a_rewritten_tail_does_not_match_the_head(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    await record_an_alert(db, clock)
    async with unguarded(db) as s:
        last = (await s.execute(text("SELECT max(seq) FROM audit_event"))).scalar_one()
        await s.execute(text("DELETE FROM audit_event WHERE seq = :seq"), {"seq": last})
    result = await verify(db)
    assert not result.ok
