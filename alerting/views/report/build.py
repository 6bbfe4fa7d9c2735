"""The per-alert audit report: who was called, over what, when it arrived, who answered, who is still silent.

Built from a handful of set-based reads inside one transaction, so every number in it comes from
the same snapshot of the store and 100,000 targets cost the same few queries as ten.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from alerting.audit import chain as audit
from alerting.model.access import township_code
from alerting.model.clock import utc
from alerting.model.domain import (
    Purpose,
    TargetKind,
    TargetState,
)
from alerting.model.plan import Plan, PlanSet, Who
from alerting.model.privacy import mask_phone
from alerting.store.db import Database
from alerting.store.tables import (
    Acknowledgement,
    Alert,
    AuditEvent,
    Delivery,
    Device,
    OrgUnit,
    Person,
    Target,
)
from alerting.views.device_state import condition_label, condition_of
from alerting.views.labels import (
    ALERT_STATUS_LABEL,
    COUNTY_LEVEL,
    DELIVERY_STATE_LABEL,
    LEVEL_LABEL,
    PURPOSE_LABEL,
    TARGET_KIND_LABEL,
    TARGET_STATE_LABEL,
    channel_label,
    label,
    role_label,
)

DEVICE_ANSWER = "device"


def feedback_text(feedback: Mapping[str, Any] | None) -> str:
    """What was done, in the words a duty officer writes it: 转移 41 人，敲门 23 户，需要支援。"""
    if not feedback:
        return ""
    parts: list[str] = []
    rest = dict(feedback)
    if (moved := rest.pop("moved", None)) is not None:
        parts.append(f"转移 {moved} 人")
    if (households := rest.pop("households", None)) is not None:
        parts.append(f"敲门 {households} 户")
    help_needed = rest.pop("help_needed", None)
    if help_needed is True:
        parts.append("需要支援")
    elif help_needed is False:
        parts.append("无需支援")
    note = rest.pop("note", None)
    parts.extend(f"{k}：{v}" for k, v in sorted(rest.items()))
    if note:
        parts.append(f"备注：{note}")
    return "，".join(parts)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: always a time someone actually answered at."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# never answered, whether the alert is still running (open) or ended on them (cancelled by the lift or update)
SILENT_STATES = frozenset({TargetState.OPEN.value, TargetState.CANCELLED.value})


class Counts(BaseModel):
    targets: int = 0
    persons: int = 0
    devices: int = 0
    answered: int = 0
    answered_for: int = 0
    silent: int = 0  # never answered: still open, or open when the alert was lifted or replaced
    failed: int = 0  # devices that never confirmed: written off and stood in for by people, or refused
    cancelled: int = 0  # of the silent, those the alert ended on (lifted or replaced)
    median_answer_s: float | None = None  # seconds after the alert was created, over answered and answered-for
    p90_answer_s: float | None = None
    # what people reported doing (manual tasks and answer feedback), summed
    households: int = 0
    moved: int = 0
    help_needed: int = 0

    @property
    def closed(self) -> int:
        return self.answered + self.answered_for


class Summary(Counts):
    deliveries_total: int = 0
    # channel -> delivery state -> count
    deliveries: dict[str, dict[str, int]] = Field(default_factory=dict)
    sandbox_deliveries: int = 0
    sandbox_channels: list[str] = Field(default_factory=list)


class TownshipRow(Counts):
    code: str | None = None  # None: units above every township (the county itself)
    name: str = ""


class DeliveryRow(BaseModel):
    channel: str
    channel_label: str
    purpose: str
    purpose_label: str
    step: int
    contact_id: str | None
    contact_name: str
    contact_phone: str  # masked
    to_target: bool  # the target itself, not a backup or someone above
    state: str
    state_label: str
    attempts: int
    sent_at: datetime | None
    delivered_at: datetime | None
    provider: str | None
    provider_id: str | None
    sandbox: bool
    error: str | None
    task: str | None = None  # a manual task's name (鸣锣吹哨, 敲门入户)


class EscalationStep(BaseModel):
    step: int
    who: str  # what the plan says this step reaches: 备岗人员, 上级责任人, 乡镇值班员…
    contacts: list[str]  # "王五（短信、智能外呼）"


class RecipientRow(BaseModel):
    target_id: str
    kind: str
    kind_label: str
    township_code: str | None
    township_name: str
    village_code: str | None
    village_name: str
    unit_code: str
    unit_name: str
    role: str
    role_label: str
    name: str
    phone: str  # masked
    state: str
    state_label: str
    silent: bool
    step: int  # escalation step reached; 0 = first wave only
    escalation: list[EscalationStep]
    deliveries: list[DeliveryRow]
    sandbox: bool  # at least one of its deliveries only went to a sandbox
    first_delivered_at: datetime | None
    answered_at: datetime | None
    answer_s: float | None
    answered_by: str | None
    answered_by_name: str
    answered_for: bool
    answer_channel: str | None
    answer_channel_label: str
    on_behalf_reason: str | None
    answers: int  # every answer received, the counted one and any later ones
    feedback: dict[str, Any] | None
    feedback_text: str
    device_condition: str | None = None  # for a device: what it did (views.device_state), "failed" once stood in for
    device_condition_label: str = ""


class PlanStepRow(BaseModel):
    applies_to: str  # 人员 / 设备
    step: int
    who: str
    channels: list[str]
    wait_s: int
    task: str | None


class AuditStatus(BaseModel):
    ok: bool
    rows: int
    first_bad_seq: int | None
    reason: str
    alert_events: int
    # the alert's latest audit event (its seq): the report holds everything recorded up to it
    position: int = 0


class AlertReport(BaseModel):
    alert_id: int
    level: str
    level_label: str
    hazard: str
    title: str
    text: str
    instructions: str
    status: str
    status_label: str
    exercise: bool
    target_units: list[str]
    target_unit_names: list[str]
    created_at: datetime
    created_by: str
    ended_at: datetime | None
    end_reason: str | None
    plan: list[PlanStepRow]
    generated_at: datetime
    summary: Summary
    townships: list[TownshipRow]
    # villages where people reported what they did (tasks: households reached, people moved, help needed)
    villages: list[TownshipRow] = Field(default_factory=list)
    audit: AuditStatus
    recipients: list[RecipientRow]
    scope: str | None = None  # a unit path when the report covers only that subtree

    @property
    def silent_recipients(self) -> list[RecipientRow]:
        return [r for r in self.recipients if r.silent]

    @property
    def sandbox(self) -> bool:
        return self.summary.sandbox_deliveries > 0


@dataclass
class _Tally:
    """Counts accumulated row by row, turned into a Counts model once at the end."""

    states: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    answer_s: list[float] = field(default_factory=list)
    reported: Counter[str] = field(default_factory=Counter)
    devices_failed: int = 0

    def add(self, row: RecipientRow) -> None:
        self.states[row.state] += 1
        self.kinds[row.kind] += 1
        self.devices_failed += row.device_condition == "failed"
        fb = row.feedback or {}
        for key in ("households", "moved"):
            if isinstance(fb.get(key), int):
                self.reported[key] += fb[key]
        self.reported["help_needed"] += bool(fb.get("help_needed"))
        if row.answer_s is not None and row.state in (TargetState.ANSWERED, TargetState.ANSWERED_FOR):
            self.answer_s.append(row.answer_s)

    def counts(self) -> dict[str, Any]:
        return {
            "targets": sum(self.states.values()),
            "persons": self.kinds[TargetKind.PERSON],
            "devices": self.kinds[TargetKind.DEVICE],
            "answered": self.states[TargetState.ANSWERED],
            "answered_for": self.states[TargetState.ANSWERED_FOR],
            "silent": self.states[TargetState.OPEN] + self.states[TargetState.CANCELLED],
            "failed": self.devices_failed,
            "cancelled": self.states[TargetState.CANCELLED],
            "median_answer_s": statistics.median(self.answer_s) if self.answer_s else None,
            "p90_answer_s": percentile(self.answer_s, 0.9),
            "households": self.reported["households"],
            "moved": self.reported["moved"],
            "help_needed": self.reported["help_needed"],
        }


class _TargetRec(NamedTuple):
    id: str
    kind: str
    person_id: str | None
    device_id: str | None
    unit_code: str
    role: str
    state: str
    step: int
    answered_at: datetime | None
    answered_by: str | None
    answer_channel: str | None
    feedback: dict[str, Any] | None
    unit_name: str  # from OrgUnit
    path: str  # from OrgUnit


class _DeliveryRec(NamedTuple):
    target_id: str
    person_id: str | None
    device_id: str | None
    channel: str
    purpose: str
    step: int
    state: str
    attempts: int
    sent_at: datetime | None
    delivered_at: datetime | None
    provider: str | None
    provider_id: str | None
    sandbox: bool
    error: str | None
    detail: dict[str, Any] | None


class _AckRec(NamedTuple):
    target_id: str
    person_id: str | None
    channel: str
    at: datetime
    on_behalf_reason: str | None


def _columns(table: type[SQLModel], record: type[tuple[Any, ...]], skip: int = 0) -> list[Any]:
    """The table's columns named like the record's fields, in the record's order."""
    fields: tuple[str, ...] = record._fields  # type: ignore[attr-defined]
    return [col(getattr(table, f)) for f in fields[: len(fields) - skip]]


@dataclass(frozen=True)
class _Snapshot:
    """Everything the report needs, read in one transaction."""

    alert: Alert
    targets: list[_TargetRec]
    deliveries: list[_DeliveryRec]  # in the order they went out
    acks: list[_AckRec]
    answers: dict[str, int]
    persons: dict[str, tuple[str, str | None]]  # id -> (name, phone)
    devices: dict[str, str]  # id -> name
    units: dict[str, str]  # code -> name, every unit above grid level
    alert_events: int
    position: int  # read first, so every other read sees at least what was recorded up to it


async def audit_position(session: AsyncSession, alert_id: int) -> int:
    """The highest audit seq carrying this alert's id (0 if none): one probe of ix_audit_event_alert_seq."""
    found = await session.scalar(select(func.max(col(AuditEvent.seq))).where(col(AuditEvent.alert_id) == alert_id))
    return int(found or 0)


async def _read(session: AsyncSession, alert_id: int, within: str | None = None) -> _Snapshot:
    position = await audit_position(session, alert_id)
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise LookupError(f"alert {alert_id} does not exist")
    # A township officer's report holds only the targets in their subtree, and what was sent or answered for them.
    scoped = (
        select(col(Target.id))
        .join(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
        .where(col(Target.alert_id) == alert_id, col(OrgUnit.path).startswith(within))
        if within
        else None
    )
    # SQLAlchemy rows resolve attributes by name on every access; plain named tuples are several times
    # faster to read, which is most of the cost at 100,000 targets.
    targets = [
        _TargetRec._make(r)
        for r in await session.execute(
            select(*_columns(Target, _TargetRec, skip=2), col(OrgUnit.name), col(OrgUnit.path))
            .join(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
            .where(col(Target.alert_id) == alert_id, *([col(OrgUnit.path).startswith(within)] if within else []))
        )
    ]
    deliveries = [
        _DeliveryRec._make(r)
        for r in await session.execute(
            select(*_columns(Delivery, _DeliveryRec))
            .where(
                col(Delivery.alert_id) == alert_id,
                *([col(Delivery.target_id).in_(scoped)] if scoped is not None else []),
            )
            .order_by(col(Delivery.step), col(Delivery.created_at), col(Delivery.channel))
        )
    ]
    acks = [
        _AckRec._make(r)
        for r in await session.execute(
            select(*_columns(Acknowledgement, _AckRec)).where(
                col(Acknowledgement.alert_id) == alert_id,
                col(Acknowledgement.counted),
                *([col(Acknowledgement.target_id).in_(scoped)] if scoped is not None else []),
            )
        )
    ]
    answers = {
        r.target_id: int(r.n)
        for r in await session.execute(
            select(col(Acknowledgement.target_id), func.count().label("n"))
            .where(col(Acknowledgement.alert_id) == alert_id)
            .group_by(col(Acknowledgement.target_id))
        )
    }
    # Everyone the report names: the targets, whoever was contacted for them, whoever answered.
    involved = (
        select(col(Target.person_id))
        .where(col(Target.alert_id) == alert_id)
        .union(
            select(col(Target.answered_by)).where(col(Target.alert_id) == alert_id),
            select(col(Delivery.person_id)).where(col(Delivery.alert_id) == alert_id),
            select(col(Acknowledgement.person_id)).where(col(Acknowledgement.alert_id) == alert_id),
        )
        .subquery()
    )
    persons = {
        r.id: (r.name, r.phone)
        for r in await session.execute(
            select(col(Person.id), col(Person.name), col(Person.phone)).where(col(Person.id).in_(select(involved)))
        )
    }
    devices = {
        r.id: r.name
        for r in await session.execute(
            select(col(Device.id), col(Device.name)).where(
                col(Device.id).in_(select(col(Target.device_id)).where(col(Target.alert_id) == alert_id))
            )
        )
    }
    units = {
        r.code: r.name
        for r in await session.execute(select(col(OrgUnit.code), col(OrgUnit.name)).where(col(OrgUnit.kind) != "grid"))
    }
    for_alert = await session.execute(
        select(func.count()).select_from(AuditEvent).where(col(AuditEvent.alert_id) == alert_id)
    )
    return _Snapshot(
        alert=alert,
        targets=targets,
        deliveries=deliveries,
        acks=acks,
        answers=answers,
        persons=persons,
        devices=devices,
        units=units,
        alert_events=for_alert.scalar_one(),
        position=position,
    )


def _who_label(who: Who, device: bool) -> str:
    return "设备本身" if device and who is Who.TARGET else who.label


def _plan_rows(plan: Mapping[str, Any]) -> tuple[list[PlanStepRow], Plan | None]:
    try:
        parsed = PlanSet.stored(dict(plan)).default
    except ValidationError:
        # An alert whose stored plan no longer parses still deserves a report; it just lacks the plan table.
        return [], None
    rows = [
        PlanStepRow(
            applies_to=applies_to,
            step=i,
            who=_who_label(s.who, applies_to == "设备"),
            channels=[c.label for c in s.channels],
            wait_s=s.wait_s,
            task=s.task.value if s.task else None,
        )
        for applies_to, steps in (("人员", parsed.person_steps), ("设备", parsed.device_steps))
        for i, s in enumerate(steps)
    ]
    return rows, parsed


def _step_who(plan: Plan | None, kind: str, step: int) -> str:
    if plan is None:
        return ""
    steps = plan.device_steps if kind == TargetKind.DEVICE else plan.person_steps
    return _who_label(steps[step].who, kind == TargetKind.DEVICE) if 0 <= step < len(steps) else ""


def _escalation(plan: Plan | None, kind: str, reached: int, deliveries: Iterable[DeliveryRow]) -> list[EscalationStep]:
    by_step: dict[int, dict[str, list[str]]] = defaultdict(dict)
    for d in deliveries:
        if d.step > 0:
            by_step[d.step].setdefault(d.contact_name, []).append(d.channel_label)
    steps = sorted(set(range(1, reached + 1)) | set(by_step))
    return [
        EscalationStep(
            step=s,
            who=_step_who(plan, kind, s),
            contacts=[f"{name}（{'、'.join(dict.fromkeys(chs))}）" for name, chs in by_step.get(s, {}).items()],
        )
        for s in steps
    ]


@dataclass
class _DeliveryTally:
    per_target: dict[str, list[DeliveryRow]] = field(default_factory=lambda: defaultdict(list))
    by_channel: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    sandbox_channels: set[str] = field(default_factory=set)
    sandbox_count: int = 0


def _delivery_rows(snap: _Snapshot) -> _DeliveryTally:
    tally = _DeliveryTally()
    target_contact = {t.id: t.person_id or t.device_id for t in snap.targets}
    for d in snap.deliveries:
        tally.by_channel[d.channel][d.state] += 1
        if d.sandbox:
            tally.sandbox_count += 1
            tally.sandbox_channels.add(d.channel)
        contact = d.person_id or d.device_id
        if d.person_id is not None:
            name, phone = snap.persons.get(d.person_id, (d.person_id, None))
        else:
            name, phone = snap.devices.get(d.device_id or "", d.device_id or ""), None
        tally.per_target[d.target_id].append(
            DeliveryRow(
                channel=d.channel,
                channel_label=channel_label(d.channel),
                purpose=d.purpose,
                purpose_label=label(PURPOSE_LABEL, d.purpose),
                step=d.step,
                contact_id=contact,
                contact_name=name,
                contact_phone=mask_phone(phone),
                to_target=contact == target_contact.get(d.target_id),
                state=d.state,
                state_label=label(DELIVERY_STATE_LABEL, d.state),
                attempts=d.attempts,
                sent_at=d.sent_at,
                delivered_at=d.delivered_at,
                provider=d.provider,
                provider_id=d.provider_id,
                sandbox=d.sandbox,
                error=d.error,
                task=str(d.detail["task"]) if d.detail and d.detail.get("task") else None,
            )
        )
    return tally


def _recipient_row(
    t: _TargetRec,
    snap: _Snapshot,
    plan: Plan | None,
    created_at: datetime,
    deliveries: list[DeliveryRow],
    ack: _AckRec | None,
) -> RecipientRow:
    codes = [c for c in t.path.split("/") if c]
    township = township_code(t.path)
    village = codes[2] if len(codes) > 2 else None
    if t.kind == TargetKind.DEVICE:
        name, phone = snap.devices.get(t.device_id or "", t.device_id or ""), None
    else:
        name, phone = snap.persons.get(t.person_id or "", (t.person_id or "", None))
    # The target row is authoritative; the counted acknowledgement fills in what an older writer left out.
    answered_by = t.answered_by or (ack.person_id if ack else None)
    answered_at = t.answered_at or (ack.at if ack else None)
    channel = t.answer_channel or (ack.channel if ack else None)
    if answered_by == DEVICE_ANSWER:
        answered_by_name = f"{name}（设备确认）"
    elif answered_by:
        answered_by_name = snap.persons.get(answered_by, (answered_by, None))[0]
    else:
        answered_by_name = ""
    reached_at = [d.delivered_at for d in deliveries if d.delivered_at and d.purpose != Purpose.LIFT]
    device = _device_condition(t, deliveries) if t.kind == TargetKind.DEVICE else None
    return RecipientRow(
        target_id=t.id,
        kind=t.kind,
        kind_label=label(TARGET_KIND_LABEL, t.kind),
        township_code=township,
        township_name=snap.units.get(township, township) if township else COUNTY_LEVEL,
        village_code=village,
        village_name=snap.units.get(village, village) if village else "",
        unit_code=t.unit_code,
        unit_name=t.unit_name,
        role=t.role,
        role_label=role_label(t.role),
        name=name,
        phone=mask_phone(phone),
        state=t.state,
        state_label=label(TARGET_STATE_LABEL, t.state),
        silent=t.state in SILENT_STATES,
        step=t.step,
        escalation=_escalation(plan, t.kind, t.step, deliveries),
        deliveries=deliveries,
        sandbox=any(d.sandbox for d in deliveries),
        first_delivered_at=min(reached_at) if reached_at else None,
        answered_at=answered_at,
        answer_s=(utc(answered_at) - created_at).total_seconds() if answered_at else None,
        answered_by=answered_by,
        answered_by_name=answered_by_name,
        answered_for=t.state == TargetState.ANSWERED_FOR,
        answer_channel=channel,
        answer_channel_label=channel_label(channel),
        on_behalf_reason=ack.on_behalf_reason if ack else None,
        answers=snap.answers.get(t.id, 0),
        feedback=t.feedback,
        feedback_text=feedback_text(t.feedback),
        device_condition=device[0] if device else None,
        device_condition_label=device[1] if device else "",
    )


def _device_condition(t: _TargetRec, deliveries: list[DeliveryRow]) -> tuple[str, str]:
    """What the device did, and its label, by the rule the alert page uses (views.device_state)."""
    warnings = [d for d in deliveries if d.to_target and d.purpose == Purpose.WARN]
    stood_in = [d.task or d.channel_label for d in deliveries if not d.to_target and d.purpose != Purpose.LIFT]
    answer = (t.feedback or {}).get("device_status")
    condition = condition_of(t.state, answer, warnings[-1].state if warnings else None, bool(stood_in))
    return condition, condition_label(condition, stood_in[0] if stood_in else None)


def _reporting_villages(rows: Iterable[RecipientRow]) -> list[TownshipRow]:
    by_village: dict[str, _Tally] = defaultdict(_Tally)
    names: dict[str, str] = {}
    for r in rows:
        if r.village_code:
            by_village[r.village_code].add(r)
            names[r.village_code] = f"{r.township_name} {r.village_name}".strip()
    villages = [TownshipRow(code=code, name=names[code], **t.counts()) for code, t in sorted(by_village.items())]
    return [v for v in villages if v.households or v.moved or v.help_needed]


def _townships(rows: Iterable[RecipientRow]) -> tuple[_Tally, list[TownshipRow]]:
    total = _Tally()
    by_township: dict[str | None, _Tally] = defaultdict(_Tally)
    names: dict[str | None, str] = {}
    for r in rows:
        total.add(r)
        by_township[r.township_code].add(r)
        names[r.township_code] = r.township_name
    townships = [
        TownshipRow(code=code, name=names[code], **tally.counts())
        for code, tally in sorted(by_township.items(), key=lambda kv: kv[0] or "")
    ]
    return total, townships


def _assemble(snap: _Snapshot, now: datetime) -> AlertReport:
    alert = snap.alert
    created_at = utc(alert.created_at)
    plan_rows, plan = _plan_rows(alert.plan)
    sent = _delivery_rows(snap)
    counted = {a.target_id: a for a in snap.acks}
    rows = [
        _recipient_row(t, snap, plan, created_at, sent.per_target.get(t.id, []), counted.get(t.id))
        for t in snap.targets
    ]
    # silent first: that is who the duty room has to chase; then by place, so a township reads as one block
    path = {t.id: t.path for t in snap.targets}
    rows.sort(key=lambda r: (not r.silent, r.township_code or "", path[r.target_id], r.name))
    total, townships = _townships(rows)
    villages = _reporting_villages(rows)
    summary = Summary(
        **total.counts(),
        deliveries_total=len(snap.deliveries),
        deliveries={ch: dict(sorted(states.items())) for ch, states in sorted(sent.by_channel.items())},
        sandbox_deliveries=sent.sandbox_count,
        sandbox_channels=sorted(sent.sandbox_channels),
    )
    return AlertReport(
        alert_id=alert.id or 0,
        level=alert.level,
        level_label=label(LEVEL_LABEL, alert.level),
        hazard=alert.hazard,
        title=alert.title,
        text=alert.text,
        instructions=alert.instructions,
        status=alert.status,
        status_label=label(ALERT_STATUS_LABEL, alert.status),
        exercise=alert.exercise,
        target_units=list(alert.target_units),
        target_unit_names=[snap.units.get(c, c) for c in alert.target_units],
        created_at=created_at,
        created_by=alert.created_by,
        ended_at=alert.ended_at,
        end_reason=alert.end_reason,
        plan=plan_rows,
        generated_at=utc(now),
        summary=summary,
        townships=townships,
        villages=villages,
        # not checked yet: `checked` puts in the chain's state as of the view
        audit=AuditStatus(
            ok=False,
            rows=0,
            first_bad_seq=None,
            reason="not checked",
            alert_events=snap.alert_events,
            position=snap.position,
        ),
        recipients=rows,
    )


async def build_unchecked(db: Database, alert_id: int, *, now: datetime, within: str | None = None) -> AlertReport:
    """The report without the audit chain check (`audit.ok` false, "not checked"): what views.report.cache keeps,
    since everything in it holds until the alert's audit position moves, while the chain is checked per view."""
    async with db.session() as session:
        snap = await _read(session, alert_id, within)
    # Shaping 100,000 rows is seconds of CPU: keep the loop free for acks arriving meanwhile.
    report = await asyncio.to_thread(_assemble, snap, now)
    report.scope = within
    return report


def checked(report: AlertReport, chain: audit.Verification, *, now: datetime) -> AlertReport:
    """The report as one view shows it: the chain's state and the time of that view, the rest as built.

    A shallow copy: the recipients are shared with the cached report, which nobody changes.
    """
    status = report.audit.model_copy(
        update={"ok": chain.ok, "rows": chain.rows, "first_bad_seq": chain.first_bad_seq, "reason": chain.reason}
    )
    return report.model_copy(update={"audit": status, "generated_at": utc(now)})


async def build_report(db: Database, alert_id: int, *, now: datetime, within: str | None = None) -> AlertReport:
    """The audit report of one alert as the store has it at `now`. Raises LookupError for an unknown alert.

    `within` is a unit path ("/500238/500238101/"): the report then covers only the targets in that subtree.
    """
    report = await build_unchecked(db, alert_id, now=now, within=within)
    # the whole chain, walked in its own short transactions: the report says whether its records can be trusted
    return checked(report, await audit.verify(db), now=now)
