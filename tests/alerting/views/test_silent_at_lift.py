"""An alert nobody answered, then lifted: every view and every export says who stayed silent.

The auditor's one question is "was anybody missed?". After 解除 the loop of each silent person is closed off, but
they never answered: the JSON, the printable HTML, the CSV and the XLSX must all list them as silent.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from openpyxl import load_workbook

from alerting.model.access import AccountRole, Principal
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind
from alerting.store.db import Database
from alerting.views.report.build import build_report
from alerting.views.report.export import CSV_HEADERS, render
from alerting.views.timeline import Show, read_alert
from config.wiring import AssembledEngine
from tests.conftest import SmallCounty
from tests.harness import RED, sandbox_engine

pytestmark = pytest.mark.both_databases


async def lifted_unanswered(db: Database, clock: ManualClock) -> tuple[AssembledEngine, int]:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(RED, actor="duty:test")
    await engine.dispatcher.drain()
    clock.advance(minutes=2)
    await engine.alerts.cancel(issued.alert_id, actor="duty:test", reason="降雨减弱")
    await engine.dispatcher.drain()
    return engine, issued.alert_id


async def test_every_export_lists_every_recipient_as_silent_at_the_lift(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine, alert_id = await lifted_unanswered(db, clock)
    report = await build_report(db, alert_id, now=clock.now())
    everyone = {r.name for r in report.recipients}
    assert len(everyone) == report.summary.targets > 0

    data = json.loads(render(report, "json"))
    assert data["summary"]["silent"] == report.summary.targets
    assert all(r["silent"] for r in data["recipients"])

    rows = list(csv.reader(io.StringIO(render(report, "csv").decode("utf-8-sig"))))
    silent_col = CSV_HEADERS.index("仍未应答")
    assert {r[7] for r in rows[1:] if r[silent_col] == "是"} == everyone
    assert {r[9] for r in rows[1:]} == {"预警结束时未应答"}

    book = load_workbook(io.BytesIO(render(report, "xlsx")), read_only=True)
    sheet = next(book[name] for name in book.sheetnames if "未应答" in name)
    listed = [row for row in sheet.iter_rows(min_row=2, values_only=True) if any(row)]
    assert len(listed) == len(everyone)

    html = render(report, "html").decode()
    silent_rows = re.findall(r'<tr class="silent">(.*?)</tr>', html, flags=re.S)
    assert all(any(name in row for row in silent_rows) for name in everyone)
    assert f'<div class="n">{report.summary.targets}</div>' in html  # the 未应答 card
    tiles = re.findall(r'<div class="tile band-(\w+)".*?<b data-tile-silent>(\d+)</b>', html, flags=re.S)
    townships = [t for t in report.townships if t.code is not None]
    assert tiles == [("0", str(t.targets)) for t in townships], "the tile map: every township red, all silent"

    duty = Principal(AccountRole.DUTY, "user:duty", "王值班")
    view = await read_alert(db, duty, alert_id, show=Show.SILENT)
    assert view is not None
    assert view.counts[Show.SILENT.value] == report.summary.targets  # the alert page's 未应答
    assert len(view.recipients) == report.summary.targets
    await engine.stop()


async def test_lift_notices_went_to_everyone_the_warning_reached(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine, alert_id = await lifted_unanswered(db, clock)
    report = await build_report(db, alert_id, now=clock.now())
    sms = engine.channels[ChannelKind.SMS]
    texts = [r.message for r in getattr(sms, "outbox", [])]
    warned = {m.address.person_id for m in texts if m.purpose.value == "warn"}
    lifted = {m.address.person_id for m in texts if m.purpose.value == "lift"}
    assert warned and warned == lifted
    assert report.summary.silent == report.summary.targets
    await engine.stop()
