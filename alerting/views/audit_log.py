"""Reading the global audit log: newest first, filtered by kind, alert or actor, and its chain status."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.model.access import Principal, alert_in_scope, in_scope
from alerting.model.clock import local_text, utc
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Delivery, Target
from alerting.views.report.chain_notes import chain_notes
from alerting.views.report.export import chain_text


class AuditItem(BaseModel):
    seq: int
    at: datetime
    kind: str
    actor: str
    alert_id: int | None
    subject: str | None
    data: dict[str, Any]


class ChainStatus(BaseModel):
    ok: bool
    rows: int
    first_bad_seq: int | None
    reason: str
    text: str  # the same in words an auditor reads
    # which rows are keyed and the latest checkpoint outside the database the chain was held to (or why none)
    notes: list[str] = []


async def audit_page(
    db: Database,
    who: Principal,
    *,
    kind: str | None = None,
    alert_id: int | None = None,
    actor: str | None = None,
    limit: int = 50,
    offset: int = 0,
    oldest_first: bool = False,
) -> tuple[list[AuditItem], int]:
    """A kind ending in "." is a prefix ("alert." matches every alert event). A township officer reads
    only the events of alerts reaching their subtree."""
    where: list[Any] = []
    if kind:
        where.append(col(AuditEvent.kind).startswith(kind) if kind.endswith(".") else col(AuditEvent.kind) == kind)
    if alert_id is not None:
        where.append(col(AuditEvent.alert_id) == alert_id)
    if actor:
        where.append(col(AuditEvent.actor) == actor)
    if not who.county_wide:
        where += [
            col(AuditEvent.alert_id).is_not(None),
            alert_in_scope(who, col(AuditEvent.alert_id)),
            _not_about_others(who),
        ]
    order = col(AuditEvent.seq).asc() if oldest_first else col(AuditEvent.seq).desc()
    async with db.session() as s:
        total = await s.scalar(select(func.count()).select_from(AuditEvent).where(*where))
        rows = (await s.execute(select(AuditEvent).where(*where).order_by(order).limit(limit).offset(offset))).scalars()
        items = [
            AuditItem(
                seq=e.seq,
                at=utc(e.at),
                kind=e.kind,
                actor=e.actor,
                alert_id=e.alert_id,
                subject=e.subject,
                data=dict(e.data or {}),
            )
            for e in rows
        ]
    return items, int(total or 0)


def _not_about_others(who: Principal) -> ColumnElement[bool]:
    """Keeps an alert's own events but drops those about a recipient (or a delivery to one) outside the
    township: on an alert reaching two townships, one must not read the other's answers, notes and failures."""
    subject = col(AuditEvent.subject)
    their_target = select(col(Target.id)).where(col(Target.id) == subject, ~in_scope(who, col(Target.unit_code)))
    their_delivery = (
        select(col(Delivery.id))
        .join(Target, col(Target.id) == col(Delivery.target_id))
        .where(col(Delivery.id) == subject, ~in_scope(who, col(Target.unit_code)))
    )
    return and_(~exists(their_target), ~exists(their_delivery))


async def chain_status(db: Database) -> ChainStatus:
    """Walks the whole chain (audit.verify): a long one takes seconds, though it holds nothing else up."""
    v = await audit.verify(db)
    return ChainStatus(
        ok=v.ok,
        rows=v.rows,
        first_bad_seq=v.first_bad_seq,
        reason=v.reason,
        text=chain_text(v.ok, v.rows, v.first_bad_seq, v.reason, chain_notes(v)),
        notes=v.notes,
    )


def audit_csv(items: list[AuditItem]) -> str:
    """The events as CSV: times in Asia/Shanghai, the data as JSON in one column."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["seq", "time (Asia/Shanghai)", "kind", "actor", "alert_id", "subject", "data"])
    for e in items:
        data = json.dumps(e.data, ensure_ascii=False, sort_keys=True)
        writer.writerow([e.seq, local_text(e.at), e.kind, e.actor, e.alert_id or "", e.subject or "", data])
    return out.getvalue()
