"""The latest checkpoint outside the database is in every report and export an auditor takes away, and a chain
that no longer reaches it says so there too, in their words."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import text

from alerting.audit import configured
from alerting.audit.checkpoints import Checkpoint, Checkpointer
from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock, local_text
from alerting.model.domain import Level
from alerting.store.db import Database
from alerting.views.audit_log import chain_status
from alerting.views.report.build import build_report
from alerting.views.report.export import render_html, render_json, render_xlsx
from tests.alerting.audit.tamper import unguarded
from tests.conftest import SmallCounty
from tests.harness import sandbox_engine

ORANGE = AlertRequest(level=Level.ORANGE, hazard="暴雨", title="暴雨橙色预警", text="强降雨。", units=["500238101001"])


@pytest.fixture
def checkpoints(tmp_path: Path, audit_key: configured.AuditSetup, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "audit-checkpoints.jsonl"
    monkeypatch.setenv("JIAOYING_AUDIT_CHECKPOINTS", str(path))
    with configured.using(replace(audit_key, checkpoints=path)):
        yield path


async def issue_and_checkpoint(db: Database, clock: ManualClock, path: Path) -> tuple[int, Checkpoint]:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(ORANGE, actor="duty:test")
    await engine.dispatcher.drain()
    key = configured.current().keyring.signing
    assert key is not None
    point = await Checkpointer(db, clock, path, key).write()
    assert point is not None
    return issued.alert_id, point


def overview(xlsx: bytes) -> dict[str, str]:
    sheet = load_workbook(io.BytesIO(xlsx), read_only=True)["概况"]
    return {str(row[0]): str(row[1]) for row in sheet.iter_rows(min_row=2, values_only=True)}


async def test_every_report_names_the_latest_checkpoint(
    db: Database, clock: ManualClock, county: SmallCounty, checkpoints: Path
) -> None:
    alert_id, point = await issue_and_checkpoint(db, clock, checkpoints)
    words = f"最新库外检查点：第 {point.seq} 条，{local_text(point.at)}（北京时间）"

    report = await build_report(db, alert_id, now=clock.now())

    assert report.audit.ok
    assert words in report.audit.notes
    assert words in render_html(report)
    assert words in render_json(report)
    assert words in overview(render_xlsx(report))["审计链"]
    status = await chain_status(db)
    assert status.ok and words in status.text
    assert any(note.startswith(f"latest checkpoint: row {point.seq} at") for note in status.notes)


async def test_a_report_on_a_chain_cut_short_of_its_checkpoint_says_so(
    db: Database, clock: ManualClock, county: SmallCounty, checkpoints: Path
) -> None:
    alert_id, point = await issue_and_checkpoint(db, clock, checkpoints)
    kept = point.seq - 2
    async with unguarded(db) as s:
        hash_ = (await s.execute(text("SELECT hash FROM audit_event WHERE seq = :seq"), {"seq": kept})).scalar_one()
        await s.execute(text("DELETE FROM audit_event WHERE seq > :seq"), {"seq": kept})
        await s.execute(text("UPDATE audit_head SET seq = :seq, hash = :h"), {"seq": kept, "h": hash_})

    report = await build_report(db, alert_id, now=clock.now())

    assert not report.audit.ok
    html = render_html(report)
    assert f"第 {kept + 1} 条记录起缺失：库外检查点记录链曾到第 {point.seq} 条（末尾被截断或整体回滚）" in html


async def test_without_checkpoints_the_report_says_a_rollback_would_not_show(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(ORANGE, actor="duty:test")
    report = await build_report(db, issued.alert_id, now=clock.now())
    assert report.audit.ok
    assert "未配置库外检查点（JIAOYING_AUDIT_CHECKPOINTS），整体回滚到旧副本无法发现" in render_html(report)
