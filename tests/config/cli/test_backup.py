"""`jiaoying backup` while the engine writes, and `jiaoying restore` into a fresh directory: the copy holds the
alert as it stood, its audit chain verifies there, and neither command overwrites what it should not."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import col
from typer.testing import CliRunner

from alerting.audit import chain as audit
from alerting.issue.alerts import AlertRequest
from alerting.model.actor import Actor
from alerting.model.clock import ManualClock
from alerting.model.domain import Level, TargetState
from alerting.store.backup import BackupError, backup, restore
from alerting.store.db import Database
from alerting.store.tables import Alert, AuditEvent, Target
from config.cli.main import app
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

RED = AlertRequest(
    level=Level.RED, hazard="暴雨", title="凤凰镇强降雨", text="预计未来3小时降雨超过100毫米。", units=["500238101"]
)


def file_of(db: Database) -> Path:
    return Path(db.url.split("///", 1)[1])


async def test_a_backup_taken_mid_alert_while_answers_come_in_restores_whole(
    tmp_path: Path, db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    await engine.start(loops=False)
    try:
        issued = await engine.alerts.trigger(RED, actor="duty:test")
        await engine.dispatcher.drain()
        async with db.session() as s:
            people = [t for t in (await s.execute(select(Target).where(col(Target.person_id).is_not(None)))).scalars()]

        async def keep_answering() -> None:  # the engine keeps writing while the copy is taken
            for t in people:
                await engine.acks.answer_on_behalf(
                    issued.alert_id, t.id, by=Actor.officer("duty:test"), reason="电话确认", at=clock.now()
                )
                await asyncio.sleep(0.01)

        writer = asyncio.create_task(keep_answering())
        await asyncio.sleep(0.02)
        copy = tmp_path / "backups" / "mid-alert.db"
        copy.parent.mkdir()
        taken = await asyncio.to_thread(backup, file_of(db), copy)
        await writer
    finally:
        await engine.stop()

    fresh = tmp_path / "fresh" / "jiaoying.db"
    fresh.parent.mkdir()
    restored = restore(copy, fresh, replace=False)
    assert restored.alerts == taken.alerts == 1 and restored.audit_events == taken.audit_events
    there = Database(f"sqlite+aiosqlite:///{fresh}")
    try:
        verified = await audit.verify(there)
        assert verified.ok, verified.reason
        async with there.session() as s:
            events = await s.scalar(select(col(AuditEvent.seq)).order_by(col(AuditEvent.seq).desc()).limit(1))
            alert = await s.get(Alert, issued.alert_id)
            states = list(
                (await s.execute(select(col(Target.state)).where(col(Target.alert_id) == issued.alert_id))).scalars()
            )
        assert verified.rows == taken.audit_events == events
        assert alert is not None and alert.title == RED.title
        answered = sum(st == TargetState.ANSWERED_FOR.value for st in states)
        # the answers written before the snapshot are in it, and every target is there, answered or still open
        assert len(states) == issued.targets and answered + states.count(TargetState.OPEN.value) == len(states)
    finally:
        await there.close()


async def test_a_backup_never_overwrites_and_a_restore_replaces_only_when_asked(tmp_path: Path, db: Database) -> None:
    copy = tmp_path / "copy.db"
    backup(file_of(db), copy)
    with pytest.raises(BackupError, match="exists: a backup never overwrites"):
        backup(file_of(db), copy)
    with pytest.raises(BackupError, match="say --replace"):
        restore(copy, file_of(db), replace=False)
    not_a_store = tmp_path / "notes.db"
    sqlite3.connect(not_a_store).close()
    with pytest.raises(BackupError, match="not a jiaoying database"):
        restore(not_a_store, tmp_path / "x.db", replace=False)
    garbage = tmp_path / "photo.db"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 not sqlite at all" * 100)
    with pytest.raises(BackupError, match=r"photo\.db"):
        restore(garbage, tmp_path / "y.db", replace=False)
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "y.db").exists()


async def test_restore_refuses_while_an_engine_is_alive_on_the_store(
    tmp_path: Path, db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    copy = tmp_path / "copy.db"
    backup(file_of(db), copy)
    engine = sandbox_engine(db, clock)
    await engine.start(loops=False)  # registers, with a fresh heartbeat
    try:
        with pytest.raises(BackupError, match="still running"):
            restore(copy, file_of(db), replace=True, now=clock.now())
    finally:
        await engine.stop()
    with contextlib.closing(sqlite3.connect(file_of(db))) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert restore(copy, file_of(db), replace=True, now=clock.now()).alerts == 0  # stopped: now it may


def test_the_commands_say_what_they_did(tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIAOYING_DATABASE_URL", db.url)
    runner = CliRunner()
    made = runner.invoke(app, ["backup", str(tmp_path / "b.db")])
    assert made.exit_code == 0, made.output
    assert "Backed up to" in made.output and "audit events" in made.output
    again = runner.invoke(app, ["backup", str(tmp_path / "b.db")])
    assert again.exit_code == 2 and "a backup never overwrites" in again.output
    monkeypatch.setenv("JIAOYING_DATABASE_URL", "postgresql+asyncpg://u:p@127.0.0.1/county")
    refused = runner.invoke(app, ["backup", str(tmp_path / "pg.db")])
    assert refused.exit_code == 2 and "pg_dump" in refused.output
