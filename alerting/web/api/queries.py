"""The paged reads the API serves. Set-based: one page costs the same few queries whatever its size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import aliased
from sqlmodel import col

from alerting.model.access import Principal, alert_in_scope, in_scope
from alerting.model.actor import DEVICE_TEXT
from alerting.model.clock import utc
from alerting.model.domain import AlertStatus, TargetState
from alerting.model.privacy import mask_phone
from alerting.store.db import Database
from alerting.store.tables import Alert, Device, OrgUnit, Person, Target
from alerting.views.device_state import device_states
from alerting.views.labels import TARGET_STATE_LABEL, role_label
from alerting.web.api.schemas import RecipientOut


def word(labels: Mapping[Any, str], value: str) -> str:
    """The Chinese word for a stored value; an unexpected value is shown as it is."""
    return labels.get(value, value)


async def alerts_page(
    db: Database, *, limit: int, offset: int, active_only: bool, scope: Principal | None = None
) -> tuple[list[Alert], int]:
    """Newest first, and how many there are in all (of those `scope` may see, when given)."""
    q = select(Alert)
    n = select(func.count()).select_from(Alert)
    if scope is not None:
        q = q.where(alert_in_scope(scope, col(Alert.id)))
        n = n.where(alert_in_scope(scope, col(Alert.id)))
    if active_only:
        q = q.where(col(Alert.status) == AlertStatus.ACTIVE.value)
        n = n.where(col(Alert.status) == AlertStatus.ACTIVE.value)
    async with db.session() as s:
        total = await s.scalar(n)
        rows = (await s.execute(q.order_by(col(Alert.id).desc()).limit(limit).offset(offset))).scalars()
        return list(rows), int(total or 0)


async def recipients_page(
    db: Database,
    alert_id: int,
    *,
    limit: int,
    offset: int,
    state: TargetState | None,
    scope: Principal | None = None,
) -> tuple[list[RecipientOut], int]:
    """Targets in the order the report uses: most critical first, then down the hierarchy (inside `scope`)."""
    answerer = aliased(Person)
    where = [col(Target.alert_id) == alert_id]
    if scope is not None:
        where.append(in_scope(scope, col(Target.unit_code)))
    if state is not None:
        where.append(col(Target.state) == state.value)
    q = (
        select(Target, col(Person.name), col(Person.phone), col(Device.name), col(OrgUnit.name), col(answerer.name))
        .outerjoin(Person, col(Person.id) == col(Target.person_id))
        .outerjoin(Device, col(Device.id) == col(Target.device_id))
        .outerjoin(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
        .outerjoin(answerer, col(answerer.id) == col(Target.answered_by))
        .where(*where)
        .order_by(col(Target.priority), col(OrgUnit.path), col(Target.id))
        .limit(limit)
        .offset(offset)
    )
    async with db.session() as s:
        total = await s.scalar(select(func.count()).select_from(Target).where(*where))
        rows = (await s.execute(q)).all()
        devices = await device_states(s, alert_id, [t for t, *_ in rows])
    out = [
        RecipientOut(
            target_id=t.id,
            kind=t.kind,
            person_id=t.person_id,
            device_id=t.device_id,
            name=person_name or device_name or t.device_id or t.person_id or "",
            phone=mask_phone(phone) or None,
            unit_code=t.unit_code,
            unit_name=unit_name or t.unit_code,
            role=t.role,
            role_label=role_label(t.role),
            state=t.state,
            state_label=word(TARGET_STATE_LABEL, t.state),
            step=t.step,
            answered_at=utc(t.answered_at) if t.answered_at else None,
            answered_by=t.answered_by,
            answered_by_name=answerer_name or ("设备" if t.answered_by == DEVICE_TEXT else None),
            answer_channel=t.answer_channel,
            feedback=t.feedback,
            device=devices.get(t.id),
        )
        for t, person_name, phone, device_name, unit_name, answerer_name in rows
    ]
    return out, int(total or 0)
