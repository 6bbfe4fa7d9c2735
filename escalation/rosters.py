"""Duty rosters (值班表) of the townships and the county: who is on duty at a moment, and when nobody is.

A step for the township or county duty officer asks `on_duty` when it fires, not when it was scheduled,
so a handover at 08:00 sends an 08:05 step to whoever took over.

Coverage counts primaries (rank 0) only: a backup is there to be called when the primary does not answer,
not to stand a shift alone. A unit that has never had a roster is not a gap: its duty responsibility
(township_duty / county_duty) stands in, and `coverage_gaps` says so separately. A gap in a roster that
exists is a gap, even though the same fallback is reached meanwhile: the roster was meant to cover it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.clock import local_text
from alerting.model.domain import Role, UnitKind
from alerting.store.db import Database
from alerting.store.tables import DutyShift, OrgUnit, Person, Responsibility

log = structlog.get_logger()

DUTY_ROLE = {UnitKind.COUNTY: Role.COUNTY_DUTY, UnitKind.TOWNSHIP: Role.TOWNSHIP_DUTY}


async def on_duty(s: AsyncSession, unit_code: str, role: Role, at: datetime) -> list[str]:
    """Whoever the roster has on duty at `at` (the primary if there is one, else the backup on shift);
    with no shift at `at`, the unit's duty responsible person. People no longer active are passed over."""
    rows = await s.execute(
        select(col(DutyShift.person_id))
        .join(Person, col(Person.id) == col(DutyShift.person_id))
        .where(
            col(DutyShift.unit_code) == unit_code,
            col(DutyShift.starts_at) <= at,
            col(DutyShift.ends_at) > at,
            col(Person.active),
        )
        .order_by(col(DutyShift.rank), col(DutyShift.starts_at))
        .limit(1)
    )
    shift = list(rows.scalars())
    if shift:
        return shift
    rows = await s.execute(
        select(col(Responsibility.person_id))
        .join(Person, col(Person.id) == col(Responsibility.person_id))
        .where(
            col(Responsibility.unit_code) == unit_code,
            col(Responsibility.role) == role.value,
            col(Person.active),
        )
        .order_by(col(Responsibility.rank))
        .limit(1)
    )
    return list(rows.scalars())


@dataclass(frozen=True)
class Gap:
    """A stretch of time in which a township or the county has no primary on duty.

    `no_roster`: the unit has never had a roster, and the gap is the whole window asked about.
    `fallback_id`/`fallback_name`: the duty responsible person a step reaches meanwhile (None: nobody).
    """

    unit_code: str
    unit_name: str
    kind: UnitKind
    starts_at: datetime
    ends_at: datetime
    no_roster: bool
    fallback_id: str | None
    fallback_name: str | None

    @property
    def covered_by_fallback(self) -> bool:
        """Only a unit without any roster counts as covered by its duty responsible person."""
        return self.no_roster and self.fallback_id is not None

    @property
    def hours(self) -> float:
        return (self.ends_at - self.starts_at).total_seconds() / 3600

    def describe(self) -> str:
        """One line for a log or a terminal, times in Asia/Shanghai."""
        fallback = f"{self.fallback_name} ({self.fallback_id})" if self.fallback_id else "nobody 无人"
        if self.no_roster:
            return f"{self.unit_name} {self.unit_code}: no roster 无值班表, falls back to {fallback}"
        return (
            f"{self.unit_name} {self.unit_code}: no primary on duty 无人值班 "
            f"{local_text(self.starts_at)} – {local_text(self.ends_at)}, falls back to {fallback}"
        )


def _uncovered(
    start: datetime, end: datetime, shifts: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """The parts of [start, end) that no shift covers."""
    gaps: list[tuple[datetime, datetime]] = []
    cursor = start
    for s, e in sorted(shifts):
        if s > cursor:
            gaps.append((cursor, min(s, end)))
        cursor = max(cursor, e)
        if cursor >= end:
            return gaps
    if cursor < end:
        gaps.append((cursor, end))
    return gaps


async def coverage_gaps(db: Database, *, now: datetime, hours: float = 24) -> list[Gap]:
    """Every stretch of [now, now + hours) in which a township or the county has no primary on duty,
    plus one entry per unit with no roster at all (`no_roster`), county first, then townships by code."""
    end = now + timedelta(hours=hours)
    kinds = [UnitKind.COUNTY.value, UnitKind.TOWNSHIP.value]
    async with db.session() as s:
        units = (
            await s.execute(
                select(col(OrgUnit.code), col(OrgUnit.name), col(OrgUnit.kind))
                .where(col(OrgUnit.kind).in_(kinds))
                .order_by(col(OrgUnit.path))
            )
        ).all()
        rostered = set((await s.execute(select(col(DutyShift.unit_code)).distinct())).scalars())
        shift_rows = await s.execute(
            select(col(DutyShift.unit_code), col(DutyShift.starts_at), col(DutyShift.ends_at))
            .join(Person, col(Person.id) == col(DutyShift.person_id))
            .where(
                col(DutyShift.rank) == 0,
                col(DutyShift.starts_at) < end,
                col(DutyShift.ends_at) > now,
                col(Person.active),
            )
        )
        shifts: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
        for row in shift_rows:
            shifts[row.unit_code].append((row.starts_at, row.ends_at))
        duty_rows = await s.execute(
            select(col(Responsibility.unit_code), col(Responsibility.role), col(Person.id), col(Person.name))
            .join(Person, col(Person.id) == col(Responsibility.person_id))
            .where(
                col(Responsibility.role).in_([r.value for r in DUTY_ROLE.values()]),
                col(Person.active),
            )
            .order_by(col(Responsibility.rank))
        )
        fallbacks: dict[tuple[str, str], tuple[str, str]] = {}
        for duty in duty_rows:
            fallbacks.setdefault((duty.unit_code, duty.role), (duty.id, duty.name))
    gaps: list[Gap] = []
    for unit in units:
        kind = UnitKind(unit.kind)
        fallback_id, fallback_name = fallbacks.get((unit.code, DUTY_ROLE[kind].value), (None, None))
        no_roster = unit.code not in rostered
        for starts_at, ends_at in _uncovered(now, end, shifts.get(unit.code, [])):
            gaps.append(Gap(unit.code, unit.name, kind, starts_at, ends_at, no_roster, fallback_id, fallback_name))
    return gaps


async def warn_coverage_gaps(db: Database, *, now: datetime, hours: float = 24) -> list[Gap]:
    """Log the coverage of the next `hours`: a warning per gap, one line for the units without a roster."""
    gaps = await coverage_gaps(db, now=now, hours=hours)
    no_roster = [g for g in gaps if g.covered_by_fallback]
    for gap in gaps:
        if not gap.covered_by_fallback:
            log.warning(
                "roster.gap",
                unit=gap.unit_code,
                unit_name=gap.unit_name,
                starts_at=local_text(gap.starts_at),
                ends_at=local_text(gap.ends_at),
                no_roster=gap.no_roster,
                fallback=gap.fallback_id,
            )
    if no_roster:
        log.info(
            "roster.none",
            units=[g.unit_code for g in no_roster],
            note="no duty roster: steps for the duty officer reach the unit's duty responsible person",
        )
    return gaps
