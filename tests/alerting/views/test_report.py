"""The per-alert audit report, read as an auditor reads it after a red rain-storm alert in 凤凰镇."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.model.domain import (
    AlertStatus,
    ChannelKind,
    DeliveryState,
    DeviceKind,
    Level,
    Purpose,
    Role,
    TargetKind,
    TargetState,
    TaskKind,
)
from alerting.model.ids import new_id
from alerting.model.plan import Plan, Step, Who
from alerting.store.db import Database
from alerting.store.tables import (
    Acknowledgement,
    Alert,
    AuditEvent,
    Delivery,
    Device,
    OrgUnit,
    Person,
    Responsibility,
    Target,
)
from alerting.views.report.build import build_report
from alerting.views.report.export import CSV_HEADERS, export, render_csv, render_html, render_json
from alerting.views.report.model import AlertReport, RecipientRow
from tests.alerting.audit.tamper import unguarded

pytestmark = pytest.mark.both_databases

T0 = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)  # 10:00 in 巫溪
NOW = T0 + timedelta(minutes=40)

COUNTY, TOWNSHIP, VILLAGE = "500238", "500238101", "500238101201"
GRID1, GRID2 = "500238101201001", "500238101201002"

PHONES = {
    "p-zhang": "+8613900000001",  # grid worker, grid 1: answers by SMS
    "p-li": "+8613900000002",  # grid worker, grid 2: silent, answered for by the village head at step 3
    "p-zhao": "+8613900000003",  # backup of grid 2
    "p-wang": "+8613900000004",  # village head
    "p-chen": "+8613900000005",  # township duty officer: still silent
}
NAMES = {"p-zhang": "张网格", "p-li": "李网格", "p-zhao": "赵备岗", "p-wang": "王村长", "p-chen": "陈值班"}
ON_BEHALF = "李网格手机无信号，王村长已电话核实其在岗并组织转移"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'jiaoying.db'}")
    await database.upgrade()
    yield database
    await database.close()


def _plan() -> dict[str, Any]:
    person = [
        Step(who=Who.TARGET, channels=[ChannelKind.SMS, ChannelKind.WECOM, ChannelKind.VOICE], wait_s=300),
        Step(who=Who.TARGET, channels=[ChannelKind.VOICE], wait_s=300),
        Step(who=Who.BACKUP, channels=[ChannelKind.SMS, ChannelKind.VOICE], wait_s=300),
        Step(who=Who.PARENT, channels=[ChannelKind.VOICE], wait_s=300),
        Step(who=Who.TOWNSHIP_DUTY, channels=[ChannelKind.VOICE], wait_s=300),
    ]
    device = [
        Step(who=Who.TARGET, channels=[ChannelKind.DEVICE], wait_s=120),
        Step(who=Who.VILLAGE, channels=[ChannelKind.MANUAL], wait_s=600, task=TaskKind.GONG),
    ]
    return Plan(level=Level.RED, person_steps=person, device_steps=device).model_dump(mode="json")


@dataclass(frozen=True)
class Scenario:
    alert_id: int
    targets: dict[str, str]  # person or device id -> target id


def _delivery(
    alert_id: int,
    target_id: str,
    channel: ChannelKind,
    state: DeliveryState,
    *,
    at: timedelta,
    person_id: str | None = None,
    device_id: str | None = None,
    step: int = 0,
    sandbox: bool = False,
    provider_id: str | None = None,
    error: str | None = None,
) -> Delivery:
    sent = T0 + at
    return Delivery(
        id=new_id(),
        alert_id=alert_id,
        target_id=target_id,
        person_id=person_id,
        device_id=device_id,
        channel=channel.value,
        purpose=Purpose.WARN.value,
        step=step,
        state=state.value,
        attempts=1,
        next_attempt_at=sent,
        created_at=sent,
        sent_at=sent if state in (DeliveryState.SENT, DeliveryState.DELIVERED) else None,
        delivered_at=sent + timedelta(seconds=5) if state is DeliveryState.DELIVERED else None,
        provider="sandbox" if sandbox else "twilio",
        provider_id=provider_id,
        sandbox=sandbox,
        error=error,
    )


async def seed(db: Database, *, exercise: bool = True) -> Scenario:
    """巫溪县 → 凤凰镇 → one village with two grids, five people, a siren, and a red 暴雨 alert 40 minutes old."""
    async with db.session() as s:
        s.add(OrgUnit(code=COUNTY, name="巫溪县", kind="county", path=f"/{COUNTY}/"))
        s.add(OrgUnit(code=TOWNSHIP, name="凤凰镇", kind="township", parent_code=COUNTY, path=f"/{COUNTY}/{TOWNSHIP}/"))
        s.add(
            OrgUnit(
                code=VILLAGE,
                name="龙头村",
                kind="village",
                parent_code=TOWNSHIP,
                path=f"/{COUNTY}/{TOWNSHIP}/{VILLAGE}/",
            )
        )
        for code, name in ((GRID1, "龙头村第一网格"), (GRID2, "龙头村第二网格")):
            s.add(
                OrgUnit(
                    code=code,
                    name=name,
                    kind="grid",
                    parent_code=VILLAGE,
                    path=f"/{COUNTY}/{TOWNSHIP}/{VILLAGE}/{code}/",
                )
            )
        await s.flush()
        for pid, phone in PHONES.items():
            s.add(Person(id=pid, name=NAMES[pid], phone=phone))
        await s.flush()
        for unit, pid, role, rank in (
            (GRID1, "p-zhang", Role.GRID_WORKER, 0),
            (GRID2, "p-li", Role.GRID_WORKER, 0),
            (GRID2, "p-zhao", Role.GRID_WORKER, 1),
            (VILLAGE, "p-wang", Role.VILLAGE_HEAD, 0),
            (TOWNSHIP, "p-chen", Role.TOWNSHIP_DUTY, 0),
        ):
            s.add(Responsibility(unit_code=unit, person_id=pid, role=role.value, rank=rank))
        s.add(Device(id="siren-lt-1", unit_code=VILLAGE, kind=DeviceKind.SIREN.value, name="龙头村警报器"))
        alert = Alert(
            level=Level.RED.value,
            hazard="暴雨",
            title="巫溪县气象台发布暴雨红色预警",
            text="预计未来3小时凤凰镇降雨量将达100毫米以上。",
            instructions="立即转移危险区域群众。",
            status=AlertStatus.ACTIVE.value,
            exercise=exercise,
            target_units=[TOWNSHIP],
            plan=_plan(),
            created_at=T0,
            created_by="县值班室 周主任",
        )
        s.add(alert)
        await s.flush()
        assert alert.id is not None
        aid = alert.id

        def target(key: str, unit: str, role: str, state: TargetState, step: int = 0, **kw: Any) -> Target:
            device = key.startswith("siren")
            return Target(
                id=new_id(),
                alert_id=aid,
                kind=(TargetKind.DEVICE if device else TargetKind.PERSON).value,
                person_id=None if device else key,
                device_id=key if device else None,
                unit_code=unit,
                role=role,
                state=state.value,
                step=step,
                **kw,
            )

        zhang = target(
            "p-zhang",
            GRID1,
            Role.GRID_WORKER,
            TargetState.ANSWERED,
            answered_at=T0 + timedelta(seconds=120),
            answered_by="p-zhang",
            answer_channel="sms",
        )
        li = target(
            "p-li",
            GRID2,
            Role.GRID_WORKER,
            TargetState.ANSWERED_FOR,
            step=3,
            answered_at=T0 + timedelta(seconds=1500),
            answered_by="p-wang",
            answer_channel="voice",
            feedback={"moved": 41, "households": 23, "help_needed": True, "note": "河边三户已转移"},
        )
        wang = target(
            "p-wang",
            VILLAGE,
            Role.VILLAGE_HEAD,
            TargetState.ANSWERED,
            answered_at=T0 + timedelta(seconds=300),
            answered_by="p-wang",
            answer_channel="wecom",
        )
        chen = target("p-chen", TOWNSHIP, Role.TOWNSHIP_DUTY, TargetState.OPEN, step=1)
        siren = target(
            "siren-lt-1",
            VILLAGE,
            DeviceKind.SIREN,
            TargetState.ANSWERED,
            answered_at=T0 + timedelta(seconds=30),
            answered_by="device",
            answer_channel="device",
        )
        s.add_all([zhang, li, wang, chen, siren])
        await s.flush()

        sms, wecom, voice = ChannelKind.SMS, ChannelKind.WECOM, ChannelKind.VOICE
        ok, failed, sent = DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.SENT
        s.add_all(
            [
                _delivery(aid, zhang.id, sms, ok, at=timedelta(seconds=3), person_id="p-zhang", provider_id="SM0001"),
                _delivery(aid, zhang.id, wecom, ok, at=timedelta(seconds=3), person_id="p-zhang", sandbox=True),
                _delivery(aid, li.id, sms, ok, at=timedelta(seconds=3), person_id="p-li", provider_id="SM0002"),
                _delivery(aid, li.id, voice, failed, at=timedelta(seconds=4), person_id="p-li", error="无人接听"),
                _delivery(aid, li.id, voice, failed, at=timedelta(seconds=301), person_id="p-li", step=1),
                _delivery(aid, li.id, sms, ok, at=timedelta(seconds=601), person_id="p-zhao", step=2),
                _delivery(aid, li.id, voice, ok, at=timedelta(seconds=901), person_id="p-wang", step=3),
                _delivery(aid, wang.id, wecom, ok, at=timedelta(seconds=3), person_id="p-wang", sandbox=True),
                _delivery(aid, chen.id, sms, ok, at=timedelta(seconds=3), person_id="p-chen", sandbox=True),
                _delivery(aid, chen.id, voice, sent, at=timedelta(seconds=301), person_id="p-chen", step=1),
                _delivery(aid, siren.id, ChannelKind.DEVICE, ok, at=timedelta(seconds=1), device_id="siren-lt-1"),
            ]
        )

        def ack(t: Target, person: str | None, channel: str, at: int, counted: bool = True, **kw: Any) -> None:
            s.add(
                Acknowledgement(
                    id=new_id(),
                    alert_id=aid,
                    target_id=t.id,
                    person_id=person,
                    channel=channel,
                    at=T0 + timedelta(seconds=at),
                    counted=counted,
                    **kw,
                )
            )

        ack(zhang, "p-zhang", "sms", 120)
        ack(zhang, "p-zhang", "wecom", 400, counted=False)  # a second 收到 is kept, not counted
        ack(li, "p-wang", "voice", 1500, on_behalf_reason=ON_BEHALF, feedback=li.feedback)
        ack(wang, "p-wang", "wecom", 300)
        ack(siren, None, "device", 30)
        await audit.append(
            s,
            [
                audit.Entry(kind="alert.triggered", actor="县值班室 周主任", at=T0, alert_id=aid),
                audit.Entry(kind="target.escalated", actor="engine", at=T0 + timedelta(seconds=900), alert_id=aid),
                audit.Entry(kind="target.answered", actor="p-wang", at=T0 + timedelta(seconds=1500), alert_id=aid),
            ],
        )
    return Scenario(aid, {"p-zhang": zhang.id, "p-li": li.id, "p-wang": wang.id, "p-chen": chen.id})


def _row(report: AlertReport, name: str) -> RecipientRow:
    return next(r for r in report.recipients if r.name == name)


async def test_summary_counts_what_happened(db: Database) -> None:
    sc = await seed(db)
    report = await build_report(db, sc.alert_id, now=NOW)

    s = report.summary
    assert (s.targets, s.persons, s.devices) == (5, 4, 1)
    assert (s.answered, s.answered_for, s.silent, s.failed) == (3, 1, 1, 0)
    # answers after 30, 120, 300 and 1500 seconds
    assert s.median_answer_s == 210
    assert s.p90_answer_s == 1500
    assert s.deliveries_total == 11
    assert s.deliveries["sms"] == {"delivered": 4}
    assert s.deliveries["voice"] == {"delivered": 1, "failed": 2, "sent": 1}
    assert s.sandbox_deliveries == 3
    assert s.sandbox_channels == ["sms", "wecom"]
    assert report.sandbox
    assert [(t.name, t.targets, t.silent) for t in report.townships] == [("凤凰镇", 5, 1)]
    assert report.target_unit_names == ["凤凰镇"]
    assert report.audit.ok
    assert report.audit.alert_events == 3
    assert [p.who for p in report.plan if p.applies_to == "人员"] == [
        "本人",
        "本人",
        "备岗人员",
        "上级责任人",
        "乡镇值班员",
    ]


async def test_silent_person_comes_first_with_what_was_tried(db: Database) -> None:
    sc = await seed(db)
    report = await build_report(db, sc.alert_id, now=NOW)

    first = report.recipients[0]
    assert (first.name, first.silent, first.state_label) == ("陈值班", True, "未应答")
    assert [r.name for r in report.silent_recipients] == ["陈值班"]
    assert all(not r.silent for r in report.recipients[1:])
    assert first.township_name == "凤凰镇"
    assert first.village_name == ""
    assert first.step == 1
    assert [(d.channel, d.state, d.sandbox) for d in first.deliveries] == [
        ("sms", "delivered", True),
        ("voice", "sent", False),
    ]
    assert first.first_delivered_at == T0 + timedelta(seconds=8)


async def test_answered_for_row_names_who_answered_and_why(db: Database) -> None:
    sc = await seed(db)
    report = await build_report(db, sc.alert_id, now=NOW)

    li = _row(report, "李网格")
    assert li.state_label == "代应答"
    assert li.answered_for
    assert li.answered_by_name == "王村长"
    assert li.answer_channel_label == "智能外呼"
    assert li.on_behalf_reason == ON_BEHALF
    assert li.answer_s == 1500
    assert li.step == 3
    assert [(e.step, e.who, e.contacts) for e in li.escalation] == [
        (1, "本人", ["李网格（智能外呼）"]),
        (2, "备岗人员", ["赵备岗（短信）"]),
        (3, "上级责任人", ["王村长（智能外呼）"]),
    ]
    assert li.feedback_text == "转移 41 人，敲门 23 户，需要支援，备注：河边三户已转移"
    assert (li.village_name, li.unit_name, li.role_label) == ("龙头村", "龙头村第二网格", "网格员")

    zhang = _row(report, "张网格")
    assert (zhang.answered_by_name, zhang.answer_channel_label, zhang.answers) == ("张网格", "短信", 2)
    siren = _row(report, "龙头村警报器")
    assert (siren.kind_label, siren.state_label, siren.answer_s) == ("设备", "已应答", 30)

    table = list(csv.reader(io.StringIO(render_csv(report).lstrip("\ufeff"))))
    row = dict(zip(table[0], next(r for r in table[1:] if r[7] == "李网格"), strict=True))
    assert row["应答人"] == "王村长（代应答）"
    assert row["代应答原因"] == ON_BEHALF
    assert "第3步 上级责任人：王村长（智能外呼）" in row["升级联系情况"]


async def test_no_full_phone_number_in_any_format(db: Database) -> None:
    sc = await seed(db)
    report = await build_report(db, sc.alert_id, now=NOW)

    outputs = {"csv": render_csv(report), "json": render_json(report), "html": render_html(report)}
    for fmt, text in outputs.items():
        for phone in PHONES.values():
            assert phone not in text, fmt
            assert phone[3:] not in text, fmt  # not even without the country code
        assert "+86139****0005" in text, fmt


async def test_csv_opens_in_excel_with_chinese_headers(db: Database, tmp_path: Path) -> None:
    sc = await seed(db)
    path = await export(db, sc.alert_id, "csv", tmp_path / "out" / "report.csv", now=NOW)

    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == CSV_HEADERS
    assert rows[0][:3] == ["序号", "乡镇/街道", "村/社区"]
    assert len(rows) == 1 + 5
    assert rows[1][7] == "陈值班"
    assert rows[1][10] == "是"
    zhang = next(r for r in rows if r[7] == "张网格")
    assert zhang[8] == "'+86139****0001"  # a leading + would make Excel read a formula
    assert "短信：已送达 2026-07-01 10:00:08 SM0001" in zhang[11]
    assert "企业微信：已送达" in zhang[11]
    assert "【沙箱】" in zhang[11]


async def test_json_round_trips_the_report(db: Database, tmp_path: Path) -> None:
    sc = await seed(db)
    path = await export(db, sc.alert_id, "json", tmp_path / "report.json", now=NOW)

    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["summary"]["silent"] == 1
    assert data["recipients"][0]["name"] == "陈值班"
    assert AlertReport.model_validate(data) == await build_report(db, sc.alert_id, now=NOW)


async def test_html_is_standalone_chinese_with_banners(db: Database, tmp_path: Path) -> None:
    sc = await seed(db)
    path = await export(db, sc.alert_id, "html", tmp_path / "report.html", now=NOW)
    html = path.read_text(encoding="utf-8")

    assert '<html lang="zh-CN">' in html
    assert "红色" in html
    assert "暴雨" in html
    assert "4 / 5" in html  # closed / targets
    assert "仍未应答（1）" in html
    assert "3分30秒" in html  # median answer time
    assert "演练" in html
    assert "沙箱" in html
    assert "短信、企业微信" in html  # which channels only reached a sandbox
    assert "2026-07-01 10:00:00" in html  # created, in Beijing time
    assert "2026-07-01 02:00:00" not in html
    assert not re.search(r"https?://", html)
    assert "<link" not in html
    assert "<script" not in html
    silent_at = html.index("仍未应答（1）")
    everyone_at = html.index("全部叫应对象（5）")
    assert html.index("分乡镇（街道）统计") < silent_at < html.index("陈值班", silent_at) < everyone_at


async def test_html_escapes_what_people_typed(db: Database) -> None:
    sc = await seed(db, exercise=False)
    async with db.session() as s:
        await s.execute(
            update(Target)
            .where(col(Target.id) == sc.targets["p-zhang"])
            .values(feedback={"note": "<script>alert(1)</script>"})
        )
    report = await build_report(db, sc.alert_id, now=NOW)
    html = render_html(report)

    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "本预警为演练" not in html


async def test_tampered_audit_chain_is_reported(db: Database) -> None:
    sc = await seed(db)
    async with unguarded(db) as s:  # the triggers dropped first, as the tables' owner could
        await s.execute(update(AuditEvent).where(col(AuditEvent.seq) == 2).values(actor="someone else"))
    report = await build_report(db, sc.alert_id, now=NOW)

    assert not report.audit.ok
    assert report.audit.first_bad_seq == 2
    assert "审计链校验失败" in render_html(report)


async def test_unknown_alert_raises_lookup_error(db: Database, tmp_path: Path) -> None:
    await seed(db)
    with pytest.raises(LookupError):
        await build_report(db, 999, now=NOW)
    with pytest.raises(LookupError):
        await export(db, 999, "html", tmp_path / "nothing.html", now=NOW)
    assert not (tmp_path / "nothing.html").exists()
