"""From target units to targets, and from a plan step to delivery rows. Pure decisions plus set-based reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.domain import ChannelKind, DeliveryState, DeviceKind, Level, Purpose, Role, TargetKind, TargetState
from alerting.model.ids import new_id
from alerting.model.plan import PlanSet, Step
from alerting.store.tables import Device, OrgUnit, Person, Responsibility

# Lower goes first: sirens and broadcast before people, people before bulk lists.
PRIORITY_DEVICE = 0  # a target's order on the board and in lists: devices, then people
PRIORITY_PERSON = 1

_LEVEL_ORDER = {Level.RED: 0, Level.ORANGE: 1, Level.YELLOW: 2, Level.BLUE: 3}


def queue_priority(level: Level, purpose: Purpose, step: int, *, device: bool) -> int:
    """A delivery's place in its channel's queue, across alerts (lower goes first).

    First waves and calls for help come first, then escalations and calls again, then lift notices; within each,
    red before orange before yellow before blue, and sirens and broadcast zones before people. So a new red
    alert's first wave overtakes an older alert's redials and lift notices the moment it is queued.
    """
    if purpose is Purpose.HELP or (step == 0 and purpose in (Purpose.WARN, Purpose.TASK)):
        band = 0
    elif purpose is Purpose.LIFT:
        band = 2
    else:
        band = 1
    return band * 10 + _LEVEL_ORDER[level] * 2 + (0 if device else 1)


DEVICE_CHANNEL = {
    DeviceKind.SIREN: ChannelKind.DEVICE,
    DeviceKind.SATELLITE: ChannelKind.DEVICE,
    DeviceKind.BROADCAST_ZONE: ChannelKind.BROADCAST,
}


@dataclass(frozen=True)
class Contact:
    person_id: str
    phone: str | None
    wecom_userid: str | None
    email: str | None

    def can_use(self, channel: ChannelKind) -> bool:
        if channel in (ChannelKind.SMS, ChannelKind.VOICE):
            return bool(self.phone)
        if channel is ChannelKind.WECOM:
            return bool(self.wecom_userid)
        if channel is ChannelKind.EMAIL:
            return bool(self.email)
        # a manual task reaches the person through whatever channel its adapter chooses
        return channel is ChannelKind.MANUAL and bool(self.phone or self.wecom_userid or self.email)


def channels_for(contact: Contact, step: Step) -> list[ChannelKind]:
    chosen = [c for c in step.channels if contact.can_use(c)]
    return chosen or [c for c in step.fallback if contact.can_use(c)]


async def load_contacts(session: AsyncSession, person_ids: Iterable[str]) -> dict[str, Contact]:
    ids = list(set(person_ids))
    found: dict[str, Contact] = {}
    for i in range(0, len(ids), 500):
        rows = await session.execute(
            select(col(Person.id), col(Person.phone), col(Person.wecom_userid), col(Person.email)).where(
                col(Person.id).in_(ids[i : i + 500]),
                col(Person.active),
            )
        )
        found.update({r.id: Contact(r.id, r.phone, r.wecom_userid, r.email) for r in rows})
    return found


class UnknownUnits(ValueError):
    def __init__(self, codes: Sequence[str]) -> None:
        super().__init__("unknown unit code(s): " + ", ".join(codes))
        self.codes = list(codes)


@dataclass(frozen=True)
class PlannedTarget:
    id: str
    kind: TargetKind
    unit_code: str
    role: str
    priority: int
    person_id: str | None = None
    device_id: str | None = None
    device_kind: DeviceKind | None = None
    path: str = ""  # the unit's path, which picks the plan that applies to it


async def subtree_filter(session: AsyncSession, unit_codes: Sequence[str]) -> ColumnElement[bool]:
    """A WHERE clause on OrgUnit matching every unit under (and including) the given ones."""
    query = select(col(OrgUnit.code), col(OrgUnit.path)).where(col(OrgUnit.code).in_(unit_codes))
    paths: dict[str, str] = dict((await session.execute(query)).all())
    missing = [c for c in unit_codes if c not in paths]
    if missing:
        raise UnknownUnits(missing)
    return or_(*(col(OrgUnit.path).startswith(p) for p in paths.values()))


@dataclass(frozen=True)
class Page:
    """Where the next page of grid workers starts: after this responsibility row (its primary key, so a page
    is an index range however large the county, with nothing to sort)."""

    after: int


async def resolve_targets(session: AsyncSession, unit_codes: Sequence[str], plans: PlanSet) -> list[PlannedTarget]:
    """Everyone and everything an alert on these units reaches: the critical targets, then every grid worker."""
    targets = await resolve_critical(session, unit_codes, plans)
    seen = {t.person_id for t in targets if t.person_id}
    page: Page | None = None
    while True:
        more, page = await resolve_grid_workers(session, unit_codes, after=page, seen=seen)
        targets += more
        if page is None:
            return targets


async def resolve_critical(session: AsyncSession, unit_codes: Sequence[str], plans: PlanSet) -> list[PlannedTarget]:
    """What must hear first: sirens and broadcast zones, and every responsible person above the grid (village
    heads, township and county duty). A handful per village, where grid workers are the many."""
    in_subtree = await subtree_filter(session, unit_codes)
    people = await _responsible(session, in_subtree, col(Responsibility.role) != Role.GRID_WORKER.value)
    targets = _people_targets(people, set())
    return targets + await _device_targets(session, in_subtree, plans)


async def resolve_grid_workers(
    session: AsyncSession, unit_codes: Sequence[str], *, after: Page | None, seen: set[str], limit: int = 2000
) -> tuple[list[PlannedTarget], Page | None]:
    """One page of grid workers (keyset on the responsibility's key, so a page costs the same at the end as at
    the start), and where the next one starts (None when this was the last). `seen` holds who is a target already.
    Grid workers are all of one rank, so the order among them does not matter; those above the grid come first."""
    in_subtree = await subtree_filter(session, unit_codes)
    where = and_(
        col(Responsibility.role) == Role.GRID_WORKER.value, col(Responsibility.id) > (after.after if after else 0)
    )
    rows = await _responsible(session, in_subtree, where, limit=limit, by_key=True)
    nxt = Page(rows[-1].id) if len(rows) == limit else None
    return _people_targets(rows, seen), nxt


async def _responsible(
    session: AsyncSession,
    in_subtree: ColumnElement[bool],
    where: ColumnElement[bool],
    limit: int | None = None,
    *,
    by_key: bool = False,
) -> list[Any]:
    query = (
        select(
            col(Responsibility.id),
            col(Responsibility.person_id),
            col(Responsibility.unit_code),
            col(Responsibility.role),
            col(OrgUnit.path),
        )
        .join(OrgUnit, col(OrgUnit.code) == Responsibility.unit_code)
        .join(Person, col(Person.id) == Responsibility.person_id)
        .where(in_subtree, where, col(Responsibility.rank) == 0, col(Person.active))
        .order_by(*((col(Responsibility.id),) if by_key else (col(OrgUnit.path), col(Responsibility.person_id))))
    )
    if limit is not None:
        query = query.limit(limit)
    return list((await session.execute(query)).all())


def _people_targets(rows: Iterable[Any], seen: set[str]) -> list[PlannedTarget]:
    """A person answering for two units answers once: for the first met, and those above the grid come first."""
    targets: list[PlannedTarget] = []
    for r in rows:
        if r.person_id not in seen:
            seen.add(r.person_id)
            targets.append(
                PlannedTarget(
                    new_id(),
                    TargetKind.PERSON,
                    r.unit_code,
                    r.role,
                    PRIORITY_PERSON,
                    person_id=r.person_id,
                    path=r.path,
                )
            )
    return targets


async def _device_targets(
    session: AsyncSession, in_subtree: ColumnElement[bool], plans: PlanSet
) -> list[PlannedTarget]:
    def first_wave_reaches(kind: DeviceKind, path: str) -> bool:
        plan = plans.for_path(path)
        return bool(plan.device_steps) and DEVICE_CHANNEL[kind] in plan.device_steps[0].channels

    device_kinds = [
        k
        for k, ch in DEVICE_CHANNEL.items()
        if any(p.device_steps and ch in p.device_steps[0].channels for p in plans.all())
    ]
    targets: list[PlannedTarget] = []
    if device_kinds:
        devices = await session.execute(
            select(col(Device.id), col(Device.unit_code), col(Device.kind), col(OrgUnit.path))
            .join(OrgUnit, col(OrgUnit.code) == Device.unit_code)
            .where(in_subtree, col(Device.kind).in_(device_kinds))
            .order_by(col(Device.id))
        )
        for d in devices:
            if not first_wave_reaches(DeviceKind(d.kind), d.path):
                continue
            targets.append(
                PlannedTarget(
                    new_id(),
                    TargetKind.DEVICE,
                    d.unit_code,
                    d.kind,
                    PRIORITY_DEVICE,
                    device_id=d.id,
                    device_kind=DeviceKind(d.kind),
                    path=d.path,
                )
            )
    return targets


def target_row(alert_id: int, t: PlannedTarget) -> dict[str, Any]:
    return {
        "id": t.id,
        "alert_id": alert_id,
        "kind": t.kind.value,
        "person_id": t.person_id,
        "device_id": t.device_id,
        "unit_code": t.unit_code,
        "role": t.role,
        "priority": t.priority,
        "state": TargetState.OPEN.value,
        "step": 0,
        # every row names every column: an update writes carried answers into these beside rows without one,
        # and one insert of rows with different keys is refused
        "answered_at": None,
        "answered_by": None,
        "answer_channel": None,
        "feedback": None,
    }


def delivery_row(
    *,
    alert_id: int,
    target_id: str,
    channel: ChannelKind,
    purpose: Purpose,
    step: int,
    level: Level,
    now: datetime,
    person_id: str | None = None,
    device_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "alert_id": alert_id,
        "target_id": target_id,
        "person_id": person_id,
        "device_id": device_id,
        "channel": channel.value,
        "purpose": purpose.value,
        "step": step,
        "priority": queue_priority(level, purpose, step, device=device_id is not None),
        "state": DeliveryState.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "sandbox": False,
        "detail": detail,
    }


def person_deliveries(
    alert_id: int, target_id: str, step_no: int, step: Step, contacts: Sequence[Contact], now: datetime, level: Level
) -> list[dict[str, Any]]:
    purpose = Purpose.TASK if step.task else Purpose.WARN
    detail = {"task": step.task.value} if step.task else None
    return [
        delivery_row(
            alert_id=alert_id,
            target_id=target_id,
            channel=ch,
            purpose=purpose,
            step=step_no,
            level=level,
            now=now,
            person_id=c.person_id,
            detail=detail,
        )
        for c in contacts
        for ch in channels_for(c, step)
    ]


def device_deliveries(alert_id: int, t: PlannedTarget, step: Step, now: datetime, level: Level) -> list[dict[str, Any]]:
    assert t.device_kind is not None
    assert t.device_id is not None
    channel = DEVICE_CHANNEL[t.device_kind]
    if channel not in step.channels:
        return []
    return [
        delivery_row(
            alert_id=alert_id,
            target_id=t.id,
            channel=channel,
            purpose=Purpose.WARN,
            step=0,
            level=level,
            now=now,
            device_id=t.device_id,
        )
    ]
