"""The key the audit is signed with: missing, it stops the engine before anything is written; rotated, the new key
signs and the old one still verifies; a chain from before keys verifies as the plain SHA-256 it is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, insert, select, text, update
from sqlmodel import col
from typer.testing import CliRunner

from alerting.audit import chain as audit
from alerting.audit import configured
from alerting.audit.chain import GENESIS, Entry, chain_hash
from alerting.audit.checkpoints import Checkpointer
from alerting.audit.keys import AuditKey, AuditKeyMissing
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import Level
from alerting.store.db import Database, upgrade
from alerting.store.tables import Alert, AuditEvent, AuditHead
from config.cli.main import app
from config.settings import Settings
from config.wiring import audit_setup
from tests.alerting.audit.tamper import unguarded
from tests.conftest import TEST_AUDIT_KEY, SmallCounty, build_small_county
from tests.harness import sandbox_engine
from tests.postgres import PostgresServer

ORANGE = AlertRequest(level=Level.ORANGE, hazard="暴雨", title="暴雨橙色预警", text="强降雨。", units=["500238101001"])
NEW_KEY = "the-key-after-the-rotation-0123456789"


async def issue(db: Database, clock: ManualClock) -> int:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(ORANGE, actor="duty:test")
    await engine.dispatcher.drain()
    return issued.alert_id


@pytest.mark.both_databases
async def test_a_rotation_verifies_with_the_old_key_configured(
    db: Database, clock: ManualClock, county: SmallCounty, monkeypatch: pytest.MonkeyPatch
) -> None:
    await issue(db, clock)
    old, new = AuditKey.from_secret(TEST_AUDIT_KEY), AuditKey.from_secret(NEW_KEY)
    # the rotation as the README says: the new key in JIAOYING_AUDIT_KEY, the old one moved to JIAOYING_AUDIT_KEYS
    monkeypatch.setenv("JIAOYING_AUDIT_KEY", NEW_KEY)
    monkeypatch.setenv("JIAOYING_AUDIT_KEYS", json.dumps([TEST_AUDIT_KEY]))
    await issue(db, clock)

    result = await audit.verify(db)
    assert result.ok
    assert result.keys == (old.id, new.id)
    async with db.session() as s:
        first_new = await s.scalar(select(func.min(AuditEvent.seq)).where(col(AuditEvent.key_id) == new.id))
    assert first_new is not None and first_new > 1

    # the old key dropped from the settings too soon: the rows it signed cannot be checked, and verify says which
    monkeypatch.setenv("JIAOYING_AUDIT_KEYS", "[]")
    configured.install(audit_setup(Settings()))
    result = await audit.verify(db)
    assert not result.ok
    assert result.first_bad_seq == 1
    assert f"signed with audit key {old.id}, which is not configured" in result.reason


async def test_without_a_key_nothing_is_written_and_the_engine_will_not_start(
    db: Database, clock: ManualClock, county: SmallCounty, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JIAOYING_AUDIT_KEY")
    engine = sandbox_engine(db, clock)
    with pytest.raises(AuditKeyMissing, match="JIAOYING_AUDIT_KEY is not set"):
        await engine.alerts.trigger(ORANGE, actor="duty:test")
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Alert)) == 0  # the alert went with its audit
        assert await s.scalar(select(func.count()).select_from(AuditEvent)) == 0
    with pytest.raises(AuditKeyMissing):
        await engine.start(loops=False)


def test_serve_refuses_without_a_key_in_one_line(tmp_path: Path) -> None:
    env = {
        "JIAOYING_AUDIT_KEY": None,
        "JIAOYING_SECRET_KEY": "a-real-secret-for-this-test-0123456789",
        "JIAOYING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/serve.db",
        "JIAOYING_CONFIG": f"{tmp_path}/none.toml",
    }
    result = CliRunner().invoke(app, ["serve", "--port", "0"], env=env)
    assert result.exit_code == 2
    assert "JIAOYING_AUDIT_KEY is not set" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("given", "named"),
    [({"audit_key": "short"}, "audit_key"), ({"audit_keys": [TEST_AUDIT_KEY, "too-short"]}, "audit_keys[2]")],
)
def test_a_short_key_is_refused_naming_the_setting(given: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**given)  # type: ignore[arg-type]
    assert named in str(refused.value)
    assert "at least 32 characters" in str(refused.value)


# --- a database that was running before the audit was keyed -------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database, for a test that runs the migrations itself."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/before.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = await server.create_database()
    yield url
    await server.drop_database(url)


async def write_as_before_keys(db: Database, rows: int) -> None:
    """What the engine wrote before migration 0006: plain SHA-256 over the same canonical body, no key column."""
    prev, at = GENESIS, datetime(2026, 7, 1, 2, 0, tzinfo=UTC)
    values = []
    for seq in range(1, rows + 1):
        entry = Entry("account.signed_in", f"user:duty{seq}", at + timedelta(minutes=seq), None, None, {"n": seq})
        digest = chain_hash(prev, seq, entry)
        values.append(
            {
                "seq": seq, "at": entry.at, "alert_id": None, "kind": entry.kind, "actor": entry.actor,
                "subject": None, "data": json.dumps(entry.data), "prev_hash": prev, "hash": digest,
            }
        )  # fmt: skip
        prev = digest
    async with db.session() as s:
        columns = "seq, at, alert_id, kind, actor, subject, data, prev_hash, hash"
        params = ", ".join(f":{c.strip()}" for c in columns.split(","))
        await s.execute(text(f"INSERT INTO audit_event ({columns}) VALUES ({params})"), values)
        await s.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=rows, hash=prev))


async def test_a_chain_from_before_the_key_verifies_as_plain_sha256_and_the_keyed_rows_seal_it(
    unmigrated: str, clock: ManualClock
) -> None:
    db = Database(unmigrated)
    try:
        await asyncio.to_thread(upgrade, unmigrated, "0005")
        await write_as_before_keys(db, 6)
        await db.upgrade()  # the upgrade of a running county's database

        before = await audit.verify(db)
        assert before.ok and before.rows == 6
        assert (before.unkeyed, before.keys) == (6, ())
        assert "rows 1-6 were written before the chain was keyed (plain SHA-256" in before.summary

        await build_small_county(db)
        await issue(db, clock)
        after = await audit.verify(db)
        assert after.ok and after.rows > 6
        assert after.unkeyed == 6 and len(after.keys) == 1

        # the old rows rewritten and rehashed in plain SHA-256 as before: the first keyed row no longer fits them
        async with unguarded(db) as s:
            await s.execute(text("UPDATE audit_event SET actor = 'user:nobody' WHERE seq = 2"))
            rows = (await s.execute(select(AuditEvent).order_by(col(AuditEvent.seq)).limit(7))).scalars().all()
            prev = GENESIS
            for row in rows[:6]:
                entry = Entry(row.kind, row.actor, row.at, row.alert_id, row.subject, row.data)
                prev_row, prev = prev, chain_hash(prev, row.seq, entry)
                await s.execute(
                    update(AuditEvent).where(col(AuditEvent.seq) == row.seq).values(prev_hash=prev_row, hash=prev)
                )
            await s.execute(update(AuditEvent).where(col(AuditEvent.seq) == 7).values(prev_hash=prev))
        forged = await audit.verify(db)
        assert not forged.ok
        assert forged.first_bad_seq == 7
        assert "does not match its hash" in forged.reason
    finally:
        await db.close()


async def test_insert_of_rows_without_a_key_after_keyed_ones_is_named(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    """Appending is not refused by the database (it is how the chain grows); an appended row without the key is."""
    await issue(db, clock)
    async with db.session() as s:
        seq, prev = (await s.execute(select(col(AuditHead.seq), col(AuditHead.hash)))).one()
        entry = Entry("alert.cancelled", "duty:someone", clock.now(), 1, None, {"reason": "假的"})
        digest = chain_hash(prev, seq + 1, entry)
        await (await s.connection()).execute(
            insert(AuditEvent),
            [{"seq": seq + 1, "at": entry.at, "alert_id": 1, "kind": entry.kind, "actor": entry.actor,
              "subject": None, "data": dict(entry.data), "prev_hash": prev, "hash": digest}],
        )  # fmt: skip
        await s.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=seq + 1, hash=digest))
    result = await audit.verify(db)
    assert not result.ok
    assert result.first_bad_seq == seq + 1
    assert "unkeyed after keyed rows" in result.reason


async def test_checkpoints_signed_before_a_rotation_still_hold(
    db: Database, clock: ManualClock, county: SmallCounty, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoints.jsonl"
    monkeypatch.setenv("JIAOYING_AUDIT_CHECKPOINTS", str(path))
    await issue(db, clock)
    before = await Checkpointer(db, clock, path, AuditKey.from_secret(TEST_AUDIT_KEY)).write()
    monkeypatch.setenv("JIAOYING_AUDIT_KEY", NEW_KEY)
    monkeypatch.setenv("JIAOYING_AUDIT_KEYS", json.dumps([TEST_AUDIT_KEY]))
    await issue(db, clock)
    clock.advance(minutes=1)
    after = await Checkpointer(db, clock, path, AuditKey.from_secret(NEW_KEY)).write()
    assert before is not None and after is not None

    result = await audit.verify(db)

    assert result.ok
    assert result.checkpoint is not None and result.checkpoint.seq == after.seq
