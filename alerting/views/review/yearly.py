"""The year in review: warnings by level (real apart from drills), how many answered and how fast,
drills held, and each township's answer rate.

An update replaces an alert and carries its answers over, so a superseded alert is not counted again:
each warning counts once, as its latest version.
"""

from __future__ import annotations

import asyncio
import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from pydantic import BaseModel
from sqlalchemy import Row, func, select
from sqlmodel import col

from alerting.model.access import Principal, alert_in_scope, in_scope, township_code
from alerting.model.clock import local_text, utc
from alerting.model.domain import AlertStatus, Level, TargetState, UnitKind
from alerting.store.db import Database
from alerting.store.tables import Alert, OrgUnit, Target
from alerting.views.labels import COUNTY_LEVEL, LEVEL_LABEL, label
from alerting.views.report.export import BOM, duration
from alerting.views.review.drills import DrillRecord, DrillRow, drill_record
from alerting.views.review.listing import CLOSED_STATES, ReviewFilter, day_start, list_alerts, rate


class LevelRow(BaseModel):
    level: str
    label: str
    real: int
    exercise: int

    @property
    def total(self) -> int:
        return self.real + self.exercise


class Loop(BaseModel):
    """How the loops of a set of alerts closed."""

    name: str
    alerts: int = 0
    recipients: int = 0
    answered: int = 0
    answered_for: int = 0
    answer_rate: float | None = None
    median_answer_s: float | None = None

    @property
    def closed(self) -> int:
        return self.answered + self.answered_for


class TownshipRate(BaseModel):
    code: str | None
    name: str
    recipients: int
    closed: int
    answer_rate: float | None
    median_answer_s: float | None


class YearlySummary(BaseModel):
    year: int
    by_level: list[LevelRow]
    updates: int  # superseded versions, not counted as alerts of their own
    loops: list[Loop]  # all, real, drills
    townships: list[TownshipRate]
    drills: list[DrillRow]
    drills_answer_rate: float | None

    @property
    def alerts(self) -> int:
        return sum(r.total for r in self.by_level)

    @property
    def drills_held(self) -> int:
        return len(self.drills)


@dataclass
class _Acc:
    recipients: int = 0
    answered: int = 0
    answered_for: int = 0
    waits: list[float] = field(default_factory=list)

    def loop(self, name: str, alerts: int) -> Loop:
        closed = self.answered + self.answered_for
        return Loop(
            name=name,
            alerts=alerts,
            recipients=self.recipients,
            answered=self.answered,
            answered_for=self.answered_for,
            answer_rate=rate(closed, self.recipients),
            median_answer_s=statistics.median(self.waits) if self.waits else None,
        )


async def yearly_summary(db: Database, who: Principal, year: int) -> YearlySummary:
    if not 2000 <= year <= 2100:
        raise ValueError(f"year {year} is out of range")
    start, end = day_start(date(year, 1, 1)), day_start(date(year + 1, 1, 1))
    dates = [col(Alert.created_at) >= start, col(Alert.created_at) < end]
    in_year = [*dates, alert_in_scope(who, col(Alert.id))]
    counted = [*in_year, col(Alert.status) != AlertStatus.SUPERSEDED.value]
    # per target, the unit scope alone keeps a township to its subtree (an alert-level EXISTS on target
    # would correlate with the outer target and lose its FROM)
    scope = in_scope(who, col(Target.unit_code))
    counted_targets = [*dates, col(Alert.status) != AlertStatus.SUPERSEDED.value, scope]
    async with db.session() as s:
        levels = (
            await s.execute(
                select(col(Alert.level), col(Alert.exercise), func.count())
                .where(*counted)
                .group_by(col(Alert.level), col(Alert.exercise))
            )
        ).all()
        updates = await s.scalar(
            select(func.count()).select_from(Alert).where(*in_year, col(Alert.status) == AlertStatus.SUPERSEDED.value)
        )
        # counts per unit are small whatever the year held; answer times are fetched only for the closed
        states = (
            await s.execute(
                select(col(Target.unit_code), col(Alert.exercise), col(Target.state), func.count())
                .join(Alert, col(Alert.id) == col(Target.alert_id))
                .where(*counted_targets)
                .group_by(col(Target.unit_code), col(Alert.exercise), col(Target.state))
            )
        ).all()
        waits = (
            await s.execute(
                select(col(Target.unit_code), col(Alert.exercise), col(Target.answered_at), col(Alert.created_at))
                .join(Alert, col(Alert.id) == col(Target.alert_id))
                .where(*counted_targets, col(Target.state).in_(CLOSED_STATES), col(Target.answered_at).is_not(None))
            )
        ).all()
        units = (
            await s.execute(
                select(col(OrgUnit.code), col(OrgUnit.name), col(OrgUnit.kind), col(OrgUnit.path)).where(
                    col(OrgUnit.kind) != UnitKind.GRID.value
                )
            )
        ).all()
        grids = (
            await s.execute(
                select(col(OrgUnit.code), col(OrgUnit.path)).where(
                    col(OrgUnit.code).in_(sorted({u for u, *_ in states})), col(OrgUnit.kind) == UnitKind.GRID.value
                )
            )
        ).all()
    drills = await _drills(db, who, year)
    by_level = {(lv, bool(ex)): int(n) for lv, ex, n in levels}
    level_rows = [
        LevelRow(
            level=lv.value,
            label=lv.label,
            real=by_level.get((lv.value, False), 0),
            exercise=by_level.get((lv.value, True), 0),
        )
        for lv in Level
    ]
    alerts_real = sum(r.real for r in level_rows)
    alerts_drill = sum(r.exercise for r in level_rows)
    loops, townships = await asyncio.to_thread(_tally, states, waits, units, grids, alerts_real, alerts_drill)
    closed = sum(d.answered + d.answered_for for d in drills.drills)
    reached = sum(d.targets for d in drills.drills)
    return YearlySummary(
        year=year,
        by_level=level_rows,
        updates=int(updates or 0),
        loops=loops,
        townships=townships,
        drills=drills.drills,
        drills_answer_rate=rate(closed, reached),
    )


async def _drills(db: Database, who: Principal, year: int) -> DrillRecord:
    """The drill record; a township officer's counts only their own subtree, like everything else they see."""
    if who.county_wide:
        return await drill_record(db, year)
    f = ReviewFilter(date_from=date(year, 1, 1), date_to=date(year, 12, 31), exercise=True)
    page = await list_alerts(db, who, f, limit=10_000)
    rows = [
        DrillRow(
            alert_id=r.id,
            issued_at=r.created_at,
            level=r.level,
            hazard=r.hazard,
            title=r.title,
            units=r.units,
            status=r.status,
            targets=r.recipients,
            answered=r.answered,
            answered_for=r.answered_for,
            silent=r.silent,
            escalated=r.escalated,
            median_answer_s=r.median_answer_s,
        )
        for r in reversed(page.items)
        if r.status != AlertStatus.SUPERSEDED.value  # as drill_record: an updated drill is held once
    ]
    return DrillRecord(year=year, drills=rows)


def _tally(
    states: Sequence[Row[str, bool, str, int]],
    waits: Sequence[Row[str, bool, datetime | None, datetime]],
    units: Sequence[Row[str, str, str, str]],
    grids: Sequence[Row[str, str]],
    alerts_real: int,
    alerts_drill: int,
) -> tuple[list[Loop], list[TownshipRate]]:
    paths = {code: path for code, _, _, path in units} | {code: path for code, path in grids}
    names = {code: name for code, name, _, _ in units}

    def township(unit_code: str) -> str | None:
        return township_code(paths.get(unit_code, ""))

    everything, real, drill = _Acc(), _Acc(), _Acc()
    per_township: dict[str | None, _Acc] = defaultdict(_Acc)
    for unit_code, exercise, state, n in states:
        for acc in (everything, drill if exercise else real, per_township[township(unit_code)]):
            acc.recipients += int(n)
            if state == TargetState.ANSWERED.value:
                acc.answered += int(n)
            elif state == TargetState.ANSWERED_FOR.value:
                acc.answered_for += int(n)
    for unit_code, exercise, answered_at, created_at in waits:
        if answered_at is None:
            continue
        seconds = (utc(answered_at) - utc(created_at)).total_seconds()
        for acc in (everything, drill if exercise else real, per_township[township(unit_code)]):
            acc.waits.append(seconds)
    loops = [
        everything.loop("全部", alerts_real + alerts_drill),
        real.loop("真实预警", alerts_real),
        drill.loop("演练", alerts_drill),
    ]
    townships = []
    for code, acc in sorted(per_township.items(), key=lambda kv: kv[0] or ""):
        closed = acc.answered + acc.answered_for
        townships.append(
            TownshipRate(
                code=code,
                name=names.get(code, code) if code else COUNTY_LEVEL,
                recipients=acc.recipients,
                closed=closed,
                answer_rate=rate(closed, acc.recipients),
                median_answer_s=statistics.median(acc.waits) if acc.waits else None,
            )
        )
    return loops, townships


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def render_yearly_csv(summary: YearlySummary) -> str:
    """One file with the year's sections one after the other, as an archive clerk prints it."""
    out = io.StringIO()
    out.write(BOM)
    w = csv.writer(out)
    w.writerow([f"{summary.year} 年预警叫应年度汇总"])
    w.writerow([])
    w.writerow(["预警级别", "真实预警", "演练", "合计"])
    for r in summary.by_level:
        w.writerow([r.label, r.real, r.exercise, r.total])
    w.writerow(
        ["合计", sum(r.real for r in summary.by_level), sum(r.exercise for r in summary.by_level), summary.alerts]
    )
    w.writerow(["更新（不重复计入）", summary.updates])
    w.writerow([])
    w.writerow(["范围", "预警数", "应叫应", "本人应答", "代应答", "应答率", "应答用时中位数", "用时中位数（秒）"])
    for lp in summary.loops:
        median = "" if lp.median_answer_s is None else round(lp.median_answer_s)
        w.writerow(
            [
                lp.name,
                lp.alerts,
                lp.recipients,
                lp.answered,
                lp.answered_for,
                percent(lp.answer_rate),
                duration(lp.median_answer_s),
                median,
            ]
        )
    w.writerow([])
    w.writerow(["乡镇/街道", "代码", "应叫应", "已闭环", "应答率", "应答用时中位数"])
    for t in summary.townships:
        w.writerow([t.name, t.code or "", t.recipients, t.closed, percent(t.answer_rate), duration(t.median_answer_s)])
    w.writerow([])
    w.writerow([f"演练 {summary.drills_held} 次", f"演练应答率 {percent(summary.drills_answer_rate)}"])
    w.writerow(["预警编号", "发布时间", "级别", "灾种", "标题", "应叫应", "本人应答", "代应答", "未应答", "用时中位数"])
    for d in summary.drills:
        w.writerow(
            [
                d.alert_id,
                local_text(d.issued_at),
                label(LEVEL_LABEL, d.level),
                d.hazard,
                d.title,
                d.targets,
                d.answered,
                d.answered_for,
                d.silent,
                duration(d.median_answer_s),
            ]
        )
    return out.getvalue()
