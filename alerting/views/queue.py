"""The send queue as a duty officer reads it: per channel, what waits, for how long, and what is at the provider.

Read-only. Deliveries are grouped by the band of their queue priority (issue.planning.queue_priority): first waves
and calls for help, escalations and calls again, lift notices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlmodel import col

from alerting.model.clock import utc
from alerting.model.domain import DeliveryState
from alerting.store.db import Database
from alerting.store.tables import Delivery

BAND_LABEL = {0: "首轮/求助", 1: "升级/重呼", 2: "解除通知", 3: "批量"}


@dataclass(frozen=True)
class QueueLine:
    channel: str
    band: str
    due: int  # pending and due now
    later: int  # pending, due later (retries, waits)
    claimed: int  # claimed by a dispatcher, not yet handed over
    at_provider: int  # handed over, outcome not yet recorded
    oldest_due_s: float | None  # how long the oldest due delivery has waited


async def queue_lines(db: Database, now: datetime) -> list[QueueLine]:
    # one parameter for both uses, so PostgreSQL sees the grouped expression and the selected one as the same
    is_due = col(Delivery.next_attempt_at) <= bindparam("now", now)
    async with db.session() as s:
        rows = (
            await s.execute(
                select(
                    col(Delivery.channel),
                    col(Delivery.priority),
                    col(Delivery.state),
                    is_due,
                    col(Delivery.handed_at).is_not(None),
                    func.count(),
                    func.min(col(Delivery.next_attempt_at)),
                )
                .where(col(Delivery.state).in_([DeliveryState.PENDING.value, DeliveryState.SENDING.value]))
                .group_by(
                    col(Delivery.channel),
                    col(Delivery.priority),
                    col(Delivery.state),
                    is_due,
                    col(Delivery.handed_at).is_not(None),
                )
            )
        ).all()
    tally: dict[tuple[str, str], dict[str, float | int | None]] = {}
    for channel, priority, state, due_now, handed, count, oldest in rows:
        line = tally.setdefault(
            (channel, BAND_LABEL.get(priority // 10, str(priority // 10))),
            {"due": 0, "later": 0, "claimed": 0, "at_provider": 0, "oldest": None},
        )
        if state == DeliveryState.PENDING.value and due_now:
            line["due"] = int(line["due"] or 0) + count
            waited = (now - utc(oldest)).total_seconds()
            line["oldest"] = max(float(line["oldest"] or 0.0), waited)
        elif state == DeliveryState.PENDING.value:
            line["later"] = int(line["later"] or 0) + count
        elif handed:
            line["at_provider"] = int(line["at_provider"] or 0) + count
        else:
            line["claimed"] = int(line["claimed"] or 0) + count
    return [
        QueueLine(
            channel,
            band,
            int(v["due"] or 0),
            int(v["later"] or 0),
            int(v["claimed"] or 0),
            int(v["at_provider"] or 0),
            None if v["oldest"] is None else float(v["oldest"]),
        )
        for (channel, band), v in sorted(tally.items())
    ]
