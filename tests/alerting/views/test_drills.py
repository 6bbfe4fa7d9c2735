"""Drills run the same loop, say 演练 in every message, and are kept in their own yearly record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alerting.issue.alerts import AlertChange, AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Level
from alerting.store.db import Database
from alerting.views.review.drills import drill_record
from channels.sandbox import SandboxChannel
from config.cli.main import app
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

pytestmark = pytest.mark.both_databases


def alert(exercise: bool) -> AlertRequest:
    return AlertRequest(
        level=Level.YELLOW,
        hazard="地质灾害",
        title="滑坡隐患点巡查",
        text="持续降雨。",
        units=["500238101002"],
        exercise=exercise,
    )


async def test_a_drill_is_marked_everywhere_and_counted_apart(
    db: Database, clock: ManualClock, county: SmallCounty, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sandbox_engine(db, clock)
    drill = await engine.alerts.trigger(alert(exercise=True), actor="duty:test")
    await engine.alerts.trigger(alert(exercise=False), actor="duty:test")
    await engine.settle()
    sms = engine.channels[ChannelKind.SMS]
    assert isinstance(sms, SandboxChannel)
    texts = {r.message.alert_id: r.message.text for r in sms.outbox}
    assert "【演练】" in texts[drill.alert_id] and "演练" not in texts[drill.alert_id + 1]

    record = await drill_record(db, 2026)
    assert [d.alert_id for d in record.drills] == [drill.alert_id]
    assert record.drills[0].targets == 2 and record.drills[0].silent == 2
    assert (await drill_record(db, 2025)).drills == []

    monkeypatch.setenv("JIAOYING_DATABASE_URL", db.url)
    out = tmp_path / "record.csv"
    # the command runs its own event loop, as it does in a terminal
    result = await asyncio.to_thread(CliRunner().invoke, app, ["drills", "--year", "2026", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 drill(s)" in result.output
    lines = out.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("预警编号") and len(lines) == 2 and "滑坡隐患点巡查" in lines[1]


async def test_an_updated_drill_is_held_once(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    engine = sandbox_engine(db, clock)
    first = await engine.alerts.trigger(alert(exercise=True), actor="duty:test")
    change = AlertChange(text="雨势加大，巡查加密。")
    updated = await engine.alerts.update(first.alert_id, change, actor="duty:test")

    record = await drill_record(db, 2026)
    assert [d.alert_id for d in record.drills] == [updated.alert_id]
    assert record.held == 1 and record.drills[0].targets == 2
