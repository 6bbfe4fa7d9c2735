"""Turning one alert's snapshot into its report: a row per recipient, tallies per township and village, the
escalation each went through. Pure: no database, so it runs off the event loop (asyncio.to_thread)."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from alerting.model.access import township_code
from alerting.model.actor import DEVICE_TEXT
from alerting.model.clock import utc
from alerting.model.domain import (
    Purpose,
    TargetKind,
    TargetState,
)
from alerting.model.plan import Plan, PlanSet, Who
from alerting.model.privacy import mask_phone
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
    feedback_text,
    label,
    role_label,
)
from alerting.views.report.model import (
    SILENT_STATES,
    AlertReport,
    AuditStatus,
    DeliveryRow,
    EscalationStep,
    PlanStepRow,
    RecipientRow,
    Summary,
    TownshipRow,
)
from alerting.views.report.read import AckRec, Snapshot, TargetRec


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: always a time someone actually answered at."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


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


def _delivery_rows(snap: Snapshot) -> _DeliveryTally:
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
    t: TargetRec,
    snap: Snapshot,
    plan: Plan | None,
    created_at: datetime,
    deliveries: list[DeliveryRow],
    ack: AckRec | None,
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
    if answered_by == DEVICE_TEXT:
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


def _device_condition(t: TargetRec, deliveries: list[DeliveryRow]) -> tuple[str, str]:
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


def assemble(snap: Snapshot, now: datetime) -> AlertReport:
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
