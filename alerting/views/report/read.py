"""Everything one alert's report needs, read in one transaction: its targets, deliveries and answers, the names
they refer to, and the alert's audit position first, so every other read sees at least what was recorded up to it.

A handful of set-based reads: 100,000 targets cost the same few queries as ten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

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


class TargetRec(NamedTuple):
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


class DeliveryRec(NamedTuple):
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


class AckRec(NamedTuple):
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
class Snapshot:
    """Everything the report needs, read in one transaction."""

    alert: Alert
    targets: list[TargetRec]
    deliveries: list[DeliveryRec]  # in the order they went out
    acks: list[AckRec]
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


async def read_snapshot(session: AsyncSession, alert_id: int, within: str | None = None) -> Snapshot:
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
        TargetRec._make(r)
        for r in await session.execute(
            select(*_columns(Target, TargetRec, skip=2), col(OrgUnit.name), col(OrgUnit.path))
            .join(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
            .where(col(Target.alert_id) == alert_id, *([col(OrgUnit.path).startswith(within)] if within else []))
        )
    ]
    deliveries = [
        DeliveryRec._make(r)
        for r in await session.execute(
            select(*_columns(Delivery, DeliveryRec))
            .where(
                col(Delivery.alert_id) == alert_id,
                *([col(Delivery.target_id).in_(scoped)] if scoped is not None else []),
            )
            .order_by(col(Delivery.step), col(Delivery.created_at), col(Delivery.channel))
        )
    ]
    acks = [
        AckRec._make(r)
        for r in await session.execute(
            select(*_columns(Acknowledgement, AckRec)).where(
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
    return Snapshot(
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
