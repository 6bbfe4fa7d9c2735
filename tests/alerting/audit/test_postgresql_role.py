"""The engine's PostgreSQL role as docs/audit/postgresql-engine-role.sql grants it: the engine issues, sends and
verifies as ever, and can neither change the audit nor take away the triggers that refuse it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alerting.audit import chain as audit
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import Level
from alerting.store.db import Database
from tests.conftest import _migrated, build_small_county
from tests.harness import sandbox_engine
from tests.postgres import PostgresServer

ROLE_SQL = Path(__file__).parents[3] / "docs" / "audit" / "postgresql-engine-role.sql"
ORANGE = AlertRequest(level=Level.ORANGE, hazard="暴雨", title="暴雨橙色预警", text="强降雨。", units=["500238101001"])


@pytest.fixture
async def engine_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A county database the owner migrated and granted as the script says; the URL the engine connects with."""
    owner_url = await postgres_server.create_database(template=await _migrated(postgres_server))
    owner = Database(owner_url)
    await build_small_county(owner)
    await owner.close()
    name = owner_url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(host="127.0.0.1", port=postgres_server.port, user="postgres", database=name)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'jiaoying_engine'"):
            await conn.execute("CREATE ROLE jiaoying_engine LOGIN")
        await conn.execute(await asyncio.to_thread(ROLE_SQL.read_text))
    finally:
        await conn.close()
    yield owner_url.replace("postgres@", "jiaoying_engine@")
    await postgres_server.drop_database(owner_url)


ATTEMPTS = [
    ("UPDATE audit_event SET actor = 'someone-else' WHERE seq = 3", "permission denied"),
    ("DELETE FROM audit_event", "permission denied"),
    ("TRUNCATE audit_event", "permission denied"),
    ("DELETE FROM audit_head", "permission denied"),
    ("INSERT INTO audit_head (id, seq, hash) VALUES (2, 0, 'x')", "permission denied"),
    ("UPDATE audit_head SET seq = 1, hash = (SELECT hash FROM audit_event WHERE seq = 1)", "only moves forward"),
    ("DROP TRIGGER audit_event_append_only ON audit_event", "must be owner"),
    ("ALTER TABLE audit_event DISABLE TRIGGER ALL", "must be owner"),
    ("ALTER TABLE audit_head DISABLE TRIGGER audit_head_forward_only", "must be owner"),
    ("UPDATE alembic_version SET version_num = '0001'", "permission denied"),
]


async def test_the_engine_role_works_and_cannot_change_the_audit(engine_url: str, clock: ManualClock) -> None:
    db = Database(engine_url)
    try:
        await db.upgrade()  # what `serve` does at start: nothing to do, and allowed
        engine = sandbox_engine(db, clock)
        issued = await engine.alerts.trigger(ORANGE, actor="duty:test")
        await engine.dispatcher.drain()
        await engine.alerts.cancel(issued.alert_id, actor="duty:test", reason="雨停")
        before = await audit.verify(db)
        assert before.ok and before.rows > 5

        for statement, refusal in ATTEMPTS:
            with pytest.raises(DBAPIError) as refused:
                async with db.session() as s:
                    await s.execute(text(statement))
            assert refusal in str(refused.value.orig), statement

        after = await audit.verify(db)
        assert after.ok and after.rows == before.rows
    finally:
        await db.close()
