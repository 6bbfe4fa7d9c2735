"""The database itself refuses to change the audit: UPDATE and DELETE on its rows fail on SQLite and PostgreSQL,
and the chain's head only moves forward, to a row that is there."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alerting.audit import chain as audit
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import Level
from alerting.store.db import Database
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

pytestmark = pytest.mark.both_databases

ORANGE = AlertRequest(level=Level.ORANGE, hazard="暴雨", title="暴雨橙色预警", text="强降雨。", units=["500238101001"])

REFUSED = [
    "UPDATE audit_event SET actor = 'someone-else' WHERE seq = 3",
    "UPDATE audit_event SET hash = prev_hash",
    "DELETE FROM audit_event WHERE seq = (SELECT max(seq) FROM audit_event)",
    "DELETE FROM audit_event",
    "DELETE FROM audit_head",
    # the head put back to an earlier row: the rows after it would drop out of every check
    "UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit_event WHERE seq = 2)",
    # the head pointed at a hash no row has ('x' is no hex digit, so the value always changes)
    "UPDATE audit_head SET hash = 'x' || substr(hash, 2)",
    "UPDATE audit_head SET seq = seq + 1",
]


async def issue(db: Database, clock: ManualClock) -> None:
    engine = sandbox_engine(db, clock)
    await engine.alerts.trigger(ORANGE, actor="duty:test")
    await engine.dispatcher.drain()


async def count_and_end(db: Database) -> tuple[int, int, str]:
    async with db.session() as s:
        rows = (await s.execute(text("SELECT count(*) FROM audit_event"))).scalar_one()
        seq, digest = (await s.execute(text("SELECT seq, hash FROM audit_head"))).one()
    return rows, seq, digest


@pytest.mark.parametrize("statement", REFUSED)
async def test_the_database_refuses_to_change_the_audit(
    db: Database, clock: ManualClock, county: SmallCounty, statement: str
) -> None:
    await issue(db, clock)
    before = await count_and_end(db)
    with pytest.raises(DBAPIError) as refused:
        async with db.session() as s:
            await s.execute(text(statement))
    assert "audit" in str(refused.value.orig)  # the trigger's own words, not some other failure
    assert await count_and_end(db) == before
    assert (await audit.verify(db)).ok


async def test_truncate_is_refused_on_postgresql(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has no TRUNCATE; its DELETE without WHERE is refused above")
    await issue(db, clock)
    for table in ("audit_event", "audit_head"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.session() as s:
                await s.execute(text(f"TRUNCATE {table} CASCADE"))
    assert (await audit.verify(db)).ok


async def test_appending_still_works_after_a_refusal(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    await issue(db, clock)
    with pytest.raises(DBAPIError):
        async with db.session() as s:
            await s.execute(text("DELETE FROM audit_event"))
    await issue(db, clock)  # a second alert: its rows and the head move on as ever
    rows, seq, _ = await count_and_end(db)
    result = await audit.verify(db)
    assert result.ok and result.rows == rows == seq
