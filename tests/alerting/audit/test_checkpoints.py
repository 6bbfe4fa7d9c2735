"""Checkpoints outside the database: written when the chain moved, at least once a minute and at once when an
alert is issued or ends; read back line by line; and `jiaoying audit verify` reports against the latest one."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs
from typer.testing import CliRunner

from alerting.audit import chain as audit
from alerting.audit import configured
from alerting.audit.checkpoints import Checkpointer, CheckpointFileError, checkpoint_file, latest, read_checkpoints
from alerting.audit.keys import AuditKey, Keyring
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import Level
from alerting.store.db import Database
from config.cli.main import app
from tests.alerting.audit.tamper import unguarded
from tests.conftest import SmallCounty, build_small_county
from tests.harness import sandbox_engine

ORANGE = AlertRequest(level=Level.ORANGE, hazard="暴雨", title="暴雨橙色预警", text="强降雨。", units=["500238101001"])


def signing() -> AuditKey:
    key = configured.current().keyring.signing
    assert key is not None
    return key


async def lines(path: Path) -> list[dict[str, object]]:
    text_ = await asyncio.to_thread(path.read_text)
    return [json.loads(line) for line in text_.splitlines()]


async def sign_in_event(db: Database, clock: ManualClock) -> None:
    async with db.session() as s:
        await audit.record(s, "account.signed_in", actor="user:duty", at=clock.now())


async def test_written_when_the_chain_moved_once_a_minute_and_at_once_for_an_alert(
    db: Database, clock: ManualClock, county: SmallCounty, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoints.jsonl"
    checkpointer = Checkpointer(db, clock, path, signing())
    await sign_in_event(db, clock)
    first = await checkpointer.tick()
    assert first is not None and first.seq == 1

    clock.advance(seconds=30)
    assert await checkpointer.tick() is None  # nothing new
    await sign_in_event(db, clock)
    assert await checkpointer.tick() is None  # moved, but within the minute and no alert began or ended
    clock.advance(seconds=30)
    minute = await checkpointer.tick()
    assert minute is not None and minute.seq == 2

    clock.advance(seconds=5)
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(ORANGE, actor="duty:test")
    issuing = await checkpointer.tick()  # five seconds after the last one: the alert does not wait for the minute
    assert issuing is not None and issuing.seq > 2
    clock.advance(seconds=5)
    await engine.alerts.cancel(issued.alert_id, actor="duty:test", reason="雨停")
    lifting = await checkpointer.tick()
    assert lifting is not None and lifting.seq > issuing.seq

    written = await lines(path)
    assert [w["seq"] for w in written] == [1, 2, issuing.seq, lifting.seq]
    assert {w["key"] for w in written} == {signing().id}
    points = await asyncio.to_thread(read_checkpoints, path, configured.current().keyring)
    assert latest(points) == replace(lifting, line=4)


def test_a_directory_gets_its_own_file_and_a_line_cut_short_is_left_out(tmp_path: Path) -> None:
    assert checkpoint_file(tmp_path) == tmp_path / "audit-checkpoints.jsonl"
    assert checkpoint_file(tmp_path / "mine.log") == tmp_path / "mine.log"
    assert checkpoint_file(tmp_path / "not-yet") == tmp_path / "not-yet" / "audit-checkpoints.jsonl"
    key = AuditKey.from_secret("checkpoint-test-key-0123456789abcdef")
    from datetime import UTC, datetime

    from alerting.audit.checkpoints import Checkpoint

    whole = Checkpoint(datetime(2026, 7, 1, tzinfo=UTC), 12, "ab" * 32, key.id).to_line(key)
    path = tmp_path / "mine.log"
    path.write_text(whole + whole[:20])  # the power went while the second line was being written
    points = read_checkpoints(path, Keyring(key))
    assert [(p.seq, p.line) for p in points] == [(12, 1)]
    assert read_checkpoints(tmp_path / "never-written.log", Keyring(key)) == []


async def test_the_engine_writes_one_at_start_and_stop_and_refuses_a_file_it_cannot_write(
    db: Database, clock: ManualClock, county: SmallCounty, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JIAOYING_AUDIT_CHECKPOINTS", str(tmp_path))  # a directory: the file goes inside
    engine = sandbox_engine(db, clock)
    assert engine.checkpointer is not None
    await sign_in_event(db, clock)
    await engine.start(loops=False)
    await engine.alerts.trigger(ORANGE, actor="duty:test")
    await engine.stop()
    written = await lines(tmp_path / "audit-checkpoints.jsonl")
    assert written[0]["seq"] == 1
    assert len(written) == 2 and int(str(written[1]["seq"])) > 1  # the chain's end as the engine left it

    blocked = tmp_path / "a-file"
    await asyncio.to_thread(blocked.write_text, "")
    monkeypatch.setenv("JIAOYING_AUDIT_CHECKPOINTS", str(blocked / "checkpoints.jsonl"))
    other = sandbox_engine(Database(db.url), clock)
    with pytest.raises(CheckpointFileError, match=r"JIAOYING_AUDIT_CHECKPOINTS: cannot write checkpoints to .*a-file"):
        await other.start(loops=False)
    await other.db.close()


# --- `jiaoying audit verify`, as the auditor runs it ------------------------------------------------------------


def cli_env(tmp_path: Path) -> dict[str, str | None]:
    return {
        "JIAOYING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'county.db'}",
        "JIAOYING_AUDIT_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "JIAOYING_CONFIG": str(tmp_path / "none.toml"),
        "JIAOYING_AUDIT_KEY": os.environ["JIAOYING_AUDIT_KEY"],
    }


async def a_county_with_a_checkpointed_alert(tmp_path: Path) -> int:
    """An alert issued and lifted, a checkpoint after each; the rows of the lift then removed, head and all."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'county.db'}"
    (tmp_path / "checkpoints").mkdir()
    db = Database(url)
    try:
        await db.upgrade()
        await build_small_county(db)
        clock = ManualClock()
        path = checkpoint_file(tmp_path / "checkpoints")
        checkpointer = Checkpointer(db, clock, path, signing())
        engine = sandbox_engine(db, clock)
        issued = await engine.alerts.trigger(ORANGE, actor="duty:test")
        kept = await checkpointer.tick()
        await engine.alerts.cancel(issued.alert_id, actor="duty:test", reason="雨停")
        clock.advance(seconds=5)
        await checkpointer.tick()
        assert kept is not None
        async with unguarded(db) as s:
            await s.execute(text("DELETE FROM audit_event WHERE seq > :seq"), {"seq": kept.seq})
            await s.execute(text("UPDATE audit_head SET seq = :seq, hash = :h"), {"seq": kept.seq, "h": kept.hash})
        return kept.seq
    finally:
        await db.close()


def test_audit_verify_names_the_removed_tail_and_the_checkpoint(tmp_path: Path) -> None:
    kept = asyncio.run(a_county_with_a_checkpointed_alert(tmp_path))
    result = CliRunner().invoke(app, ["audit", "verify"], env=cli_env(tmp_path))
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert f"Audit chain BROKEN at row {kept + 1}" in out
    assert f"the chain ends at row {kept} but checkpoint line 2" in out
    assert "were removed (truncated or rolled back)" in out
    assert "latest checkpoint: row" in out and "audit-checkpoints.jsonl" in out


def test_audit_verify_of_an_intact_chain_says_which_checkpoint_it_was_held_to(tmp_path: Path) -> None:
    async def intact() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'county.db'}")
        await db.upgrade()
        await sign_in_event(db, ManualClock())
        await Checkpointer(db, ManualClock(), tmp_path / "checkpoints", signing()).write()
        await db.close()

    asyncio.run(intact())
    env = cli_env(tmp_path) | {"JIAOYING_AUDIT_CHECKPOINTS": str(tmp_path / "checkpoints")}
    result = CliRunner().invoke(app, ["audit", "verify"], env=env)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "Audit chain verified: 1 events, unbroken." in out
    assert f"keyed rows signed with audit key {signing().id}" in out
    assert "latest checkpoint: row 1 at" in out


async def test_the_running_engine_checks_every_few_seconds(
    db: Database, clock: ManualClock, county: SmallCounty, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JIAOYING_AUDIT_CHECKPOINTS", str(tmp_path / "checkpoints.jsonl"))
    engine = sandbox_engine(db, clock)
    await engine.start(poll_s=0.05)
    try:
        assert engine.scheduler is not None
        job = engine.scheduler.get_job("checkpoint")
        assert job is not None and job.trigger.interval.total_seconds() == 5  # well inside the minute
    finally:
        await engine.stop()


async def test_a_checkpoint_file_gone_bad_does_not_stop_the_engine_from_stopping(
    db: Database, clock: ManualClock, county: SmallCounty, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "checkpoints"
    monkeypatch.setenv("JIAOYING_AUDIT_CHECKPOINTS", str(folder / "audit.jsonl"))
    engine = sandbox_engine(Database(db.url), clock)
    await engine.start(loops=False)
    await engine.alerts.trigger(ORANGE, actor="duty:test")  # the chain moved: stop has a checkpoint to write
    await asyncio.to_thread(shutil.rmtree, folder)
    await asyncio.to_thread(folder.write_text, "")  # where the folder was, a file: nothing can be written inside
    with capture_logs() as logged:
        await engine.stop()  # logged, not raised: the channels and the database are closed all the same
    failed = [e for e in logged if e["event"] == "audit.checkpoint_failed"]
    assert failed and "cannot write checkpoints to" in failed[0]["error"]
