"""What the answer page shows for one delivery: the warning, who it is for, whose silence, and where the loop stands."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alerting.deliver.messages import About
from alerting.model.actor import DEVICE_TEXT
from alerting.model.domain import (
    AlertStatus,
    ChannelKind,
    DeviceKind,
    Level,
    Purpose,
    Role,
    TargetKind,
    TargetState,
    TaskKind,
)
from alerting.store.db import Database
from alerting.store.tables import Alert, Delivery, Device, OrgUnit, Person, Target
from alerting.views.labels import DEVICE_KIND_LABEL, feedback_text
from alerting.views.report.export import LEVEL_COLOUR


@dataclass(frozen=True)
class AckView:
    delivery_id: str
    channel: ChannelKind
    purpose: Purpose
    task: TaskKind | None
    alert_id: int
    level: Level
    colour: str
    hazard: str
    title: str
    text: str
    instructions: str
    exercise: bool
    alert_status: AlertStatus
    issued_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    recipient: str | None  # who the link was sent to
    recipient_id: str | None
    target_state: TargetState
    answered_at: datetime | None
    answered_by: str | None
    answered_by_name: str | None
    about: About | None  # set when the link is about someone (or something) else's silence
    unit: str
    reported: str = ""  # the field report kept with the answer so far, in words

    @property
    def answered(self) -> bool:
        return self.target_state.closed

    @property
    def answered_by_me(self) -> bool:
        return self.answered_by is not None and self.answered_by == self.recipient_id

    @property
    def can_answer(self) -> bool:
        return self.purpose is not Purpose.LIFT and self.alert_status is AlertStatus.ACTIVE and not self.answered


async def load_ack_view(db: Database, delivery_id: str) -> AckView | None:
    async with db.session() as s:
        d = await s.get(Delivery, delivery_id)
        if d is None:
            return None
        alert = await s.get(Alert, d.alert_id)
        target = await s.get(Target, d.target_id)
        if alert is None or target is None:
            return None
        recipient = await s.get(Person, d.person_id) if d.person_id else None
        unit = await s.get(OrgUnit, target.unit_code)
        unit_name = unit.name if unit else target.unit_code
        about: About | None = None
        if d.person_id != target.person_id:
            if target.kind == TargetKind.PERSON.value and target.person_id:
                silent = await s.get(Person, target.person_id)
                about = About(silent.name if silent else target.person_id, _role(target.role), unit_name)
            elif target.device_id:
                device = await s.get(Device, target.device_id)
                kind = DEVICE_KIND_LABEL.get(DeviceKind(device.kind), device.kind) if device else "预警设备"
                about = About(device.name if device else target.device_id, kind, unit_name)
        by_name: str | None = None
        if target.answered_by == DEVICE_TEXT:
            by_name = "设备"
        elif target.answered_by:
            answerer = await s.get(Person, target.answered_by)
            by_name = answerer.name if answerer else target.answered_by
    assert alert.id is not None
    task = TaskKind(d.detail["task"]) if d.detail and d.detail.get("task") else None
    return AckView(
        delivery_id=d.id,
        channel=ChannelKind(d.channel),
        purpose=Purpose(d.purpose),
        task=task,
        alert_id=alert.id,
        level=Level(alert.level),
        colour=LEVEL_COLOUR.get(alert.level, "#455a64"),
        hazard=alert.hazard,
        title=alert.title,
        text=alert.text,
        instructions=alert.instructions,
        exercise=alert.exercise,
        alert_status=AlertStatus(alert.status),
        issued_at=alert.created_at,
        ended_at=alert.ended_at,
        end_reason=alert.end_reason,
        recipient=recipient.name if recipient else None,
        recipient_id=d.person_id,
        target_state=TargetState(target.state),
        answered_at=target.answered_at,
        answered_by=target.answered_by,
        answered_by_name=by_name,
        about=about,
        unit=unit_name,
        reported=feedback_text(target.feedback),
    )


def _role(value: str) -> str:
    return Role(value).label if value in Role.__members__.values() else value
