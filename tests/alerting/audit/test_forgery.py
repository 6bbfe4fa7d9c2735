"""A database writer who is careful: rewrites a row and every hash after it, or puts back an earlier copy of the
audit tables with a head that fits. Without the key and the checkpoints outside the database both passed;
now `verify` fails and names where."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.audit import configured
from alerting.audit.checkpoints import Checkpointer, read_checkpoints
from alerting.audit.keys import AuditKey
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import Level
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, AuditHead, core_table
from tests.alerting.audit.tamper import rehash_from, unguarded
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

pytestmark = pytest.mark.both_databases

ORANGE = AlertRequest(level=Level.ORANGE, hazard="暴雨", title="暴雨橙色预警", text="强降雨。", units=["500238101001"])
REWRITTEN = 4


async def issue(db: Database, clock: ManualClock) -> int:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(ORANGE, actor="duty:test")
    await engine.dispatcher.drain()
    return issued.alert_id


async def cancel(db: Database, clock: ManualClock, alert_id: int) -> None:
    await sandbox_engine(db, clock).alerts.cancel(alert_id, actor="duty:test", reason="雨停")


def signing() -> AuditKey:
    key = configured.current().keyring.signing
    assert key is not None
    return key


@pytest.fixture
def checkpoints(tmp_path: Path, audit_key: configured.AuditSetup, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The operator's checkpoint file, outside the database: in the environment, for every engine the test builds
    (each installs the audit setup its settings give), and installed now for what the test checks first."""
    path = tmp_path / "elsewhere" / "audit-checkpoints.jsonl"
    monkeypatch.setenv("JIAOYING_AUDIT_CHECKPOINTS", str(path))
    with configured.using(replace(audit_key, checkpoints=path)):
        yield path


def forgers_key(kind: str) -> AuditKey | None:
    if kind == "plain SHA-256":
        return None
    guessed = AuditKey.from_secret("a-guess-at-the-county-audit-key-000")
    return guessed if kind == "a guessed key" else AuditKey(signing().id, guessed.secret)


@pytest.mark.parametrize("kind", ["plain SHA-256", "a guessed key", "a guessed key under the real key's id"])
async def test_a_row_rewritten_and_rehashed_without_the_key_is_named(
    db: Database, clock: ManualClock, county: SmallCounty, kind: str
) -> None:
    await issue(db, clock)
    async with unguarded(db) as s:
        await s.execute(text("UPDATE audit_event SET actor = 'duty:someone-else' WHERE seq = :seq"), {"seq": REWRITTEN})
        await rehash_from(s, REWRITTEN, forgers_key(kind))

    result = await audit.verify(db)

    assert not result.ok
    assert result.first_bad_seq == REWRITTEN
    assert result.rows == REWRITTEN - 1  # the rows before it still check out
    expected = {
        "plain SHA-256": "unkeyed after keyed rows (rewritten without the key)",
        "a guessed key": "which is not configured",
        "a guessed key under the real key's id": "does not match its hash",
    }[kind]
    assert expected in result.reason


async def test_the_same_rewrite_with_the_key_is_caught_by_the_checkpoint(
    db: Database, clock: ManualClock, county: SmallCounty, checkpoints: Path
) -> None:
    """Whoever also took the key from the server can make the chain fit again; the file they could not reach
    still says what row 4 onwards were."""
    await issue(db, clock)
    written = await Checkpointer(db, clock, checkpoints, signing()).write()
    assert written is not None
    async with unguarded(db) as s:
        await s.execute(text("UPDATE audit_event SET actor = 'duty:someone-else' WHERE seq = :seq"), {"seq": REWRITTEN})
        await rehash_from(s, REWRITTEN, signing())

    result = await audit.verify(db)

    assert not result.ok
    assert result.first_bad_seq == written.seq  # the row the checkpoint vouched for
    assert "differs from checkpoint line 1" in result.reason
    assert "rewritten from row 1" in result.reason


async def copy_of_audit(db: Database) -> tuple[list[dict[str, Any]], tuple[int, str]]:
    async with db.session() as s:
        rows = (await s.execute(select(AuditEvent).order_by(col(AuditEvent.seq)))).scalars().all()
        head = (await s.execute(select(col(AuditHead.seq), col(AuditHead.hash)))).one()
    return [r.model_dump() for r in rows], (head.seq, head.hash)


async def put_back(db: Database, copy: tuple[list[dict[str, Any]], tuple[int, str]]) -> None:
    rows, (seq, digest) = copy
    async with unguarded(db) as s:
        await s.execute(text("DELETE FROM audit_event"))
        await (await s.connection()).execute(insert(core_table(AuditEvent)), rows)
        await s.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=seq, hash=digest))


async def test_audit_tables_rolled_back_to_an_earlier_copy_are_caught(
    db: Database, clock: ManualClock, county: SmallCounty, checkpoints: Path
) -> None:
    checkpointer = Checkpointer(db, clock, checkpoints, signing())
    alert_id = await issue(db, clock)
    await checkpointer.tick()
    earlier = await copy_of_audit(db)
    await cancel(db, clock, alert_id)  # the lift, which someone would rather had never been recorded
    clock.advance(seconds=5)
    lifted = await checkpointer.tick()  # within seconds of an alert ending, not at the next minute
    assert lifted is not None and lifted.seq > earlier[1][0]

    await put_back(db, earlier)
    with configured.using(replace(configured.current(), checkpoints=None)):
        assert (await audit.verify(db)).ok  # whole in itself: only the checkpoint outside tells it apart

    result = await audit.verify(db)

    assert not result.ok
    kept = earlier[1][0]
    assert result.first_bad_seq == kept + 1
    assert f"the chain ends at row {kept}" in result.reason
    assert f"saw row {lifted.seq}: rows {kept + 1}-{lifted.seq} were removed" in result.reason
    assert result.checkpoint is not None and (result.checkpoint.seq, result.checkpoint.hash) == (
        lifted.seq,
        lifted.hash,
    )


async def test_a_rolled_back_copy_written_on_is_caught_where_it_parts(
    db: Database, clock: ManualClock, county: SmallCounty, checkpoints: Path
) -> None:
    """The engine goes on appending to the copy put back: the chain is as long as before, but not the same."""
    checkpointer = Checkpointer(db, clock, checkpoints, signing())
    alert_id = await issue(db, clock)
    first = await checkpointer.tick()
    earlier = await copy_of_audit(db)
    await cancel(db, clock, alert_id)
    clock.advance(seconds=5)
    second = await checkpointer.tick()
    assert first is not None and second is not None

    await put_back(db, earlier)
    await issue(db, clock)  # a second alert, appended to the copy: its rows take the numbers the lift had
    async with db.session() as s:
        head = await s.scalar(select(col(AuditHead.seq)))
    assert head is not None and head >= second.seq

    result = await audit.verify(db)

    assert not result.ok
    assert result.first_bad_seq == second.seq
    assert f"rewritten after row {first.seq}, the last checkpoint it still fits" in result.reason


def shorten_the_checkpoint(path: Path) -> None:
    """What someone who also reached the checkpoint file does to make a shorter copy of the tables look right."""
    seq = read_checkpoints(path, configured.current().keyring)[0].seq
    path.write_text(path.read_text().replace(f'"seq":{seq}', f'"seq":{seq - 3}'))


async def test_an_edited_checkpoint_line_is_not_trusted(
    db: Database, clock: ManualClock, county: SmallCounty, checkpoints: Path
) -> None:
    await issue(db, clock)
    await Checkpointer(db, clock, checkpoints, signing()).write()
    await asyncio.to_thread(shorten_the_checkpoint, checkpoints)

    result = await audit.verify(db)

    assert not result.ok
    assert "line 1 does not carry a valid signature (edited)" in result.reason
    assert str(checkpoints) in result.reason
