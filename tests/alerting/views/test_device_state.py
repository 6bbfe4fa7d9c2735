"""A siren that never confirmed is shown failed, and who stands in for it, wherever the duty room looks.

A red warning on 凤凰镇 sounds its two sirens. One says "sounding"; the other was never heard from at all (no
status, no ack). Its resend runs out and the village head is sent to 鸣锣吹哨. What the duty officer and the auditor
read: the API's recipient, the alert page's device table and the printed report all say that siren failed and
a 鸣锣吹哨 task stands in for it, and its link says it never reported; the report's 设备未确认 card reads 1. When
the village head has answered, that loop is closed and the siren still reads failed.
"""

from __future__ import annotations

import csv
import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.answer.events import DeviceReport, DeviceStatus
from alerting.model.access import AccountRole, Principal
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind
from alerting.store.db import Database
from alerting.store.tables import Delivery
from alerting.views.report.build import build_report
from alerting.views.report.export import CSV_HEADERS, render
from alerting.views.timeline import read_alert
from alerting.web.api.queries import recipients_page
from tests.conftest import SmallCounty
from tests.harness import RED, sandbox_engine

pytestmark = pytest.mark.both_databases

DUTY = Principal(AccountRole.DUTY, "user:duty", "王值班")


async def deliveries(db: Database, alert_id: int, channel: ChannelKind) -> list[Delivery]:
    async with db.session() as s:
        found = await s.execute(
            select(Delivery)
            .where(col(Delivery.alert_id) == alert_id, col(Delivery.channel) == channel.value)
            .order_by(col(Delivery.created_at), col(Delivery.id))
        )
        return list(found.scalars())


def failed_card(html: str) -> int:
    found = re.search(r"<div>设备未确认</div><div class=\"n\">(\d+)</div>", html)
    assert found, "the report has no 设备未确认 card"
    return int(found.group(1))


async def test_a_siren_written_off_reads_failed_and_stood_in_for_everywhere(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    engine = sandbox_engine(db, clock)
    issued = await engine.alerts.trigger(RED, actor="t")
    await engine.dispatcher.drain()
    alert_id = issued.alert_id
    for zone in await deliveries(db, alert_id, ChannelKind.BROADCAST):
        await engine.acks.answer_delivery(zone.id, channel=ChannelKind.BROADCAST, at=clock.now())
    heard, mute = (d for d in await deliveries(db, alert_id, ChannelKind.DEVICE) if d.step == 0)
    await engine.inbound(DeviceStatus(heard.device_id or "", online=True, at=clock.now()))
    await engine.inbound(DeviceReport(heard.device_id or "", heard.id, "sounding", clock.now()))

    for _ in range(3):  # the first window, the resend's window: then the village head is sent out
        clock.advance(timedelta(seconds=61))
        await engine.escalation.run_due()
        await engine.dispatcher.drain()
    (task,) = await deliveries(db, alert_id, ChannelKind.MANUAL)
    assert task.target_id == mute.target_id

    recipients, _ = await recipients_page(db, alert_id, limit=100, offset=0, state=None)
    by_target = {r.target_id: r for r in recipients}
    written_off, sounding = by_target[mute.target_id].device, by_target[heard.target_id].device
    assert written_off is not None and sounding is not None
    assert (written_off.condition, written_off.stood_in_by, written_off.link) == ("failed", "鸣锣吹哨", "never_seen")
    assert (sounding.condition, sounding.link) == ("sounding", "online")

    view = await read_alert(db, DUTY, alert_id)
    assert view is not None
    lines = {line.device_id: line.state for line in view.devices}
    assert lines[mute.device_id or ""].condition_label == "未确认，已派鸣锣吹哨"
    assert lines[mute.device_id or ""].link_label == "从未上报"
    assert view.devices[0].device_id == mute.device_id  # the failed one heads the table

    report = await build_report(db, alert_id, now=clock.now())
    assert report.summary.failed == 1
    assert failed_card(render(report, "html").decode()) == 1

    await engine.acks.answer_delivery(task.id, channel=ChannelKind.MANUAL, at=clock.now())  # 鸣锣吹哨 done
    report = await build_report(db, alert_id, now=clock.now())
    (row,) = (r for r in report.recipients if r.target_id == mute.target_id)
    assert not row.silent  # the loop is closed by the village head ...
    assert report.summary.failed == 1 and row.device_condition == "failed"  # ... and the siren still failed
    assert failed_card(render(report, "html").decode()) == 1
    csv_rows = render(report, "csv").decode("utf-8-sig").splitlines()
    condition_col = CSV_HEADERS.index("设备状况")
    conditions = [row[condition_col] for row in csv.reader(csv_rows[1:])]
    assert conditions.count("未确认，已派鸣锣吹哨") == 1 and conditions.count("鸣响中") == 1
    await engine.stop()
