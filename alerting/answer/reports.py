"""Provider reports (delivered, undelivered, no answer, a siren's "received"), applied once each, in any order.

A report can come back before the engine has written its send: the delivery row was committed before the
provider was called, so the report finds it (by our delivery id, which every adapter's callback carries, or by the
provider's id) and applies. The order of reports does not matter: a delivery moves only to a state that says more
(model.domain.merged_state: delivered > failed > sent). Every distinct report is kept as an audit event, including
a late, lesser one that changes nothing; an identical report posted again (a provider's retry, or a replay) is
taken in once, by its key.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.answer.events import StatusUpdate
from alerting.audit import chain as audit
from alerting.model.domain import ChannelKind, DeliveryState, merged_state
from alerting.store.db import Database, rowcount
from alerting.store.tables import Delivery, InboundSeen

log = structlog.get_logger()


def report_key(event: StatusUpdate) -> str:
    """The same report twice has the same key: channel, delivery (or provider id) and what it says."""
    said = "delivered" if event.delivered else f"failed:{event.error or ''}"
    status = str(event.detail.get("status", ""))
    return f"report:{event.channel.value}:{event.delivery_id or event.provider_id}:{said}:{status}"[:200]


async def apply_report(db: Database, event: StatusUpdate) -> bool:
    """Take one report in through the group-committing writer; True when it changed the delivery."""

    async def job(s: AsyncSession) -> bool:
        if not await _first_time(s, db, report_key(event), event):
            return False
        found = await _find(s, event)
        if found is None:
            log.warning(
                "report.unknown_delivery",
                channel=event.channel.value,
                delivery_id=event.delivery_id,
                provider_id=event.provider_id,
            )
            return False
        delivery_id, alert_id, state = found
        incoming = DeliveryState.DELIVERED if event.delivered else DeliveryState.FAILED
        moved_to = merged_state(state, incoming)
        if moved_to is not None:
            values: dict[str, Any] = (
                {"state": moved_to.value, "delivered_at": event.at}
                if event.delivered
                else {"state": moved_to.value, "error": event.error or "failed"}
            )
            # conditional on what we read: a report applied by another writer meanwhile is not overwritten
            changed = rowcount(
                await s.execute(
                    update(Delivery)
                    .where(col(Delivery.id) == delivery_id, col(Delivery.state) == state)
                    .values(**values)
                )
            )
            moved_to = moved_to if changed else None
        await audit.record(
            s,
            "delivery.delivered" if event.delivered else "delivery.undelivered",
            actor=event.channel.value,
            at=event.at,
            alert_id=alert_id,
            subject=delivery_id,
            data={
                "error": event.error,
                **dict(event.detail),
                **({} if moved_to else {"applied": False, "kept": state}),
            },
        )
        return moved_to is not None

    return await db.writer.run(job)


async def _first_time(s: AsyncSession, db: Database, key: str, event: StatusUpdate) -> bool:
    insert = (sqlite.insert if db.is_sqlite else postgresql.insert)(InboundSeen)
    result = await s.execute(insert.values(key=key, at=event.at).on_conflict_do_nothing(index_elements=["key"]))
    return rowcount(result) == 1


async def _find(s: AsyncSession, event: StatusUpdate) -> tuple[str, int, str] | None:
    key = col(Delivery.id) == event.delivery_id if event.delivery_id else col(Delivery.provider_id) == event.provider_id
    row = (
        await s.execute(
            select(col(Delivery.id), col(Delivery.alert_id), col(Delivery.state)).where(
                key,
                # a manual task travels over SMS or WeCom, and that carrier reports on it
                col(Delivery.channel).in_([event.channel.value, ChannelKind.MANUAL.value]),
            )
        )
    ).first()
    return (row.id, row.alert_id, row.state) if row else None
