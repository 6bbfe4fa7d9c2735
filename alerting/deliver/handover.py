"""The moment of hand-over: right before a delivery goes to its provider, after pacing and a free slot.

Each delivery is checked against its alert and target as they are now, and the ones that may go are marked
`handed_at` in the same transaction, which commits before the provider is called. So:
- nothing goes out for a target already answered or an alert cancelled or closed (those are recorded as not
  sent, and the row says why);
- an answer or a cancel that commits first wins; one that commits after finds the delivery handed over, and the
  record says it was sent (a lift notice follows it);
- after a crash only handed deliveries without an outcome can have reached the provider: at most what was in
  flight, which the channel's concurrency bounds.
On PostgreSQL the alert and target rows are read FOR SHARE, so an answer or cancel running at the same moment
waits for this transaction or is seen by it; SQLite has one writer and serialises them anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.clock import Clock
from alerting.model.domain import AlertStatus, DeliveryState, Purpose, TargetState
from alerting.store.tables import Alert, Delivery, Target, core_table

T, ALERT, TARGET = core_table(Delivery), core_table(Alert), core_table(Target)

# a lift notice, or a call for help: they go out whatever became of the alert and the target
UNCONDITIONAL = frozenset({Purpose.LIFT.value, Purpose.HELP.value})


class Verdict(StrEnum):
    HANDED = "handed"  # go: the provider may now be called
    NOT_SENT = "not_sent"  # the alert or the target moved on: recorded as not sent
    LOST = "lost"  # this process no longer holds the claim (taken over, or cancelled before hand-over)


@dataclass(frozen=True)
class Ask:
    """One delivery asking to be handed over by the process that claimed it."""

    delivery_id: str
    owner: str


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    why: str | None = None


def decide(
    *, state: str, claimed_by: str | None, owner: str, purpose: str, alert_status: str | None, target_state: str | None
) -> Decision:
    """Pure: may this claimed delivery go to its provider now?"""
    if state != DeliveryState.SENDING.value or claimed_by != owner:
        return Decision(Verdict.LOST)
    if purpose in UNCONDITIONAL:
        return Decision(Verdict.HANDED)
    if alert_status != AlertStatus.ACTIVE.value:
        return Decision(Verdict.NOT_SENT, f"alert {alert_status}")
    if target_state != TargetState.OPEN.value:
        return Decision(Verdict.NOT_SENT, f"target {target_state}")
    return Decision(Verdict.HANDED)


def hand_over_job(clock: Clock, *, lock: bool) -> Callable[[AsyncSession, list[Ask]], Awaitable[dict[Ask, Decision]]]:
    """The set-based hand-over of every waiting delivery, as one writer job (see store.writer.Coalesced)."""

    async def apply(s: AsyncSession, asks: list[Ask]) -> dict[Ask, Decision]:
        now = clock.now()
        ids = [a.delivery_id for a in asks]
        # one read: each delivery with its alert's status and its target's state as they are now
        query: Any = (
            select(
                col(Delivery.id),
                col(Delivery.state),
                col(Delivery.claimed_by),
                col(Delivery.purpose),
                col(Alert.status).label("alert_status"),
                col(Target.state).label("target_state"),
            )
            .join(Alert, col(Alert.id) == Delivery.alert_id)
            .join(Target, col(Target.id) == Delivery.target_id)
            .where(col(Delivery.id).in_(ids))
        )
        # an answer or a cancel at this moment waits for this transaction, or is seen by it
        locked = query.with_for_update(read=True, of=[ALERT, TARGET]) if lock else query
        rows = {r.id: r for r in await s.execute(locked)}
        decisions: dict[Ask, Decision] = {}
        for a in asks:
            r = rows.get(a.delivery_id)
            decisions[a] = (
                Decision(Verdict.LOST)
                if r is None
                else decide(
                    state=r.state,
                    claimed_by=r.claimed_by,
                    owner=a.owner,
                    purpose=r.purpose,
                    alert_status=r.alert_status,
                    target_state=r.target_state,
                )
            )
        mine = and_(
            T.c.id == bindparam("b_id"),
            T.c.claimed_by == bindparam("b_owner"),
            T.c.state == DeliveryState.SENDING.value,
        )
        conn = await s.connection()
        handed = [
            {"b_id": a.delivery_id, "b_owner": a.owner} for a, d in decisions.items() if d.verdict is Verdict.HANDED
        ]
        if handed:
            await conn.execute(update(T).where(mine).values(handed_at=now), handed)
        not_sent = [
            {"b_id": a.delivery_id, "b_owner": a.owner, "error": f"not sent: {d.why}"}
            for a, d in decisions.items()
            if d.verdict is Verdict.NOT_SENT
        ]
        if not_sent:
            await conn.execute(
                update(T).where(mine).values(state=DeliveryState.CANCELLED.value, error=bindparam("error")), not_sent
            )
        return decisions

    return apply
