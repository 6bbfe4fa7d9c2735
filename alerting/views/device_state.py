"""What a device did for one alert, and whether it can be reached: one rule for the API, the alert page and the report.

A siren that never confirmed is not left "waiting": once its plan hands it to people (the village head's 鸣锣吹哨),
the escalation has written it off, and every view says it failed and who stands in for it, even after the
village head has answered and the loop is closed. Its link says whether it was ever heard from at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.clock import utc
from alerting.model.domain import DeliveryState, Purpose, TargetState
from alerting.store.tables import Delivery, Device, Target
from alerting.views.labels import DEVICE_CONDITION_LABEL, DEVICE_LINK_LABEL, channel_label

# most in need of attention first
CONDITION_ORDER = ("failed", "sent", "waiting", "confirmed_for", "sounding", "played", "stopped")
ANSWERED = (TargetState.ANSWERED.value, TargetState.ANSWERED_FOR.value)


class DeviceState(BaseModel):
    link: str = Field(description="never_seen | online | offline: the device's last status")
    link_label: str
    status_at: datetime | None = Field(description="when the device last said it was online or offline")
    condition: str = Field(description=" | ".join(DEVICE_CONDITION_LABEL))
    condition_label: str
    stood_in_by: str | None = Field(
        default=None, description="the manual task (or channel) people were sent instead, when the device failed"
    )


def link_of(online: bool | None) -> str:
    return "never_seen" if online is None else "online" if online else "offline"


def condition_of(target_state: str, device_status: object, warning_state: str | None, stood_in: bool) -> str:
    """`device_status` is the device's own answer (from the target's feedback), `warning_state` that of its last
    warning command, `stood_in` whether people were sent in its place."""
    if device_status in ("sounding", "done") and target_state in ANSWERED:
        return "played" if device_status == "done" else "sounding"
    if stood_in or target_state == TargetState.FAILED.value or warning_state == DeliveryState.FAILED.value:
        return "failed"
    if target_state in ANSWERED:
        return "confirmed_for"  # an officer confirmed it on the device's behalf
    if target_state == TargetState.CANCELLED.value:
        return "stopped"
    if warning_state in (DeliveryState.SENT.value, DeliveryState.DELIVERED.value):
        return "sent"
    return "waiting"


def condition_label(condition: str, stood_in_by: str | None) -> str:
    if condition == "failed" and stood_in_by:
        return f"未确认，已派{stood_in_by}"
    return DEVICE_CONDITION_LABEL[condition]


def state_of(
    target: Target, online: bool | None, status_at: datetime | None, warning: Delivery | None, stood_in_by: str | None
) -> DeviceState:
    link = link_of(online)
    answer = (target.feedback or {}).get("device_status")
    condition = condition_of(target.state, answer, warning.state if warning else None, bool(stood_in_by))
    return DeviceState(
        link=link,
        link_label=DEVICE_LINK_LABEL[link],
        status_at=utc(status_at) if status_at else None,
        condition=condition,
        condition_label=condition_label(condition, stood_in_by),
        stood_in_by=stood_in_by if condition == "failed" else None,
    )


async def device_states(s: AsyncSession, alert_id: int, targets: Iterable[Target]) -> dict[str, DeviceState]:
    """The state of each device target of `alert_id` among `targets` (person targets are left out)."""
    devices = {t.id: t for t in targets if t.device_id is not None}
    if not devices:
        return {}
    warning, stood_in = await last_deliveries(s, alert_id, list(devices))
    status = {
        d.id: (d.online, d.status_at)
        for d in (
            await s.execute(select(Device).where(col(Device.id).in_({t.device_id for t in devices.values()})))
        ).scalars()
    }
    out = {}
    for target_id, t in devices.items():
        online, status_at = status.get(t.device_id or "", (None, None))
        out[target_id] = state_of(t, online, status_at, warning.get(target_id), stood_in.get(target_id))
    return out


async def last_deliveries(
    s: AsyncSession, alert_id: int, target_ids: list[str]
) -> tuple[dict[str, Delivery], dict[str, str]]:
    """Each target's last warning command to its device, and what people were sent in its place."""
    warning: dict[str, Delivery] = {}
    stood_in: dict[str, str] = {}
    rows = await s.execute(
        select(Delivery)
        .where(
            col(Delivery.alert_id) == alert_id,
            col(Delivery.target_id).in_(target_ids),
            col(Delivery.purpose).in_([Purpose.WARN.value, Purpose.TASK.value]),
        )
        .order_by(col(Delivery.created_at))
    )
    for d in rows.scalars():
        if d.device_id is not None:
            warning[d.target_id] = d
        else:
            stood_in.setdefault(d.target_id, stand_in_name(d.detail, d.channel))
    return warning, stood_in


def stand_in_name(detail: dict[str, object] | None, channel: str) -> str:
    """What the people sent instead were asked to do: the manual task, or else the channel they were reached on."""
    task = (detail or {}).get("task")
    return str(task) if task else channel_label(channel)
