"""The audit report as files people open: CSV for Excel, JSON for machines, standalone HTML to read and print."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import structlog
from jinja2 import Environment
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from alerting.model.clock import local_text
from alerting.model.domain import DeliveryState, Purpose
from alerting.store.db import Database
from alerting.views import templating
from alerting.views.labels import DELIVERY_STATE_LABEL, channel_label, label
from alerting.views.report.build import build_report
from alerting.views.report.model import AlertReport, RecipientRow
from alerting.views.tiles import report_tiles

Format = Literal["csv", "json", "html", "xlsx"]
BOM = "\ufeff"  # without it Excel reads UTF-8 CSV as the local code page and the Chinese comes out garbled

LEVEL_COLOUR = {"red": "#c62828", "orange": "#ef6c00", "yellow": "#f9a825", "blue": "#1565c0"}

CSV_HEADERS = [
    "序号",
    "乡镇/街道",
    "村/社区",
    "责任单位",
    "单位代码",
    "类型",
    "角色",
    "姓名/设备",
    "电话（脱敏）",
    "状态",
    "仍未应答",
    "已尝试渠道",
    "首次送达时间",
    "应答时间",
    "应答用时（秒）",
    "应答人",
    "应答渠道",
    "代应答原因",
    "升级步数",
    "升级联系情况",
    "反馈",
    "应答次数",
    "含沙箱发送（未真实送达）",
    "设备状况",  # for a device: sounded, or failed and stood in for by people
]

log = structlog.get_logger()


def duration(seconds: float | None) -> str:
    """Seconds as a duty officer says them: 3分12秒, 1小时05分."""
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s}秒"
    if s < 3600:
        return f"{s // 60}分{s % 60:02d}秒"
    return f"{s // 3600}小时{s % 3600 // 60:02d}分"


def channels_text(row: RecipientRow) -> str:
    """What was tried on the target itself, with the provider's id so a dispute can be traced at the provider."""
    parts = []
    for d in row.deliveries:
        if not d.to_target:
            continue
        when = local_text(d.delivered_at or d.sent_at)
        text = " ".join(
            p
            for p in (
                f"第{d.step}步" if d.step else "",
                f"[{d.purpose_label}]" if d.purpose != Purpose.WARN else "",
                f"{d.channel_label}：{d.state_label}" + (f"（{d.error}）" if d.error else ""),
                when,
                d.provider_id or "",
                "【沙箱】" if d.sandbox else "",
            )
            if p
        )
        parts.append(text)
    return "；".join(parts)


def escalation_text(row: RecipientRow) -> str:
    return "；".join(f"第{e.step}步 {e.who}：{'、'.join(e.contacts) or '无可联系人员'}" for e in row.escalation)


def answered_by_text(row: RecipientRow) -> str:
    if not row.answered_by_name:
        return ""
    return f"{row.answered_by_name}（代应答）" if row.answered_for else row.answered_by_name


CHAIN_REASON = {
    "its link to the row before it is broken": "与前一条记录的链接断开（记录被删除或插入）",
    "its content does not match its hash (edited)": "内容与哈希不符（记录被改动）",
}


def chain_text(ok: bool, rows: int, first_bad_seq: int | None, reason: str, notes: str = "") -> str:
    """The audit chain's state in a sentence an auditor reads, and `notes` (views.report.chain_notes) after it."""
    tail = f"。{notes}" if notes else ""
    if ok:
        return f"审计链校验通过：共 {rows} 条记录，哈希链完整{tail}"
    if first_bad_seq is None:  # not the chain but the checkpoints it is held to
        return f"审计链未能校验：{reason}{tail}"
    why = CHAIN_REASON.get(reason)
    seen = re.search(r"checkpoint line \d+ written at \S+ saw row (\d+)", reason)
    if why is None and reason.startswith("row ") and reason.endswith(" is missing"):
        why = "记录缺失"
    elif why is None and seen:
        why = f"起缺失：库外检查点记录链曾到第 {seen.group(1)} 条（末尾被截断或整体回滚）"
    elif why is None and reason.startswith("the chain ends"):
        why = "链尾与链头记录不一致（末尾记录被删除）"
    elif why is None and "differs from checkpoint line" in reason:
        why = "与库外检查点不符（此后被改写）"
    elif why is None and "unkeyed after keyed rows" in reason:
        why = "未用密钥签名却排在已签名记录之后（由不持密钥者改写）"
    elif why is None and "which is not configured" in reason:
        why = "由未配置的审计密钥签名（轮换后请在 JIAOYING_AUDIT_KEYS 中保留旧密钥）"
    return f"审计链校验失败：第 {first_bad_seq} 条记录{why or reason}，链在此断裂（此前 {rows} 条完好）{tail}"


def _cell(value: str) -> str:
    # A cell starting with = + - @ is a formula to Excel; a note typed on a phone must not become one.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_row(values: list[str | int]) -> list[str | int]:
    """A recipient row as the CSV writes it: text that a spreadsheet would take for a formula is quoted."""
    return [_cell(v) if isinstance(v, str) else v for v in values]


def recipient_values(report: AlertReport) -> list[list[str | int]]:
    """One row per recipient under CSV_HEADERS, as plain values (each format guards its own formulas)."""
    rows: list[list[str | int]] = []
    for i, r in enumerate(report.recipients, 1):
        rows.append(
            [
                i,
                r.township_name,
                r.village_name,
                r.unit_name,
                r.unit_code,
                r.kind_label,
                r.role_label,
                r.name,
                r.phone,
                r.state_label,
                "是" if r.silent else "否",
                channels_text(r),
                local_text(r.first_delivered_at),
                local_text(r.answered_at),
                "" if r.answer_s is None else round(r.answer_s),
                answered_by_text(r),
                r.answer_channel_label,
                r.on_behalf_reason or "",
                r.step,
                escalation_text(r),
                r.feedback_text,
                r.answers,
                "是" if r.sandbox else "否",
                r.device_condition_label,
            ]
        )
    return rows


def render_csv(report: AlertReport) -> str:
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out)
    writer.writerow(CSV_HEADERS)
    for row in recipient_values(report):
        writer.writerow(csv_row(row))
    return out.getvalue()


def render_json(report: AlertReport) -> str:
    # compact: it is for machines, and indenting doubles the size of a county-wide report
    return report.model_dump_json()


@cache
def _environment() -> Environment:
    env = templating.environment()
    env.filters["duration"] = duration
    env.globals.update(
        channels_text=channels_text,
        escalation_text=escalation_text,
        answered_by_text=answered_by_text,
        channel_label=channel_label,
        delivery_state_label=lambda v: label(DELIVERY_STATE_LABEL, v),
        report_tiles=report_tiles,
    )
    return env


def render_html(report: AlertReport, charts: Mapping[str, str] | None = None) -> str:
    """The standalone report; `charts` are inline SVGs (answer_time, answer_curve, channels) if drawn."""
    template = _environment().get_template("report.html")
    a = report.audit
    return template.render(
        r=report,
        charts=charts or {},
        chain=chain_text(a.ok, a.rows, a.first_bad_seq, a.reason, a.notes),
        s=report.summary,
        colour=LEVEL_COLOUR.get(report.level, "#455a64"),
        silent=report.silent_recipients,
    )


def _xl(ws: Any, value: object, *, bold: bool = False) -> Any:
    """A cell that stays text: openpyxl would store a string starting with = as a formula."""
    cell = WriteOnlyCell(ws, value=value)
    if isinstance(value, str) and value.startswith("="):
        cell.data_type = "s"
    if bold:
        cell.font = Font(bold=True)
    return cell


def _sheet(wb: Any, title: str, headers: list[str], rows: Iterable[Iterable[object]], widths: list[int]) -> None:
    ws = wb.create_sheet(title)
    for i, w in enumerate(widths):
        ws.column_dimensions[get_column_letter(i + 1)].width = w
    ws.freeze_panes = "A2"
    ws.append([_xl(ws, h, bold=True) for h in headers])
    for row in rows:
        ws.append([_xl(ws, v) for v in row])


def _overview(report: AlertReport) -> list[tuple[str, object]]:
    s, a = report.summary, report.audit
    closed_rate = f"{s.closed / s.targets:.1%}" if s.targets else "—"
    return [
        ("预警编号", report.alert_id),
        ("级别", report.level_label),
        ("灾种", report.hazard),
        ("标题", report.title),
        ("演练", "是（演练，非真实预警）" if report.exercise else "否"),
        ("状态", report.status_label),
        ("发布时间（北京时间）", local_text(report.created_at)),
        ("发布人", report.created_by),
        ("结束时间", local_text(report.ended_at)),
        ("结束原因", report.end_reason or ""),
        ("预警范围", "、".join(report.target_unit_names)),
        ("应叫应", s.targets),
        ("本人应答", s.answered),
        ("代应答", s.answered_for),
        ("未应答", s.silent),
        ("设备未确认", s.failed),
        ("其中预警结束时未应答", s.cancelled),
        ("闭环率", closed_rate),
        ("应答用时中位数", duration(s.median_answer_s)),
        ("90% 应答用时", duration(s.p90_answer_s)),
        ("发送总数", s.deliveries_total),
        ("沙箱发送（未真实送达）", s.sandbox_deliveries),
        ("审计链", chain_text(a.ok, a.rows, a.first_bad_seq, a.reason, a.notes)),
        ("报告生成时间", local_text(report.generated_at)),
    ]


def render_xlsx(report: AlertReport) -> bytes:
    """A workbook an auditor files: overview, every recipient, townships, the silent, failed deliveries."""
    wb = Workbook(write_only=True)
    _sheet(wb, "概况", ["项目", "内容"], _overview(report), [24, 60])
    _sheet(wb, "叫应对象", CSV_HEADERS, recipient_values(report), [6, 12, 12, 16, 16, 6, 12, 12, 16, 10, 8, 60])
    _sheet(
        wb,
        "分乡镇",
        ["乡镇/街道", "代码", "应叫应", "本人应答", "代应答", "仍未应答", "设备未确认", "用时中位数（秒）"],
        (
            [
                t.name,
                t.code or "",
                t.targets,
                t.answered,
                t.answered_for,
                t.silent,
                t.failed,
                "" if t.median_answer_s is None else round(t.median_answer_s),
            ]
            for t in report.townships
        ),
        [16, 14, 10, 10, 10, 10, 10, 16],
    )
    _sheet(
        wb,
        "仍未应答",
        [
            "乡镇/街道",
            "责任单位",
            "单位代码",
            "角色",
            "姓名/设备",
            "电话（脱敏）",
            "已尝试渠道",
            "升级步数",
            "升级联系情况",
        ],
        (
            [
                r.township_name,
                r.unit_name,
                r.unit_code,
                r.role_label,
                r.name,
                r.phone,
                channels_text(r),
                r.step,
                escalation_text(r),
            ]
            for r in report.silent_recipients
        ),
        [12, 16, 16, 12, 12, 16, 60, 8, 40],
    )
    _sheet(
        wb,
        "发送失败",
        ["姓名/设备", "责任单位", "联系人", "渠道", "服务商", "错误", "尝试次数", "步骤", "发送时间"],
        (
            [
                r.name,
                r.unit_name,
                d.contact_name,
                d.channel_label,
                d.provider or "",
                d.error or "",
                d.attempts,
                d.step,
                local_text(d.sent_at),
            ]
            for r in report.recipients
            for d in r.deliveries
            if d.state == DeliveryState.FAILED
        ),
        [12, 16, 12, 10, 12, 40, 8, 6, 20],
    )
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


RENDERERS = {"csv": render_csv, "json": render_json, "html": render_html}


def render(report: AlertReport, fmt: Format, charts: Mapping[str, str] | None = None) -> bytes:
    """The report as the bytes of a file in this format (text formats in UTF-8). CPU work: call it in a thread."""
    if fmt == "xlsx":
        return render_xlsx(report)
    if fmt == "html":
        return render_html(report, charts).encode("utf-8")
    return RENDERERS[fmt](report).encode("utf-8")


def _write(report: AlertReport, fmt: Format, path: Path) -> Path:
    data = render(report, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    # bytes as rendered: the CSV writer's \r\n stays as it is instead of doubling on Windows
    path.write_bytes(data)
    return path


async def export(db: Database, alert_id: int, fmt: Format, path: Path, *, now: datetime) -> Path:
    """Build the report of one alert and write it as csv, json, html or xlsx; rendering runs in a thread."""
    if fmt not in (*RENDERERS, "xlsx"):
        raise ValueError(f"unknown report format {fmt!r}; use csv, json, html or xlsx")
    report = await build_report(db, alert_id, now=now)
    written = await asyncio.to_thread(_write, report, fmt, path)
    log.info("report.exported", alert_id=alert_id, format=fmt, path=str(written), recipients=len(report.recipients))
    return written
