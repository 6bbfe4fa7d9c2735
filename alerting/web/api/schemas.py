"""What the API answers with. Times are UTC (ISO 8601); labels are the Chinese words people read."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from alerting.issue.alerts import AlertProgress
from alerting.model.clock import utc
from alerting.model.domain import AlertStatus, Level
from alerting.model.plain_text import FilledText
from alerting.store.tables import Alert
from alerting.views.device_state import DeviceState
from alerting.views.labels import ALERT_STATUS_LABEL

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


def alert_links(alert_id: int) -> dict[str, str]:
    base = f"/api/v1/alerts/{alert_id}"
    return {
        "self": base,
        "recipients": f"{base}/recipients",
        "cancel": f"{base}/cancel",
        "audit": f"{base}/audit",
    }


class IssuedOut(BaseModel):
    id: int
    targets: int = Field(description="responsible people and devices that must answer")
    deliveries: int = Field(description="first-wave deliveries queued")
    by_channel: dict[str, int]
    unreachable: int = Field(description="people no first-wave channel can reach (audited)")
    links: dict[str, str]


class CancelIn(BaseModel):
    reason: FilledText = Field(min_length=1, max_length=500, examples=["雨情减弱，解除预警"])


class CancelledOut(BaseModel):
    id: int
    status: str
    cancelled_deliveries: int = Field(description="deliveries not yet sent that were stopped")
    lift_notices: int = Field(description="解除 notices queued for everyone the warning reached")
    links: dict[str, str]


class AlertOut(BaseModel):
    id: int
    level: Level
    level_label: str
    hazard: str
    title: str
    text: str
    instructions: str
    exercise: bool
    status: str
    status_label: str
    target_units: list[str]
    created_at: datetime
    created_by: str
    ended_at: datetime | None
    end_reason: str | None
    supersedes_id: int | None
    links: dict[str, str]

    @classmethod
    def of(cls, a: Alert) -> AlertOut:
        assert a.id is not None
        level = Level(a.level)
        return cls(
            id=a.id,
            level=level,
            level_label=level.label,
            hazard=a.hazard,
            title=a.title,
            text=a.text,
            instructions=a.instructions,
            exercise=a.exercise,
            status=a.status,
            status_label=ALERT_STATUS_LABEL.get(AlertStatus(a.status), a.status),
            target_units=list(a.target_units),
            created_at=utc(a.created_at),
            created_by=a.created_by,
            ended_at=utc(a.ended_at) if a.ended_at else None,
            end_reason=a.end_reason,
            supersedes_id=a.supersedes_id,
            links=alert_links(a.id),
        )


class ProgressOut(BaseModel):
    total: int = Field(description="targets that must answer")
    closed: int = Field(description="answered, or answered for by someone above")
    silent: int = Field(description="still open")
    escalated: int = Field(description="targets past the first step")
    targets: dict[str, int] = Field(description="targets by state")
    deliveries: dict[str, dict[str, int]] = Field(description="deliveries by channel, then state")
    sandbox_channels: list[str] = Field(
        description="channels running in sandbox mode for this alert: what went over them reached nobody"
    )
    sandbox: bool


class AlertDetail(AlertOut):
    plan: dict[str, Any]
    progress: ProgressOut


def progress_out(p: AlertProgress, configured_sandbox: set[str]) -> ProgressOut:
    by_channel: dict[str, dict[str, int]] = {}
    for (channel, state), n in sorted(p.deliveries.items()):
        by_channel.setdefault(channel, {})[state] = n
    # a channel still in sandbox counts before anything was dispatched over it, so the duty officer
    # sees from the first second that those deliveries will reach nobody
    sandbox = sorted(set(p.sandbox_channels) | (configured_sandbox & set(by_channel)))
    return ProgressOut(
        total=p.total,
        closed=p.closed,
        silent=p.silent,
        escalated=p.escalated,
        targets=dict(sorted(p.targets.items())),
        deliveries=by_channel,
        sandbox_channels=sandbox,
        sandbox=bool(sandbox),
    )


class RecipientOut(BaseModel):
    target_id: str
    kind: str
    person_id: str | None
    device_id: str | None
    name: str
    phone: str | None = Field(description="masked: enough to tell numbers apart, not enough to dial")
    unit_code: str
    unit_name: str
    role: str
    role_label: str
    state: str
    state_label: str
    step: int = Field(description="escalation step reached (0 = first wave)")
    answered_at: datetime | None
    answered_by: str | None
    answered_by_name: str | None
    answer_channel: str | None
    feedback: dict[str, Any] | None
    device: DeviceState | None = Field(
        default=None, description="for a device: its link and what it did (failed once people stand in for it)"
    )


class ChannelOut(BaseModel):
    kind: str
    provider: str
    sandbox: bool
    circuit: str = "closed"  # open: the provider is failing and sends to it are paused
    last_error: str | None = None


class HealthOut(BaseModel):
    status: str
    database: str
    channels: list[ChannelOut]
