"""What happened to a hand-over, and writing it down: one pure decision per outcome, one set-based write per batch.

An outcome is recorded as soon as its send returns (the writer group-commits them every few milliseconds), so a
crash can only repeat what was at the provider at that instant. A provider report that came back before its send
was recorded has already moved the row (see answer.reports): the outcome then fills in the provider's id and the
attempt, and leaves the better state that report set.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.deliver.port import DeliveryError, Receipt
from alerting.deliver.retry import RetryPolicy
from alerting.model import deadlines
from alerting.model.clock import Clock
from alerting.model.domain import DeliveryState
from alerting.store.tables import Delivery, Target, core_table

T = core_table(Delivery)

LIVE_STATES = [
    DeliveryState.PENDING.value,
    DeliveryState.SENDING.value,
    DeliveryState.SENT.value,
    DeliveryState.DELIVERED.value,
]


@dataclass(frozen=True, eq=False)  # one outcome per send, told apart by identity
class Outcome:
    delivery: Delivery
    owner: str
    receipt: Receipt | None = None
    error: DeliveryError | None = None
    # not handed over at all, and no attempt spent: the recipient's own limit or an open circuit; try then
    later_s: float | None = None


@dataclass
class Change:
    """What one outcome does to its row, decided without the database."""

    kind: str  # sent | retry | failed | later
    values: dict[str, Any]
    audit_kind: str | None = None
    audit_data: dict[str, Any] = field(default_factory=dict)


def decide(o: Outcome, now: datetime, retry: RetryPolicy, rng: random.Random) -> Change:
    d = o.delivery
    attempts = d.attempts + 1
    if o.later_s is not None:
        return Change("later", {"next_attempt_at": now + timedelta(seconds=o.later_s)})
    if o.receipt is not None:
        r = o.receipt
        return Change(
            "sent",
            {
                "attempts": attempts,
                "sent_at": now,
                "state": (DeliveryState.DELIVERED if r.delivered else DeliveryState.SENT).value,
                "delivered_at": now if r.delivered else None,
                "provider": r.provider,
                "provider_id": r.provider_id,
                "sandbox": r.sandbox,
            },
            "delivery.sent",
            {
                "channel": d.channel,
                "target": d.target_id,
                "person": d.person_id,
                "device": d.device_id,
                "step": d.step,
                "purpose": d.purpose,
                "provider": r.provider,
                "provider_id": r.provider_id,
                "sandbox": r.sandbox,
                "attempt": attempts,
            },
        )
    err = o.error
    assert err is not None
    data: dict[str, Any] = {"channel": d.channel, "error": str(err), "code": err.code, "attempt": attempts}
    if err.throttled:  # the provider only asked us to slow down: the attempt budget stays as it was
        due = now + timedelta(seconds=retry.throttle_delay(err.retry_after, rng))
        data = {**data, "attempt": d.attempts, "throttled": True}
        return Change(
            "retry",
            {"attempts": d.attempts, "next_attempt_at": due, "error": error_text(err)},
            "delivery.retrying",
            {**data, "next_attempt_at": due.isoformat()},
        )
    if err.retryable and attempts < retry.max_attempts:
        due = now + timedelta(seconds=retry.delay(attempts, err.retry_after, rng))
        return Change(
            "retry",
            {"attempts": attempts, "next_attempt_at": due, "error": error_text(err)},
            "delivery.retrying",
            {**data, "next_attempt_at": due.isoformat()},
        )
    return Change("failed", {"attempts": attempts, "error": error_text(err)}, "delivery.failed", data)


def error_text(err: DeliveryError) -> str:
    return f"{err.code}: {err}" if err.code else str(err)


def record_job(
    clock: Clock, retry: Callable[[], RetryPolicy], rng: random.Random
) -> Callable[[AsyncSession, list[Outcome]], Awaitable[dict[Outcome, bool]]]:
    """Writes a batch of outcomes and their audit entries; says for each failure whether it moved its target on."""

    async def apply(s: AsyncSession, outcomes: list[Outcome]) -> dict[Outcome, bool]:
        now = clock.now()
        policy = retry()
        changes = [(o, decide(o, now, policy, rng)) for o in outcomes]
        conn = await s.connection()
        for kind in ("sent", "retry", "failed", "later"):
            rows = [{"b_id": o.delivery.id, "b_owner": o.owner, **c.values} for o, c in changes if c.kind == kind]
            if rows:
                await conn.execute(_UPDATES[kind], rows)
        failed = [o.delivery for o, c in changes if c.kind == "failed"]
        advanced = await advance_exhausted(s, failed, now)
        entries = [
            audit.Entry(c.audit_kind, o.owner, now, o.delivery.alert_id, subject=o.delivery.id, data=c.audit_data)
            for o, c in changes
            if c.audit_kind
        ]
        entries += [
            audit.Entry(
                "escalation.advanced",
                outcomes[0].owner,
                now,
                alert_id,
                subject=target_id,
                data={"reason": "every channel of this step failed permanently"},
            )
            for alert_id, target_id in advanced
        ]
        await audit.append(s, entries)
        moved = {t for _, t in advanced}
        return {o: o.delivery.target_id in moved for o in outcomes}

    return apply


_CLAIMED = and_(T.c.id == bindparam("b_id"), T.c.claimed_by == bindparam("b_owner"))
_IN_FLIGHT = and_(_CLAIMED, T.c.state == DeliveryState.SENDING.value)
_UPDATES = {
    # a report may have come back before this outcome (it moved the row already): keep its state, fill in the rest
    "sent": update(T)
    .where(_CLAIMED, T.c.state != DeliveryState.PENDING.value)
    .values(
        state=case((T.c.state == DeliveryState.SENDING.value, bindparam("state")), else_=T.c.state),
        attempts=bindparam("attempts"),
        sent_at=bindparam("sent_at"),
        delivered_at=func.coalesce(T.c.delivered_at, bindparam("delivered_at")),
        provider=bindparam("provider"),
        provider_id=bindparam("provider_id"),
        sandbox=bindparam("sandbox"),
        error=case((T.c.state == DeliveryState.SENDING.value, None), else_=T.c.error),
    ),
    "retry": update(T)
    .where(_IN_FLIGHT)
    .values(
        state=DeliveryState.PENDING.value,
        claimed_by=None,
        handed_at=None,
        attempts=bindparam("attempts"),
        next_attempt_at=bindparam("next_attempt_at"),
        error=bindparam("error"),
    ),
    "failed": update(T)
    .where(_IN_FLIGHT)
    .values(state=DeliveryState.FAILED.value, attempts=bindparam("attempts"), error=bindparam("error")),
    "later": update(T)
    .where(_IN_FLIGHT)
    .values(
        state=DeliveryState.PENDING.value, claimed_by=None, handed_at=None, next_attempt_at=bindparam("next_attempt_at")
    ),
}


async def advance_exhausted(s: AsyncSession, failed: Sequence[Delivery], now: datetime) -> list[tuple[int, str]]:
    """Targets whose every delivery of this step has failed for good: their next step is due now, not later."""
    advanced: list[tuple[int, str]] = []
    # Two processes failing a target's last two deliveries at once would each count the other's as still trying,
    # and neither would advance the target. Locked (in one order, so two writers cannot deadlock), the later one's
    # count sees the earlier one's commit. SQLite has a single writer and leaves FOR UPDATE out.
    targets = sorted({d.target_id for d in failed})
    if targets:
        await s.execute(
            select(col(Target.id)).where(col(Target.id).in_(targets)).order_by(col(Target.id)).with_for_update()
        )
    for d in failed:
        still_trying = await s.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                col(Delivery.alert_id) == d.alert_id,  # with the target: the (alert, target) index, no scan
                col(Delivery.target_id) == d.target_id,
                col(Delivery.step) == d.step,
                col(Delivery.state).in_(LIVE_STATES),
            )
        )
        if still_trying:
            continue
        if await deadlines.bring_forward(s, d.target_id, now):
            advanced.append((d.alert_id, d.target_id))
    return advanced
