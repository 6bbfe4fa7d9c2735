"""A weather service's warning taken by a process that dies part-way through (SIGKILL): either the warning was
issued and its message is on record, so sending it again is a duplicate and its Cancel lifts it, or neither
happened and sending it again issues it. Never a message on record that issued nothing, or an alert its own
Cancel cannot name."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.cap.importer import CapImporter
from alerting.model.clock import ManualClock
from alerting.model.domain import AlertStatus
from alerting.store.db import Database
from alerting.store.tables import Alert, CapMessage
from config.cli.cap import CLI
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

pytestmark = pytest.mark.timeout(120)

CORPUS = Path(__file__).parent / "corpus" / "valid"
RED, CANCEL = CORPUS / "rainstorm_red.xml", CORPUS / "rainstorm_cancel.xml"


async def killed_while_taking(db: Database, when: str) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.alerting.cap.dying_import", db.url, str(RED), when,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await child.communicate()
    assert child.returncode == -signal.SIGKILL, out.decode(errors="replace")


async def alerts_and_messages(db: Database) -> tuple[list[Alert], list[CapMessage]]:
    async with db.session() as s:
        alerts = list((await s.execute(select(Alert).order_by(col(Alert.id)))).scalars())
        messages = list((await s.execute(select(CapMessage))).scalars())
    return alerts, messages


async def test_killed_before_the_alert_was_written_the_message_is_taken_when_it_comes_again(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    await killed_while_taking(db, "before-alert")
    assert await alerts_and_messages(db) == ([], [])  # nothing on record: the warning was not issued

    core = sandbox_engine(db, clock).core
    again = await CapImporter(db, clock, core.alerts, core.cap_mapping).take(RED.read_bytes(), CLI)

    assert again.outcome == "issued" and not again.duplicate
    alerts, messages = await alerts_and_messages(db)
    assert [a.status for a in alerts] == [AlertStatus.ACTIVE.value]
    assert [m.alert_id for m in messages] == [alerts[0].id]
    assert (await audit.verify(db)).ok


async def test_killed_after_the_alert_was_issued_its_cancel_lifts_it(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    await killed_while_taking(db, "after-alert")
    alerts, messages = await alerts_and_messages(db)
    assert len(alerts) == 1 and [(m.alert_id, m.outcome) for m in messages] == [(alerts[0].id, "issued")]

    core = sandbox_engine(db, clock).core
    importer = CapImporter(db, clock, core.alerts, core.cap_mapping)
    repeated = await importer.take(RED.read_bytes(), CLI)
    assert repeated.duplicate and repeated.alert_id == alerts[0].id  # the service sending it again: no second alert
    lifted = await importer.take(CANCEL.read_bytes(), CLI)

    assert lifted.outcome == "lifted" and lifted.alert_id == alerts[0].id
    alerts, _ = await alerts_and_messages(db)
    assert [a.status for a in alerts] == [AlertStatus.CANCELLED.value]
    assert (await audit.verify(db)).ok
