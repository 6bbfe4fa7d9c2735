"""Stopping what an ended alert still has going: its queued warnings, its pending steps, its open targets.

An update or a lift commits the alert's end first, with the new alert's first wave or the lift notices, so they go
out at once; what the old alert still had is stopped here, in pages of their own transactions. Nothing of it goes
out meanwhile: the dispatcher hands over no warning of an alert that is not active, the escalation fires no step
of one, and an answer to it no longer counts. Its targets are closed off last, so an ended alert with an open
target is one whose stop did not finish (the process died part-way): `unfinished` finds those.
"""

from __future__ import annotations

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model import deadlines as deadline_rows
from alerting.model.deliveries import not_handed_over
from alerting.model.domain import STOPPED_BY, DeliveryState, Purpose, TargetState
from alerting.store.db import Database, rowcount
from alerting.store.tables import Alert, Delivery, Target

STOP_PAGE = 5000  # rows per transaction: a county-wide alert's hundreds of thousands never hold the store at once


async def stop_page(s: AsyncSession, alert_id: int, why: str) -> tuple[int, int]:
    """One page of what the alert still has going, warnings first and targets last: (warnings cancelled, rows
    changed); no rows changed means it is all stopped."""
    unsent = (
        select(col(Delivery.id))
        .where(
            col(Delivery.alert_id) == alert_id,
            not_handed_over(),
            col(Delivery.purpose).notin_([Purpose.LIFT.value, Purpose.HELP.value]),
        )
        .limit(STOP_PAGE)
    )
    warnings = rowcount(
        await s.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(unsent))
            .values(state=DeliveryState.CANCELLED.value, error=why)
            .execution_options(synchronize_session=False)
        )
    )
    if warnings:
        return warnings, warnings
    steps = await deadline_rows.cancel_alert(s, alert_id, limit=STOP_PAGE)
    if steps:
        return 0, steps
    still_open = (
        select(col(Target.id))
        .where(col(Target.alert_id) == alert_id, col(Target.state) == TargetState.OPEN.value)
        .limit(STOP_PAGE)
    )
    targets = await s.execute(
        update(Target)
        .where(col(Target.id).in_(still_open))
        .values(state=TargetState.CANCELLED.value)
        .execution_options(synchronize_session=False)
    )
    return 0, rowcount(targets)


async def stop(db: Database, alert_id: int, why: str) -> int:
    """Stop everything the ended alert still has going, page by page; the warnings cancelled."""
    cancelled = 0
    while True:
        async with db.session() as s:
            warnings, changed = await stop_page(s, alert_id, why)
        cancelled += warnings
        if not changed:
            return cancelled


async def unfinished(db: Database) -> list[int]:
    """Alerts replaced or lifted whose stop a dead process left part-way (an open target remains)."""
    async with db.session() as s:
        rows = await s.execute(
            select(col(Alert.id))
            .where(
                col(Alert.status).in_(STOPPED_BY),
                exists().where(col(Target.alert_id) == col(Alert.id), col(Target.state) == TargetState.OPEN.value),
            )
            .order_by(col(Alert.id))
        )
        return [alert_id for alert_id in rows.scalars() if alert_id is not None]
