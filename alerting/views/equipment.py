"""What an alert asked of devices and people's hands: each device's state and a tally of the manual tasks."""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.domain import TASK_SHARED_WITH, DeliveryState, Purpose, TargetKind, TargetState
from alerting.store.tables import Delivery, Device, OrgUnit, Target
from alerting.views.device_state import CONDITION_ORDER, DeviceState, last_deliveries, state_of
from alerting.views.labels import DEVICE_KIND_LABEL, label


class DeviceLine(BaseModel):
    device_id: str
    name: str
    kind_label: str
    unit_name: str
    state: DeviceState
    error: str | None


class TaskLine(BaseModel):
    task: str
    assigned: int  # recipients given the task
    reached: int  # its message was sent or delivered
    answered: int
    reported: int  # answered with something done (households, people moved, help, a note)
    households: int
    moved: int
    help_needed: int


async def device_lines(s: AsyncSession, scope: list[ColumnElement[bool]], limit: int = 2000) -> list[DeviceLine]:
    rows = (
        await s.execute(
            select(Target, Device, col(OrgUnit.name))
            .join(Device, col(Device.id) == col(Target.device_id))
            .join(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
            .where(*scope, col(Target.kind) == TargetKind.DEVICE.value)
            .order_by(col(OrgUnit.path), col(Device.id))
            .limit(limit)
        )
    ).all()
    if not rows:
        return []
    warning, stood_in = await last_deliveries(s, rows[0][0].alert_id, [t.id for t, *_ in rows])
    out = []
    for t, device, unit in rows:
        state = state_of(t, device.online, device.status_at, warning.get(t.id), stood_in.get(t.id))
        sent = warning.get(t.id)
        out.append(
            DeviceLine(
                device_id=device.id,
                name=device.name,
                kind_label=label(DEVICE_KIND_LABEL, device.kind),
                unit_name=unit,
                state=state,
                error=sent.error if sent is not None and state.condition == "failed" else None,
            )
        )
    out.sort(key=lambda line: CONDITION_ORDER.index(line.state.condition))
    return out


async def task_lines(s: AsyncSession, scope: list[ColumnElement[bool]]) -> list[TaskLine]:
    """Manual tasks (鸣锣吹哨, 敲门入户) by kind: how many were given, reached, answered, reported on."""
    rows = await s.execute(
        select(col(Delivery.target_id), col(Delivery.state), col(Delivery.detail), Target)
        .join(Target, col(Target.id) == col(Delivery.target_id))
        .where(*scope, col(Delivery.purpose) == Purpose.TASK.value)
    )
    seen: dict[str, dict[str, Target]] = defaultdict(dict)
    reached: dict[str, set[str]] = defaultdict(set)
    for target_id, state, detail, target in rows:
        if (detail or {}).get(TASK_SHARED_WITH):
            continue  # a device whose village's task was already out: that task is counted once, with its own
        task = str((detail or {}).get("task") or "人工任务")
        seen[task][target_id] = target
        if state in (DeliveryState.SENT.value, DeliveryState.DELIVERED.value):
            reached[task].add(target_id)
    out = []
    for task, targets in sorted(seen.items()):
        answered = [
            t for t in targets.values() if t.state in (TargetState.ANSWERED.value, TargetState.ANSWERED_FOR.value)
        ]
        fb = [t.feedback or {} for t in targets.values()]
        out.append(
            TaskLine(
                task=task,
                assigned=len(targets),
                reached=len(reached[task]),
                answered=len(answered),
                reported=sum(1 for f in fb if f and set(f) - {"device_status"}),
                households=sum(int(f.get("households") or 0) for f in fb if str(f.get("households", "0")).isdigit()),
                moved=sum(int(f.get("moved") or 0) for f in fb if str(f.get("moved", "0")).isdigit()),
                help_needed=sum(1 for f in fb if f.get("help_needed")),
            )
        )
    return out
