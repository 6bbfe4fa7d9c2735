"""The duty rosters (值班表) in the viewer's scope: who is on duty now, the next shifts, the hours nobody covers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlmodel import col

from alerting.model.access import Principal
from alerting.model.clock import utc
from alerting.model.domain import Role, UnitKind
from alerting.store.db import Database
from alerting.store.tables import DutyShift, OrgUnit, Person, Responsibility
from alerting.views.directory import Duty, UnitRef, duty_of, phone_for, under, unit_ref

DUTY_ROLE = {UnitKind.COUNTY.value: Role.COUNTY_DUTY.value, UnitKind.TOWNSHIP.value: Role.TOWNSHIP_DUTY.value}
GAP_HOURS = 24  # how far ahead the roster view looks for hours with nobody on duty
SHIFT_HORIZON = timedelta(days=7)  # how far ahead it looks for the next shifts
NEXT_SHIFTS = 3


class ShiftOut(BaseModel):
    person_id: str
    name: str
    phone: str | None
    rank: int
    rank_label: str
    starts_at: datetime
    ends_at: datetime
    active: bool


class GapOut(BaseModel):
    starts_at: datetime
    ends_at: datetime
    hours: float


class RosterOut(BaseModel):
    unit: UnitRef
    has_roster: bool = Field(description="false: no shift was ever imported; the duty responsible person stands in")
    on_duty: list[ShiftOut]
    upcoming: list[ShiftOut]
    gaps: list[GapOut] = Field(description=f"stretches of the next {GAP_HOURS} h with no active primary on duty")
    fallback: Duty | None = Field(description="the unit's duty responsible person, reached when no shift covers")

    @property
    def uncovered(self) -> bool:
        """What the duty room must fix: a roster with holes, or no roster and nobody to fall back to."""
        return bool(self.gaps) if self.has_roster else self.fallback is None


def _uncovered(start: datetime, end: datetime, spans: Iterable[tuple[datetime, datetime]]) -> list[GapOut]:
    """The parts of [start, end) no span covers."""
    gaps: list[GapOut] = []
    cursor = start
    for lo, hi in sorted(spans):
        if lo > cursor:
            stop = min(lo, end)
            gaps.append(GapOut(starts_at=cursor, ends_at=stop, hours=round((stop - cursor).total_seconds() / 3600, 1)))
        cursor = max(cursor, hi)
        if cursor >= end:
            return gaps
    if cursor < end:
        gaps.append(GapOut(starts_at=cursor, ends_at=end, hours=round((end - cursor).total_seconds() / 3600, 1)))
    return gaps


async def rosters(
    db: Database, who: Principal, *, now: datetime, only_uncovered: bool = False, limit: int, offset: int
) -> tuple[list[RosterOut], int]:
    """The county's and each township's roster in scope: who is on duty now, the next shifts, and the
    stretches of the next GAP_HOURS with no active primary (rank 0) on duty, county first."""
    now = utc(now)
    gap_end = now + timedelta(hours=GAP_HOURS)
    async with db.session() as s:
        units = list(
            (
                await s.execute(
                    select(OrgUnit)
                    .where(col(OrgUnit.kind).in_(list(DUTY_ROLE)), under(who.unit_path, col(OrgUnit.path)))
                    .order_by(col(OrgUnit.path))
                )
            ).scalars()
        )
        codes = [u.code for u in units]
        rostered = set(
            (await s.execute(select(col(DutyShift.unit_code)).where(col(DutyShift.unit_code).in_(codes)).distinct()))
            .scalars()
            .all()
        )
        shifts: dict[str, list[tuple[DutyShift, Person]]] = defaultdict(list)
        for shift, person in await s.execute(
            select(DutyShift, Person)
            .join(Person, col(Person.id) == col(DutyShift.person_id))
            .where(
                col(DutyShift.unit_code).in_(codes),
                col(DutyShift.ends_at) > now,
                col(DutyShift.starts_at) < now + SHIFT_HORIZON,
            )
            .order_by(col(DutyShift.starts_at), col(DutyShift.rank))
        ):
            shifts[shift.unit_code].append((shift, person))
        fallbacks: dict[str, Duty] = {}
        for r, p in await s.execute(
            select(Responsibility, Person)
            .join(Person, col(Person.id) == col(Responsibility.person_id))
            .where(
                col(Responsibility.unit_code).in_(codes),
                col(Responsibility.role).in_(list(DUTY_ROLE.values())),
                col(Person.active),
            )
            .order_by(col(Responsibility.rank))
        ):
            fallbacks.setdefault(r.unit_code, duty_of(who, r, p))

    def shift_out(shift: DutyShift, person: Person) -> ShiftOut:
        return ShiftOut(
            person_id=person.id,
            name=person.name,
            phone=phone_for(who, person.phone),
            rank=shift.rank,
            rank_label="值班" if shift.rank == 0 else f"备班{shift.rank if shift.rank > 1 else ''}",
            starts_at=utc(shift.starts_at),
            ends_at=utc(shift.ends_at),
            active=person.active,
        )

    out: list[RosterOut] = []
    for u in units:
        mine = shifts.get(u.code, [])
        now_on = sorted((x for x in mine if utc(x[0].starts_at) <= now), key=lambda x: (x[0].rank, x[0].starts_at))
        later = [x for x in mine if utc(x[0].starts_at) > now][:NEXT_SHIFTS]
        covered = [(utc(sh.starts_at), utc(sh.ends_at)) for sh, p in mine if sh.rank == 0 and p.active]
        has_roster = u.code in rostered
        out.append(
            RosterOut(
                unit=unit_ref(u),
                has_roster=has_roster,
                on_duty=[shift_out(*x) for x in now_on],
                upcoming=[shift_out(*x) for x in later],
                gaps=_uncovered(now, gap_end, covered) if has_roster else [],
                fallback=fallbacks.get(u.code),
            )
        )
    if only_uncovered:
        out = [r for r in out if r.uncovered]
    return out[offset : offset + limit], len(out)
