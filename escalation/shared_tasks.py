"""One manual task per village, task kind and alert: a second silent device shares the task already out.

A village's siren and its broadcast zone both fall silent: without this the village head would be sent out to
鸣锣吹哨 twice for one village, and report the same households twice. The device that comes second gets a task row
that is cancelled at once (nothing is sent) and names the target whose task it shares (TASK_SHARED_WITH), so every
view still shows who stands in for it, and answering the task answers both (alerting.answer.apply).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.issue.planning import delivery_row
from alerting.model.domain import (
    TASK_SHARED_WITH,
    ChannelKind,
    DeliveryState,
    Level,
    Purpose,
    TargetKind,
    TargetState,
)
from alerting.store.tables import Delivery, OrgUnit, Target


async def task_out_already(
    s: AsyncSession, alert_id: int, unit_code: str, task: str, person_ids: Sequence[str]
) -> str | None:
    """The device target whose `task` of this alert already went to these people and is still open, if any.
    The device's unit is locked first (PostgreSQL; SQLite writes one at a time anyway): two engines firing a
    village's siren and its broadcast zone at once would otherwise each find no task and send one."""
    await s.execute(select(col(OrgUnit.code)).where(col(OrgUnit.code) == unit_code).with_for_update())
    rows = await s.execute(
        select(col(Delivery.target_id), col(Delivery.detail))
        .join(Target, col(Target.id) == col(Delivery.target_id))
        .where(
            col(Delivery.alert_id) == alert_id,
            col(Delivery.purpose) == Purpose.TASK.value,
            col(Delivery.state) != DeliveryState.CANCELLED.value,
            col(Delivery.person_id).in_(list(person_ids)),
            col(Target.kind) == TargetKind.DEVICE.value,
            col(Target.state) == TargetState.OPEN.value,
        )
        .order_by(col(Delivery.created_at), col(Delivery.id))
    )
    for target_id, detail in rows:
        if (detail or {}).get("task") == task:
            return str(target_id)
    return None


def shared_task_row(
    alert_id: int,
    target_id: str,
    step_no: int,
    task: str,
    person_id: str,
    shared_with: str,
    now: datetime,
    level: Level,
) -> dict[str, Any]:
    """The record that `target_id`'s task is the one already out for `shared_with`: nothing is sent."""
    row = delivery_row(
        alert_id=alert_id,
        target_id=target_id,
        channel=ChannelKind.MANUAL,
        purpose=Purpose.TASK,
        step=step_no,
        level=level,
        now=now,
        person_id=person_id,
        detail={"task": task, TASK_SHARED_WITH: shared_with},
    )
    row["state"] = DeliveryState.CANCELLED.value
    return row
