"""One alert in detail, as the viewer may see it: each recipient's deliveries and answers.

Recipients come a page at a time (silent first), so a county-wide alert with thousands of them costs
the same few queries as a village's. The audit report (report.py) covers the whole alert for the
auditor; this view serves the duty officer chasing the silent now, inside their own subtree. The
alert's devices and manual tasks are read in alert_equipment.py.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.answer.acks import CALLED_NO_ANSWER
from alerting.model.access import Principal, in_scope, visible_alert
from alerting.model.actor import Actor
from alerting.model.clock import utc
from alerting.model.domain import Purpose, TargetKind, TargetState
from alerting.model.plan import PlanSet
from alerting.model.privacy import mask_phone, number_to_dial
from alerting.store.db import Database
from alerting.store.tables import Acknowledgement, Alert, AuditEvent, Delivery, Device, OrgUnit, Person, Target
from alerting.views.actors import actor_names
from alerting.views.board import TownshipProgress, township_progress
from alerting.views.equipment import DeviceLine, TaskLine, device_lines, task_lines
from alerting.views.labels import (
    CALL_OUTCOME_LABEL,
    DELIVERY_STATE_LABEL,
    PURPOSE_LABEL,
    TARGET_STATE_LABEL,
    channel_label,
    feedback_text,
    label,
    role_label,
)
from alerting.views.units import places


class Show(StrEnum):
    """Which recipients the list shows."""

    ALL = ""
    SILENT = "silent"
    ESCALATED = "escalated"
    ANSWERED = "answered"
    ANSWERED_FOR = "answered_for"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return {
            "": "全部",
            "silent": "未应答",
            "escalated": "已升级",
            "answered": "本人应答",
            "answered_for": "代为确认",
            "failed": "设备未确认",
            "cancelled": "预警结束时未应答",
        }[self.value]

    def clause(self) -> ColumnElement[bool] | None:
        match self:
            case Show.ALL:
                return None
            case Show.SILENT:  # never answered: still open, or open when the alert was lifted or replaced
                return col(Target.state).in_([TargetState.OPEN.value, TargetState.CANCELLED.value])
            case Show.ESCALATED:
                return col(Target.step) > 0
            case _:
                return col(Target.state) == self.value


class DeliveryEvent(BaseModel):
    channel_label: str
    purpose_label: str
    step: int
    contact_name: str
    to_target: bool
    state: str
    state_label: str
    attempts: int
    provider: str | None
    provider_id: str | None
    provider_status: str | None
    error: str | None
    sandbox: bool
    called_again: bool
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


class AnswerEvent(BaseModel):
    channel_label: str
    at: datetime
    by_name: str
    counted: bool
    on_behalf_reason: str | None
    feedback_text: str


class CallEvent(BaseModel):
    """A phone call the duty officer logged that nobody took (one that got through is an answer on behalf)."""

    at: datetime
    by_name: str
    outcome_label: str
    note: str


class RecipientTimeline(BaseModel):
    target_id: str
    kind: str
    name: str
    role_label: str
    unit_name: str
    place: str  # township › village › grid
    phone: str
    dial: str | None  # the whole number, for a viewer who may call it
    state: str
    state_label: str
    step: int
    step_who: str
    feedback_text: str
    deliveries: list[DeliveryEvent]
    answers: list[AnswerEvent]
    calls: list[CallEvent]


@dataclass
class AlertView:
    alert: Alert
    supersedes: list[Alert]  # older first
    superseded_by: Alert | None
    townships: list[TownshipProgress]
    recipients: list[RecipientTimeline]
    total: int  # recipients matching the filter
    counts: dict[str, int]  # per filter, inside the viewer's scope
    devices: list[DeviceLine] = field(default_factory=list)
    tasks: list[TaskLine] = field(default_factory=list)
    unit_names: list[str] = field(default_factory=list)  # the alert's target units, by name
    issuer_name: str = ""  # who issued it, by name (views.actors)


async def read_alert(
    db: Database,
    principal: Principal,
    alert_id: int,
    *,
    show: Show = Show.ALL,
    search: str = "",
    limit: int = 50,
    offset: int = 0,
) -> AlertView | None:
    """None when the alert does not exist or does not reach the viewer's subtree."""
    async with db.session() as s:
        alert = await visible_alert(s, principal, alert_id)
        if alert is None:
            return None
        older, newer = await _chain(s, alert)
        townships = (await township_progress(s, principal, [alert_id])).get(alert_id, [])
        scope = [col(Target.alert_id) == alert_id, in_scope(principal, col(Target.unit_code))]
        counts = await _counts(s, scope)
        where = list(scope)
        if (clause := show.clause()) is not None:
            where.append(clause)
        if search.strip():
            typed = search.strip()
            where.append(
                or_(
                    col(Person.name).icontains(typed, autoescape=True),
                    col(Device.name).icontains(typed, autoescape=True),
                    col(OrgUnit.name).icontains(typed, autoescape=True),
                    col(Target.person_id) == typed,
                )
            )
        base = (
            select(Target, col(Person.name), col(Person.phone), col(Device.name), col(OrgUnit.name))
            .outerjoin(Person, col(Person.id) == col(Target.person_id))
            .outerjoin(Device, col(Device.id) == col(Target.device_id))
            .join(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
            .where(*where)
        )
        total = await s.scalar(select(func.count()).select_from(base.subquery()))
        silent_first = case((col(Target.state).in_([TargetState.OPEN.value, TargetState.CANCELLED.value]), 0), else_=1)
        rows = (
            await s.execute(
                base.order_by(
                    silent_first, col(Target.step).desc(), col(Target.priority), col(OrgUnit.path), col(Target.id)
                )
                .limit(limit)
                .offset(offset)
            )
        ).all()
        recipients = await _timelines(s, principal, alert, rows)
        issuer = (await actor_names(s, [alert.created_by]))[alert.created_by]
        devices = await device_lines(s, scope)
        tasks = await task_lines(s, scope)
        names = dict(
            (
                await s.execute(
                    select(col(OrgUnit.code), col(OrgUnit.name)).where(col(OrgUnit.code).in_(alert.target_units))
                )
            ).all()
        )
    units = [f"{names.get(c, c)}（{c}）" for c in alert.target_units]
    return AlertView(alert, older, newer, townships, recipients, int(total or 0), counts, devices, tasks, units, issuer)


async def _chain(s: AsyncSession, alert: Alert) -> tuple[list[Alert], Alert | None]:
    older: list[Alert] = []
    at = alert
    while at.supersedes_id is not None and len(older) < 20:
        prev = await s.get(Alert, at.supersedes_id)
        if prev is None:
            break
        older.insert(0, prev)
        at = prev
    newer = (await s.execute(select(Alert).where(col(Alert.supersedes_id) == alert.id).limit(1))).scalar_one_or_none()
    return older, newer


async def _counts(s: AsyncSession, scope: list[ColumnElement[bool]]) -> dict[str, int]:
    rows = await s.execute(
        select(col(Target.state), (col(Target.step) > 0).label("up"), func.count().label("n"))
        .where(*scope)
        .group_by(col(Target.state), "up")
    )
    counts: Counter[str] = Counter()
    for state, up, n in rows:
        counts[""] += n
        counts[Show.SILENT.value if state == TargetState.OPEN.value else state] += n
        if state == TargetState.CANCELLED.value:  # silent at the end is silent, and also shown on its own
            counts[Show.SILENT.value] += n
        if up:
            counts[Show.ESCALATED.value] += n
    return {s.value: counts[s.value] for s in Show}


async def _names(s: AsyncSession, person_ids: set[str]) -> dict[str, str]:
    ids = [p for p in person_ids if p]
    if not ids:
        return {}
    return dict((await s.execute(select(col(Person.id), col(Person.name)).where(col(Person.id).in_(ids)))).all())


def _step_who(plans: PlanSet | None, path: str, kind: str, step: int) -> str:
    if plans is None:
        return ""
    plan = plans.for_path(path)
    steps = plan.device_steps if kind == TargetKind.DEVICE.value else plan.person_steps
    if not 0 <= step < len(steps):
        return ""
    who = steps[step].who
    return "设备本身" if kind == TargetKind.DEVICE.value and who.value == "target" else who.label


async def _calls(s: AsyncSession, alert_id: int, target_ids: list[str]) -> dict[str, list[CallEvent]]:
    """The calls not taken, from the audit (their only record), per target."""
    events = list(
        (
            await s.execute(
                select(AuditEvent)
                .where(
                    col(AuditEvent.alert_id) == alert_id,
                    col(AuditEvent.kind) == CALLED_NO_ANSWER,
                    col(AuditEvent.subject).in_(target_ids),
                )
                .order_by(col(AuditEvent.seq))
            )
        ).scalars()
    )
    names = await actor_names(s, [e.actor for e in events])
    out: dict[str, list[CallEvent]] = defaultdict(list)
    for e in events:
        out[e.subject or ""].append(
            CallEvent(
                at=utc(e.at),
                by_name=names.get(e.actor, e.actor),
                outcome_label=CALL_OUTCOME_LABEL["no_answer"],
                note=str(e.data.get("note") or ""),
            )
        )
    return out


async def _timelines(s: AsyncSession, who: Principal, alert: Alert, rows: Any) -> list[RecipientTimeline]:
    ids = [t.id for t, *_ in rows]
    if not ids:
        return []
    deliveries = list(
        (
            await s.execute(
                select(Delivery)
                .where(col(Delivery.alert_id) == alert.id, col(Delivery.target_id).in_(ids))
                .order_by(col(Delivery.created_at), col(Delivery.step), col(Delivery.channel))
            )
        ).scalars()
    )
    acks = list(
        (
            await s.execute(
                select(Acknowledgement)
                .where(col(Acknowledgement.alert_id) == alert.id, col(Acknowledgement.target_id).in_(ids))
                .order_by(col(Acknowledgement.at))
            )
        ).scalars()
    )
    names = await _names(s, {d.person_id for d in deliveries if d.person_id} | {a.person_id or "" for a in acks})
    devices = dict(
        (
            await s.execute(
                select(col(Device.id), col(Device.name)).where(
                    col(Device.id).in_({d.device_id for d in deliveries if d.device_id})
                )
            )
        ).all()
    )
    paths = dict(
        (
            await s.execute(
                select(col(OrgUnit.code), col(OrgUnit.path)).where(
                    col(OrgUnit.code).in_({t.unit_code for t, *_ in rows})
                )
            )
        ).all()
    )
    try:
        plans: PlanSet | None = PlanSet.stored(alert.plan)
    except ValueError:
        plans = None
    by_target: dict[str, list[DeliveryEvent]] = defaultdict(list)
    targets = {t.id: t for t, *_ in rows}
    for d in deliveries:
        t = targets[d.target_id]
        by_target[d.target_id].append(
            DeliveryEvent(
                channel_label=channel_label(d.channel),
                purpose_label=label(PURPOSE_LABEL, d.purpose) if d.purpose != Purpose.HELP.value else "求助转告",
                step=d.step,
                contact_name=names.get(d.person_id or "", "") or devices.get(d.device_id or "", "") or "",
                to_target=(d.person_id or d.device_id) == (t.person_id or t.device_id),
                state=d.state,
                state_label=label(DELIVERY_STATE_LABEL, d.state),
                attempts=d.attempts,
                provider=d.provider,
                provider_id=d.provider_id,
                provider_status=str((d.detail or {}).get("status") or "") or None,
                error=d.error,
                sandbox=d.sandbox,
                called_again=bool((d.detail or {}).get("called_again")),
                created_at=utc(d.created_at),
                sent_at=utc(d.sent_at) if d.sent_at else None,
                delivered_at=utc(d.delivered_at) if d.delivered_at else None,
            )
        )
    answers: dict[str, list[AnswerEvent]] = defaultdict(list)
    for a in acks:
        t = targets[a.target_id]
        if a.person_id:
            by = names.get(a.person_id, a.person_id)
        elif a.on_behalf_reason:
            # the target names who closed it; a later, uncounted answer for them was someone else's (see the audit)
            counted_for = a.counted and t.answered_by and t.state == TargetState.ANSWERED_FOR.value
            officer = Actor.parse(t.answered_by) if counted_for and t.answered_by else None
            by = (officer.username or officer.text) if officer else "值班员"
        else:
            by = "设备" if t.kind == TargetKind.DEVICE.value else ""
        answers[a.target_id].append(
            AnswerEvent(
                channel_label=channel_label(a.channel),
                at=utc(a.at),
                by_name=by,
                counted=a.counted,
                on_behalf_reason=a.on_behalf_reason,
                feedback_text=feedback_text(a.feedback),
            )
        )
    where_is = await places(s, paths.values())
    calls = await _calls(s, alert.id or 0, ids)
    return [
        RecipientTimeline(
            target_id=t.id,
            kind=t.kind,
            name=person or device or t.person_id or t.device_id or "",
            role_label=role_label(t.role),
            unit_name=unit,
            place=where_is.get(paths.get(t.unit_code, ""), unit),
            phone=mask_phone(phone),
            dial=number_to_dial(who, phone),
            state=t.state,
            state_label=label(TARGET_STATE_LABEL, t.state),
            step=t.step,
            step_who=_step_who(plans, paths.get(t.unit_code, ""), t.kind, t.step),
            feedback_text=feedback_text(t.feedback),
            deliveries=by_target.get(t.id, []),
            answers=answers.get(t.id, []),
            calls=calls.get(t.id, []),
        )
        for t, person, phone, device, unit in rows
    ]
