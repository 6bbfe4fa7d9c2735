"""Reading the directory for the console and the API: units, people and devices. Read-only.

Every query is bounded by who asks: a township officer sees only their own subtree (units on its
path, people answering for or on duty in it, and its devices). Lists are paged, and one
page costs the same handful of queries whatever its size.

Phone numbers: the duty room, township officers and admins see them whole, because they are the
ones who call; an auditor reviews afterwards and sees them masked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, exists, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.access import Forbidden, Principal
from alerting.model.clock import utc
from alerting.model.privacy import mask_phone, sees_whole_numbers
from alerting.store.db import Database
from alerting.store.tables import Device, DutyShift, OrgUnit, Person, Responsibility
from alerting.views.labels import DEVICE_KIND_LABEL, UNIT_KIND_LABEL, label, role_label


class UnitRef(BaseModel):
    code: str
    name: str
    kind: str
    kind_label: str
    path: str


class Duty(BaseModel):
    """A person answering for a unit."""

    person_id: str
    name: str
    phone: str | None = Field(description="whole for duty, township and admin; masked for auditors")
    role: str
    role_label: str
    rank: int = Field(description="0 = primary, 1.. = backups in order")
    active: bool


class UnitItem(UnitRef):
    parent_code: str | None
    place: str = Field(description="the names of the units above it, county first")
    primary: str | None = Field(description="the name of the rank-0 responsible person")
    people: int
    devices: int
    children: int


class DeviceOut(BaseModel):
    id: str
    name: str
    kind: str
    kind_label: str
    unit_code: str
    unit_name: str
    place: str
    online: bool | None = Field(description="the device's last status; null = it never reported")
    status_at: datetime | None


class UnitDetail(BaseModel):
    unit: UnitItem
    ancestors: list[UnitRef]
    people: list[Duty]
    devices: list[DeviceOut]
    children: list[UnitItem]
    children_total: int


class PersonDuty(BaseModel):
    unit_code: str
    unit_name: str
    role: str
    role_label: str
    rank: int


class PersonOut(BaseModel):
    id: str
    name: str
    phone: str | None = Field(description="whole for duty, township and admin; masked for auditors")
    wecom_userid: str | None
    email: str | None
    active: bool
    duties: list[PersonDuty] = Field(description="the units they answer for (inside the caller's scope)")


def phone_for(who: Principal, phone: str | None) -> str | None:
    if not phone:
        return None
    return phone if sees_whole_numbers(who) else mask_phone(phone)


def _like(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _within(who: Principal, path: str | None) -> str | None:
    """The subtree to read: a unit's path asked for, which must lie inside the principal's own."""
    if path is None:
        return who.unit_path
    if not who.sees_path(path):
        raise Forbidden("这个单位不在你负责的范围内")
    return path


def under(path: str | None, unit_path: Any) -> ColumnElement[bool]:
    return true() if path is None else unit_path.startswith(path)


async def _scope_path(s: AsyncSession, who: Principal, unit: str | None) -> str | None:
    if unit is None:
        return who.unit_path
    path = await s.scalar(select(col(OrgUnit.path)).where(col(OrgUnit.code) == unit))
    if path is None:
        raise LookupError(f"没有代码为 {unit} 的单位")
    return _within(who, path)


def _codes_on(paths: Iterable[str]) -> set[str]:
    return {c for p in paths for c in p.strip("/").split("/") if c}


async def _names(s: AsyncSession, codes: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(codes))
    if not wanted:
        return {}
    rows = await s.execute(select(col(OrgUnit.code), col(OrgUnit.name)).where(col(OrgUnit.code).in_(wanted)))
    return {r.code: r.name for r in rows}


def _place(path: str, names: dict[str, str], *, upto_self: bool = False) -> str:
    codes = [c for c in path.strip("/").split("/") if c]
    return " / ".join(names.get(c, c) for c in (codes if upto_self else codes[:-1]))


def unit_ref(u: OrgUnit) -> UnitRef:
    return UnitRef(code=u.code, name=u.name, kind=u.kind, kind_label=label(UNIT_KIND_LABEL, u.kind), path=u.path)


async def _unit_items(s: AsyncSession, units: Sequence[OrgUnit]) -> list[UnitItem]:
    codes = [u.code for u in units]
    if not codes:
        return []
    names = await _names(s, _codes_on(u.path for u in units))
    primary: dict[str, str] = {}
    for r in await s.execute(
        select(col(Responsibility.unit_code), col(Person.name))
        .join(Person, col(Person.id) == col(Responsibility.person_id))
        .where(col(Responsibility.unit_code).in_(codes))
        .order_by(col(Responsibility.rank))
    ):
        primary.setdefault(r.unit_code, r.name)

    async def counted(column: Any) -> dict[str, int]:
        rows = await s.execute(select(column, func.count()).where(column.in_(codes)).group_by(column))
        return {code: int(n) for code, n in rows}

    people = await counted(col(Responsibility.unit_code))
    devices = await counted(col(Device.unit_code))
    children = await counted(col(OrgUnit.parent_code))
    return [
        UnitItem(
            **unit_ref(u).model_dump(),
            parent_code=u.parent_code,
            place=_place(u.path, names),
            primary=primary.get(u.code),
            people=people.get(u.code, 0),
            devices=devices.get(u.code, 0),
            children=children.get(u.code, 0),
        )
        for u in units
    ]


async def root_code(db: Database, who: Principal) -> str | None:
    """Where the unit tree opens: the principal's own unit, or the county."""
    if who.unit_code is not None:
        return who.unit_code
    async with db.session() as s:
        return await s.scalar(
            select(col(OrgUnit.code)).where(col(OrgUnit.parent_code).is_(None)).order_by(col(OrgUnit.code)).limit(1)
        )


def duty_of(who: Principal, r: Responsibility, p: Person) -> Duty:
    return Duty(
        person_id=p.id,
        name=p.name,
        phone=phone_for(who, p.phone),
        role=r.role,
        role_label=role_label(r.role),
        rank=r.rank,
        active=p.active,
    )


async def unit_detail(
    db: Database, who: Principal, code: str, *, limit: int = 50, offset: int = 0
) -> UnitDetail | None:
    """One unit with the people answering for it, its devices and a page of the units under it."""
    async with db.session() as s:
        unit = await s.get(OrgUnit, code)
        if unit is None:
            return None
        _within(who, unit.path)
        ancestor_codes = [c for c in unit.path.strip("/").split("/") if c and c != code]
        above = {
            u.code: u for u in (await s.execute(select(OrgUnit).where(col(OrgUnit.code).in_(ancestor_codes)))).scalars()
        }
        duties = await s.execute(
            select(Responsibility, Person)
            .join(Person, col(Person.id) == col(Responsibility.person_id))
            .where(col(Responsibility.unit_code) == code)
            .order_by(col(Responsibility.rank), col(Person.name))
        )
        people = [duty_of(who, r, p) for r, p in duties]
        devices = await _devices(s, select(Device).where(col(Device.unit_code) == code).order_by(col(Device.id)))
        child_filter = col(OrgUnit.parent_code) == code
        total = int(await s.scalar(select(func.count()).select_from(OrgUnit).where(child_filter)) or 0)
        children = (
            await s.execute(select(OrgUnit).where(child_filter).order_by(col(OrgUnit.code)).limit(limit).offset(offset))
        ).scalars()
        return UnitDetail(
            unit=(await _unit_items(s, [unit]))[0],
            ancestors=[unit_ref(above[c]) for c in ancestor_codes if c in above],
            people=people,
            devices=devices,
            children=await _unit_items(s, list(children)),
            children_total=total,
        )


async def search_units(db: Database, who: Principal, q: str, *, limit: int, offset: int) -> tuple[list[UnitItem], int]:
    """Units in scope whose name contains `q` or whose code starts with it, down the tree in order."""
    q = q.strip()
    match = or_(col(OrgUnit.name).ilike(_like(q), escape="\\"), col(OrgUnit.code).startswith(q, autoescape=True))
    where = and_(match, under(who.unit_path, col(OrgUnit.path)))
    async with db.session() as s:
        total = int(await s.scalar(select(func.count()).select_from(OrgUnit).where(where)) or 0)
        rows = (
            await s.execute(select(OrgUnit).where(where).order_by(col(OrgUnit.path)).limit(limit).offset(offset))
        ).scalars()
        return await _unit_items(s, list(rows)), total


async def _devices(s: AsyncSession, q: Any) -> list[DeviceOut]:
    rows: list[Device] = list((await s.execute(q)).scalars())
    units = {
        u.code: u
        for u in (await s.execute(select(OrgUnit).where(col(OrgUnit.code).in_({d.unit_code for d in rows})))).scalars()
    }
    names = await _names(s, _codes_on(u.path for u in units.values()))
    out: list[DeviceOut] = []
    for d in rows:
        unit = units.get(d.unit_code)
        out.append(
            DeviceOut(
                id=d.id,
                name=d.name,
                kind=d.kind,
                kind_label=label(DEVICE_KIND_LABEL, d.kind),
                unit_code=d.unit_code,
                unit_name=unit.name if unit else d.unit_code,
                place=_place(unit.path, names) if unit else "",
                online=d.online,
                status_at=utc(d.status_at) if d.status_at else None,
            )
        )
    return out


async def devices_page(
    db: Database,
    who: Principal,
    *,
    q: str = "",
    online: bool | None = None,
    never_reported: bool = False,
    unit: str | None = None,
    limit: int,
    offset: int,
) -> tuple[list[DeviceOut], int]:
    """Devices in scope (or under `unit`), down the tree; `online` filters on the last status."""
    async with db.session() as s:
        path = await _scope_path(s, who, unit)
        where: list[ColumnElement[bool]] = [under(path, col(OrgUnit.path))]
        if q.strip():
            like = _like(q.strip())
            where.append(
                or_(
                    col(Device.name).ilike(like, escape="\\"),
                    col(Device.id).ilike(like, escape="\\"),
                    col(OrgUnit.name).ilike(like, escape="\\"),
                )
            )
        if never_reported:
            where.append(col(Device.online).is_(None))
        elif online is not None:
            where.append(col(Device.online) == online)
        base = select(Device).join(OrgUnit, col(OrgUnit.code) == col(Device.unit_code)).where(*where)
        total = int(await s.scalar(select(func.count()).select_from(base.subquery())) or 0)
        page = base.order_by(col(OrgUnit.path), col(Device.kind), col(Device.id)).limit(limit).offset(offset)
        return await _devices(s, page), total


async def people_page(
    db: Database,
    who: Principal,
    *,
    q: str = "",
    unit: str | None = None,
    active: bool | None = None,
    limit: int,
    offset: int,
) -> tuple[list[PersonOut], int]:
    """People answering for, or on a duty roster of, a unit in scope (everyone, county-wide); by name."""
    async with db.session() as s:
        path = await _scope_path(s, who, unit)
        where: list[ColumnElement[bool]] = []
        if path is not None:
            answers = (
                select(col(Responsibility.id))
                .join(OrgUnit, col(OrgUnit.code) == col(Responsibility.unit_code))
                .where(col(Responsibility.person_id) == col(Person.id), col(OrgUnit.path).startswith(path))
            )
            on_roster = (
                select(col(DutyShift.id))
                .join(OrgUnit, col(OrgUnit.code) == col(DutyShift.unit_code))
                .where(col(DutyShift.person_id) == col(Person.id), col(OrgUnit.path).startswith(path))
            )
            where.append(or_(exists(answers), exists(on_roster)))
        if q.strip():
            text = q.strip()
            match = [col(Person.name).ilike(_like(text), escape="\\"), col(Person.id) == text]
            digits = "".join(ch for ch in text if ch.isdigit())
            if sees_whole_numbers(who) and len(digits) >= 4:  # an auditor cannot find a number they may not read
                match.append(col(Person.phone).like(_like(digits), escape="\\"))
            where.append(or_(*match))
        if active is not None:
            where.append(col(Person.active) == active)
        total = int(await s.scalar(select(func.count()).select_from(Person).where(*where)) or 0)
        people = list(
            (
                await s.execute(
                    select(Person).where(*where).order_by(col(Person.name), col(Person.id)).limit(limit).offset(offset)
                )
            ).scalars()
        )
        duties: dict[str, list[PersonDuty]] = defaultdict(list)
        if people:
            rows = await s.execute(
                select(Responsibility, col(OrgUnit.name))
                .join(OrgUnit, col(OrgUnit.code) == col(Responsibility.unit_code))
                .where(
                    col(Responsibility.person_id).in_([p.id for p in people]),
                    under(who.unit_path, col(OrgUnit.path)),
                )
                .order_by(col(OrgUnit.path), col(Responsibility.rank))
            )
            for r, unit_name in rows:
                duties[r.person_id].append(
                    PersonDuty(
                        unit_code=r.unit_code,
                        unit_name=unit_name,
                        role=r.role,
                        role_label=role_label(r.role),
                        rank=r.rank,
                    )
                )
        out = [
            PersonOut(
                id=p.id,
                name=p.name,
                phone=phone_for(who, p.phone),
                wecom_userid=p.wecom_userid,
                email=p.email if sees_whole_numbers(who) else None,
                active=p.active,
                duties=duties.get(p.id, []),
            )
            for p in people
        ]
        return out, total
