"""The auditor's list of alerts: every alert, whatever its status, filtered and paged, with how its loop closed.

A township officer gets only alerts reaching their subtree, and the numbers count only the people
and devices inside it; everyone else sees the county.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.access import Principal, alert_in_scope, in_scope
from alerting.model.clock import SHANGHAI, utc
from alerting.model.domain import Level, TargetState
from alerting.store.db import Database
from alerting.store.tables import Alert, OrgUnit, Target
from alerting.views.labels import ALERT_STATUS_LABEL, LEVEL_LABEL, label

CLOSED_STATES = (TargetState.ANSWERED.value, TargetState.ANSWERED_FOR.value)
EXERCISE_CHOICES = {"all": None, "yes": True, "no": False}


class FilterError(ValueError):
    """A filter value that cannot be used; `field` names the form field or query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class ReviewFilter:
    date_from: date | None = None  # Asia/Shanghai calendar days, both ends included
    date_to: date | None = None
    level: Level | None = None
    hazard: str | None = None
    unit: str | None = None  # a unit code or name as typed; alerts reaching that unit's subtree
    exercise: bool | None = None  # None: drills and real warnings alike

    def check(self) -> ReviewFilter:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise FilterError("to", f"结束日期 {self.date_to} 早于开始日期 {self.date_from}")
        return self


def parse_filter(values: Mapping[str, str | None]) -> ReviewFilter:
    """The console's query string as a filter; an unusable value raises FilterError naming its field."""

    def text(name: str) -> str | None:
        v = (values.get(name) or "").strip()
        return v or None

    def day(name: str, what: str) -> date | None:
        v = text(name)
        if v is None:
            return None
        try:
            return date.fromisoformat(v)
        except ValueError:
            raise FilterError(name, f"{what}“{v}”不是有效日期，请写成 2026-07-01") from None

    level = text("level")
    if level is not None and level not in Level.__members__.values():
        raise FilterError("level", f"没有“{level}”这个预警级别")
    exercise = text("exercise") or "all"
    if exercise not in EXERCISE_CHOICES:
        raise FilterError("exercise", "演练筛选只能是 all、yes 或 no")
    return ReviewFilter(
        date_from=day("from", "开始日期"),
        date_to=day("to", "结束日期"),
        level=Level(level) if level else None,
        hazard=text("hazard"),
        unit=text("unit"),
        exercise=EXERCISE_CHOICES[exercise],
    ).check()


def day_start(d: date) -> datetime:
    """Midnight in 巫溪 at the start of this day, in UTC as the store keeps it."""
    return utc(datetime.combine(d, time(0), SHANGHAI))


@dataclass(frozen=True)
class FoundUnit:
    code: str
    name: str
    path: str


async def resolve_unit(session: AsyncSession, typed: str, within: str | None = None) -> FoundUnit:
    """A unit by its code, its exact name, or failing those the one unit whose name contains the text.
    `within` (a township officer's path) keeps the search, and what its messages name, inside that subtree."""
    q = select(col(OrgUnit.code), col(OrgUnit.name), col(OrgUnit.path))
    if within is not None:
        q = q.where(col(OrgUnit.path).startswith(within))
    row = (await session.execute(q.where(col(OrgUnit.code) == typed))).first()
    if row is None:
        exact = (await session.execute(q.where(col(OrgUnit.name) == typed).limit(2))).all()
        if len(exact) == 1:
            row = exact[0]
        else:
            near = (await session.execute(q.where(col(OrgUnit.name).icontains(typed, autoescape=True)).limit(6))).all()
            if len(near) == 1 and not exact:
                row = near[0]
            elif exact or near:
                names = "、".join(f"{n}（{c}）" for c, n, _ in (exact or near)[:5])
                raise FilterError("unit", f"有多个单位与“{typed}”相符：{names}……请输入单位代码")
    if row is None:
        raise FilterError("unit", f"找不到名称或代码为“{typed}”的单位")
    return FoundUnit(code=row[0], name=row[1], path=row[2])


class ReviewRow(BaseModel):
    id: int
    created_at: datetime
    level: str
    level_label: str
    hazard: str
    title: str
    exercise: bool
    status: str
    status_label: str
    units: list[str]
    unit_names: list[str]
    recipients: int  # people and devices that had to answer (inside the viewer's subtree)
    answered: int
    answered_for: int
    closed: int
    silent: int  # never closed: still open, lifted unanswered, or a device that never confirmed
    escalated: int  # went past the first wave
    answer_rate: float | None  # closed / recipients
    median_answer_s: float | None  # seconds from issue to answer, over the closed


class FoundUnitOut(BaseModel):
    code: str
    name: str


class ReviewPage(BaseModel):
    items: list[ReviewRow]
    total: int
    limit: int
    offset: int
    unit: FoundUnitOut | None = None  # what the unit filter was read as


async def _conditions(session: AsyncSession, who: Principal, f: ReviewFilter) -> tuple[list[Any], FoundUnit | None]:
    where: list[Any] = [alert_in_scope(who, col(Alert.id))]
    if f.date_from:
        where.append(col(Alert.created_at) >= day_start(f.date_from))
    if f.date_to:
        where.append(col(Alert.created_at) < day_start(f.date_to + timedelta(days=1)))
    if f.level:
        where.append(col(Alert.level) == f.level.value)
    if f.hazard:
        where.append(col(Alert.hazard) == f.hazard)
    if f.exercise is not None:
        where.append(col(Alert.exercise) == f.exercise)
    found = None
    if f.unit:
        found = await resolve_unit(session, f.unit, who.unit_path)
        inside = select(col(OrgUnit.code)).where(col(OrgUnit.path).startswith(found.path))
        reaches = select(col(Target.id)).where(col(Target.alert_id) == col(Alert.id), col(Target.unit_code).in_(inside))
        where.append(exists(reaches))
    return where, found


def rate(closed: int, total: int) -> float | None:
    return closed / total if total else None


async def list_alerts(db: Database, who: Principal, f: ReviewFilter, *, limit: int = 50, offset: int = 0) -> ReviewPage:
    """Newest first. Raises FilterError for a unit that cannot be found."""
    async with db.session() as s:
        where, found = await _conditions(s, who, f)
        total = int(await s.scalar(select(func.count()).select_from(Alert).where(*where)) or 0)
        alerts = list(
            (
                await s.execute(
                    select(Alert)
                    .where(*where)
                    .order_by(col(Alert.created_at).desc(), col(Alert.id).desc())
                    # the page's own rows: a limit and offset on the alerts, never on their targets
                    .limit(limit)
                    .offset(offset)
                )
            ).scalars()
        )
        ids = [a.id for a in alerts]
        stats = await _target_stats(s, who, ids)
        names = await unit_names(s, {c for a in alerts for c in a.target_units})
    items = []
    for a in alerts:
        assert a.id is not None
        st = stats.get(a.id, _Stats())
        items.append(
            ReviewRow(
                id=a.id,
                created_at=utc(a.created_at),
                level=a.level,
                level_label=label(LEVEL_LABEL, a.level),
                hazard=a.hazard,
                title=a.title,
                exercise=a.exercise,
                status=a.status,
                status_label=label(ALERT_STATUS_LABEL, a.status),
                units=list(a.target_units),
                unit_names=[names.get(c, c) for c in a.target_units],
                recipients=st.total,
                answered=st.answered,
                answered_for=st.answered_for,
                closed=st.closed,
                silent=st.total - st.closed,
                escalated=st.escalated,
                answer_rate=rate(st.closed, st.total),
                median_answer_s=statistics.median(st.waits) if st.waits else None,
            )
        )
    unit = FoundUnitOut(code=found.code, name=found.name) if found else None
    return ReviewPage(items=items, total=total, limit=limit, offset=offset, unit=unit)


@dataclass
class _Stats:
    total: int = 0
    answered: int = 0
    answered_for: int = 0
    escalated: int = 0
    waits: list[float] = field(default_factory=list)

    @property
    def closed(self) -> int:
        return self.answered + self.answered_for


async def _target_stats(s: AsyncSession, who: Principal, ids: list[int | None]) -> dict[int, _Stats]:
    scope: ColumnElement[bool] = in_scope(who, col(Target.unit_code))
    counts = await s.execute(
        select(col(Target.alert_id), col(Target.state), func.count(), func.count().filter(col(Target.step) > 0))
        .where(col(Target.alert_id).in_(ids), scope)
        .group_by(col(Target.alert_id), col(Target.state))
    )
    stats: dict[int, _Stats] = defaultdict(_Stats)
    for alert_id, state, n, up in counts:
        st = stats[alert_id]
        st.total += int(n)
        st.escalated += int(up or 0)
        if state == TargetState.ANSWERED.value:
            st.answered += int(n)
        elif state == TargetState.ANSWERED_FOR.value:
            st.answered_for += int(n)
    answers = await s.execute(
        select(col(Target.alert_id), col(Target.answered_at), col(Alert.created_at))
        .join(Alert, col(Alert.id) == col(Target.alert_id))
        .where(
            col(Target.alert_id).in_(ids),
            col(Target.state).in_(CLOSED_STATES),
            col(Target.answered_at).is_not(None),
            scope,
        )
    )
    for alert_id, answered_at, created_at in answers:
        if answered_at is None:
            continue
        stats[alert_id].waits.append((utc(answered_at) - utc(created_at)).total_seconds())
    return stats


async def unit_names(s: AsyncSession, codes: set[str]) -> dict[str, str]:
    if not codes:
        return {}
    rows = await s.execute(select(col(OrgUnit.code), col(OrgUnit.name)).where(col(OrgUnit.code).in_(codes)))
    return {code: name for code, name in rows}


async def hazards(db: Database, who: Principal) -> list[str]:
    """The hazards alerts were issued for, for the filter's choices."""
    async with db.session() as s:
        rows = await s.execute(
            select(col(Alert.hazard)).where(alert_in_scope(who, col(Alert.id))).distinct().order_by(col(Alert.hazard))
        )
        return [h for (h,) in rows]
