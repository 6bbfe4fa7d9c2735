"""What a per-alert audit report holds: counts per township, one row per recipient with every delivery and answer,
the plan that applied and the state of the audit chain. views.report.assemble fills it; export, files and charts
read it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from alerting.model.domain import TargetState

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
    # keyed rows and the latest checkpoint outside the database, in words (views.report.chain_notes)
    notes: str = ""


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
