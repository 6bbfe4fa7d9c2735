"""The audit report as files people open: CSV for Excel, JSON for machines, standalone HTML to read and print."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Literal

import structlog
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from alerting.clock import local_text
from alerting.domain import Purpose
from alerting.report import DELIVERY_STATE_LABEL, AlertReport, RecipientRow, build_report, channel_label, label
from alerting.store.db import Database

Format = Literal["csv", "json", "html"]
TEMPLATES = Path(__file__).parent / "templates"
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


def _cell(value: str) -> str:
    # A cell starting with = + - @ is a formula to Excel; a note typed on a phone must not become one.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def render_csv(report: AlertReport) -> str:
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out)
    writer.writerow(CSV_HEADERS)
    for i, r in enumerate(report.recipients, 1):
        texts = [
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
        ]
        writer.writerow(
            [
                i,
                *map(_cell, texts),
                "" if r.answer_s is None else round(r.answer_s),
                _cell(answered_by_text(r)),
                r.answer_channel_label,
                _cell(r.on_behalf_reason or ""),
                r.step,
                _cell(escalation_text(r)),
                _cell(r.feedback_text),
                r.answers,
                "是" if r.sandbox else "否",
            ]
        )
    return out.getvalue()


def render_json(report: AlertReport) -> str:
    # compact: it is for machines, and indenting doubles the size of a county-wide report
    return report.model_dump_json()


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["local"] = local_text
    env.filters["duration"] = duration
    env.globals.update(
        channels_text=channels_text,
        escalation_text=escalation_text,
        answered_by_text=answered_by_text,
        channel_label=channel_label,
        delivery_state_label=lambda v: label(DELIVERY_STATE_LABEL, v),
    )
    return env


def render_html(report: AlertReport) -> str:
    template = _environment().get_template("report.html")
    return template.render(
        r=report,
        s=report.summary,
        colour=LEVEL_COLOUR.get(report.level, "#455a64"),
        silent=report.silent_recipients,
    )


RENDERERS = {"csv": render_csv, "json": render_json, "html": render_html}


def _write(report: AlertReport, fmt: Format, path: Path) -> Path:
    text = RENDERERS[fmt](report)
    path.parent.mkdir(parents=True, exist_ok=True)
    # newline="" keeps the CSV writer's \r\n as it is instead of doubling it on Windows
    path.write_text(text, encoding="utf-8", newline="")
    return path


async def export(db: Database, alert_id: int, fmt: Format, path: Path, *, now: datetime) -> Path:
    """Build the report of one alert and write it as csv, json or html; rendering runs in a thread."""
    if fmt not in RENDERERS:
        raise ValueError(f"unknown report format {fmt!r}; use csv, json or html")
    report = await build_report(db, alert_id, now=now)
    written = await asyncio.to_thread(_write, report, fmt, path)
    log.info("report.exported", alert_id=alert_id, format=fmt, path=str(written), recipients=len(report.recipients))
    return written
