"""A dry run of issuing: who and what an alert would reach, over which channels, and how it would escalate.

It takes the same steps as AlertService._issue (planner, resolve_targets, load_contacts, the first-wave
delivery rules) so the numbers match what issuing creates, and writes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.issue.alerts import AlertRequest
from alerting.issue.planning import device_deliveries, load_contacts, person_deliveries, resolve_targets
from alerting.model.access import township_code
from alerting.model.clock import Clock
from alerting.model.domain import ChannelKind, Purpose, TargetKind
from alerting.model.plan import Plan, Planner, PlanSet, Step
from alerting.store.db import Database
from alerting.store.tables import OrgUnit, Person
from alerting.views.labels import ROLE_LABEL

# The preview names this many people without a usable contact; the count says how many there are in all.
UNREACHABLE_SHOWN = 100
# Enough steps for the officer to see where silence leads; the plan itself has them all.
PLAN_STEPS_SHOWN = 4
COUNTY_LEVEL = "县级"


class ChannelCount(BaseModel):
    channel: str
    label: str
    deliveries: int


class TownshipCount(BaseModel):
    code: str | None = Field(description="the township; None for units at county level")
    name: str
    people: int
    devices: int
    deliveries: int
    tasks: int
    unreachable: int


class Unreachable(BaseModel):
    person_id: str
    name: str
    unit_code: str
    unit_name: str
    role: str
    role_label: str


class PlanStepOut(BaseModel):
    applies_to: str = Field(description="人员 or 设备")
    step: int = Field(description="0 is the first wave")
    starts_after_s: int = Field(description="seconds after issuing at which this step runs for whoever is silent")
    who: str
    channels: list[str]
    wait_s: int
    task: str | None = None


class PlanNote(BaseModel):
    unit_code: str
    unit_name: str
    first_wave: list[str]
    window_s: int


class Preview(BaseModel):
    level: str
    hazard: str
    exercise: bool
    units: list[str]
    unit_names: list[str]
    people: int = Field(description="responsible people who must answer")
    devices: int = Field(description="sirens, satellite terminals and broadcast zones in the first wave")
    tasks: int = Field(description="manual tasks (鸣锣吹哨, 敲门入户) in the first wave")
    deliveries: int = Field(description="first-wave deliveries issuing would queue")
    by_channel: list[ChannelCount]
    unreachable_total: int = Field(description="people no first-wave channel can reach")
    unreachable: list[Unreachable] = Field(description=f"the first {UNREACHABLE_SHOWN} of them")
    townships: list[TownshipCount]
    window_s: int = Field(description="the answer window of the first wave")
    plan: list[PlanStepOut] = Field(description=f"the first {PLAN_STEPS_SHOWN} steps of the county plan")
    plan_steps_more: int = Field(description="steps of the plan not shown")
    own_plans: list[PlanNote] = Field(description="units in the target area that follow their own plan")


@dataclass
class _Tally:
    people: int = 0
    devices: int = 0
    deliveries: int = 0
    tasks: int = 0
    unreachable: int = 0


def _who(step: Step, device: bool) -> str:
    return "设备本身" if device and step.who.value == "target" else step.who.label


def plan_steps(plan: Plan, shown: int = PLAN_STEPS_SHOWN) -> tuple[list[PlanStepOut], int]:
    """The first steps for people, then those for devices, with when each would start; and how many are left out."""
    rows: list[PlanStepOut] = []
    more = 0
    for applies_to, steps, device in (("人员", plan.person_steps, False), ("设备", plan.device_steps, True)):
        start = 0
        for i, s in enumerate(steps):
            if i >= shown:
                more += 1
                continue
            rows.append(
                PlanStepOut(
                    applies_to=applies_to,
                    step=i,
                    starts_after_s=start,
                    who=_who(s, device),
                    channels=[c.label for c in s.channels] + [f"{c.label}（备选）" for c in s.fallback],
                    wait_s=s.wait_s,
                    task=s.task.value if s.task else None,
                )
            )
            start += s.wait_s
    return rows, more


def _override_code(plans: PlanSet, path: str) -> str | None:
    """The unit whose own plan a target on this path follows (the same choice as PlanSet.for_path)."""
    for code in reversed([c for c in path.split("/") if c]):
        if code in plans.overrides:
            return code
    return None


async def preview(db: Database, clock: Clock, planner: Planner, req: AlertRequest) -> Preview:
    """What issuing `req` now would reach. Raises UnknownUnits like issuing does."""
    now = clock.now()
    plans = planner.plan_for(req.level, req.hazard, req.units)
    by_channel: Counter[str] = Counter()
    tally: dict[str | None, _Tally] = {}
    missing: list[tuple[str, str, str]] = []  # person, unit, role
    own: set[str] = set()
    async with db.session() as s:
        targets = await resolve_targets(s, req.units, plans)
        contacts = await load_contacts(s, (t.person_id for t in targets if t.person_id))
        for t in targets:
            plan = plans.for_path(t.path)
            if plans.overrides and (code := _override_code(plans, t.path)):
                own.add(code)
            place = tally.setdefault(township_code(t.path), _Tally())
            if t.kind is TargetKind.PERSON:
                assert t.person_id is not None
                contact = contacts.get(t.person_id)
                rows = person_deliveries(
                    0, t.id, 0, plan.person_steps[0], [contact] if contact else [], now, plan.level
                )
                place.people += 1
                if not rows:
                    place.unreachable += 1
                    missing.append((t.person_id, t.unit_code, t.role))
            else:
                rows = device_deliveries(0, t, plan.device_steps[0], now, plan.level)
                place.devices += 1
            by_channel.update(r["channel"] for r in rows)
            place.deliveries += len(rows)
            place.tasks += sum(1 for r in rows if r["purpose"] == Purpose.TASK.value)
        names = await _names(s, req.units, tally, missing, own)
    return _assemble(req, plans, tally, names, missing, by_channel, sorted(own))


@dataclass(frozen=True)
class _Names:
    units: dict[str, str]
    people: dict[str, str]


async def _names(
    s: AsyncSession,
    units: list[str],
    tally: dict[str | None, _Tally],
    missing: list[tuple[str, str, str]],
    own: set[str],
) -> _Names:
    shown = missing[:UNREACHABLE_SHOWN]
    codes = {*units, *(c for c in tally if c), *(u for _p, u, _r in shown), *own}
    unit_rows = await s.execute(select(col(OrgUnit.code), col(OrgUnit.name)).where(col(OrgUnit.code).in_(codes)))
    people: dict[str, str] = {}
    if shown:
        rows = await s.execute(
            select(col(Person.id), col(Person.name)).where(col(Person.id).in_([p for p, _u, _r in shown]))
        )
        people = {pid: name for pid, name in rows}
    return _Names({code: name for code, name in unit_rows}, people)


def _assemble(
    req: AlertRequest,
    plans: PlanSet,
    tally: dict[str | None, _Tally],
    names: _Names,
    missing: list[tuple[str, str, str]],
    by_channel: Counter[str],
    own: list[str],
) -> Preview:
    order = {k.value: i for i, k in enumerate(ChannelKind)}
    steps, more = plan_steps(plans.default)
    return Preview(
        level=req.level.value,
        hazard=req.hazard,
        exercise=req.exercise,
        units=req.units,
        unit_names=[names.units.get(c, c) for c in req.units],
        people=sum(t.people for t in tally.values()),
        devices=sum(t.devices for t in tally.values()),
        tasks=sum(t.tasks for t in tally.values()),
        deliveries=sum(t.deliveries for t in tally.values()),
        by_channel=[
            ChannelCount(channel=ch, label=ChannelKind(ch).label, deliveries=n)
            for ch, n in sorted(by_channel.items(), key=lambda kv: order.get(kv[0], 99))
        ],
        unreachable_total=len(missing),
        unreachable=[
            Unreachable(
                person_id=p,
                name=names.people.get(p, p),
                unit_code=u,
                unit_name=names.units.get(u, u),
                role=r,
                role_label=ROLE_LABEL.get(r, r),
            )
            for p, u, r in missing[:UNREACHABLE_SHOWN]
        ],
        townships=[
            TownshipCount(
                code=code,
                name=names.units.get(code, code) if code else COUNTY_LEVEL,
                people=t.people,
                devices=t.devices,
                deliveries=t.deliveries,
                tasks=t.tasks,
                unreachable=t.unreachable,
            )
            for code, t in sorted(tally.items(), key=lambda kv: kv[0] or "")
        ],
        window_s=plans.default.window_s,
        plan=steps,
        plan_steps_more=more,
        own_plans=[
            PlanNote(
                unit_code=code,
                unit_name=names.units.get(code, code),
                first_wave=[c.label for c in plans.overrides[code].first_wave],
                window_s=plans.overrides[code].window_s,
            )
            for code in own
        ],
    )
