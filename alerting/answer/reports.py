"""Provider reports (delivered, undelivered, no answer, a siren's "received"), applied once each, in any order.

A report can come back before the engine has written its send: the delivery row was committed before the
provider was called, so the report finds it (by our delivery id, which every adapter's callback carries, or by the
provider's id) and applies. The order of reports does not matter: a delivery moves only to a state that says more
(model.domain.merged_state: delivered > failed > sent). Every distinct report is kept as an audit event, including
a late, lesser one that changes nothing; an identical report posted again (a provider's retry, or a replay) is
taken in once, by its key.

Reports come in bursts (two callbacks per SMS), so they are applied in batches: whatever has arrived when the
group-committing writer gets to them shares a handful of statements and one commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from alerting.answer.events import StatusUpdate
from alerting.answer.seen import new_keys
from alerting.audit import chain as audit
from alerting.model.domain import ChannelKind, DeliveryState, merged_state
from alerting.store.db import Database
from alerting.store.tables import Delivery, core_table

log = structlog.get_logger()

T = core_table(Delivery)


@dataclass(frozen=True, eq=False)  # one per arrival, told apart by identity (the event itself holds a dict)
class Report:
    event: StatusUpdate


def report_key(event: StatusUpdate) -> str:
    """The same report twice has the same key: channel, delivery (or provider id) and what it says."""
    said = "delivered" if event.delivered else f"failed:{event.error or ''}"
    status = str(event.detail.get("status", ""))
    return f"report:{event.channel.value}:{event.delivery_id or event.provider_id}:{said}:{status}"[:200]


def apply_reports_job(db: Database) -> Callable[[AsyncSession, list[Report]], Awaitable[dict[Report, bool]]]:
    """Applies a batch of reports in one transaction; says for each whether it changed its delivery."""

    async def apply(s: AsyncSession, reports: list[Report]) -> dict[Report, bool]:
        changed: dict[Report, bool] = dict.fromkeys(reports, False)
        fresh = await _first_time(s, db, reports)
        if not fresh:
            return changed
        rows = await _deliveries(s, [r.event for r in fresh])
        current = {d: row.state for d, row in rows.items()}
        read = dict(current)  # what each row said when this batch read it: the updates are conditional on it
        by_provider = {row.provider_id: d for d, row in rows.items() if row.provider_id}
        moved: dict[str, StatusUpdate] = {}  # delivery -> the report that set its final state in this batch
        entries: list[audit.Entry] = []
        for r in fresh:
            e = r.event
            delivery_id = e.delivery_id if e.delivery_id in rows else by_provider.get(e.provider_id or "")
            if delivery_id is None or rows[delivery_id].channel not in (e.channel.value, ChannelKind.MANUAL.value):
                # a manual task travels over SMS or WeCom, and that carrier reports on it
                log.warning("report.unknown_delivery", channel=e.channel.value, delivery_id=e.delivery_id)
                continue
            if e.device_id is not None and rows[delivery_id].device_id != e.device_id:
                log.warning("report.other_device", device_id=e.device_id, delivery_id=delivery_id)
                continue
            incoming = DeliveryState.DELIVERED if e.delivered else DeliveryState.FAILED
            before = current[delivery_id]
            moved_to = merged_state(before, incoming)
            if moved_to is not None:
                current[delivery_id] = moved_to.value
                moved[delivery_id] = e  # states only rise, so the last to move it says where it ends
                changed[r] = True
            entries.append(
                audit.Entry(
                    "delivery.delivered" if e.delivered else "delivery.undelivered",
                    e.channel.value,
                    e.at,
                    rows[delivery_id].alert_id,
                    subject=delivery_id,
                    data={
                        "error": e.error,
                        **dict(e.detail),
                        **({} if moved_to else {"applied": False, "kept": before}),
                    },
                )
            )
        await _write(s, moved, read)
        await audit.append(s, entries)
        return changed

    return apply


async def _first_time(s: AsyncSession, db: Database, reports: list[Report]) -> list[Report]:
    """The reports not taken in before (by any process), each key once, in arrival order."""
    first: dict[str, Report] = {}
    for r in reports:
        first.setdefault(report_key(r.event), r)
    new = await new_keys(s, db, {k: r.event.at for k, r in first.items()})
    return [r for k, r in first.items() if k in new]


async def _deliveries(s: AsyncSession, events: list[StatusUpdate]) -> dict[str, Any]:
    """The deliveries these reports are about, by id: alert_id, state, channel, provider_id, device_id."""
    ids = {e.delivery_id for e in events if e.delivery_id}
    provider_ids = {e.provider_id for e in events if not e.delivery_id and e.provider_id}
    found = await s.execute(
        select(T.c.id, T.c.alert_id, T.c.state, T.c.channel, T.c.provider_id, T.c.device_id).where(
            or_(T.c.id.in_(ids), T.c.provider_id.in_(provider_ids))
        )
    )
    return {r.id: r for r in found}


async def _write(s: AsyncSession, moved: dict[str, StatusUpdate], read: dict[str, str]) -> None:
    """One conditional update per moved delivery (on the state this batch read), with the report that moved it."""
    delivered: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for d, e in moved.items():
        if e.delivered:
            delivered.append({"b_id": d, "b_was": read[d], "b_at": e.at})
        else:
            failed.append({"b_id": d, "b_was": read[d], "b_error": e.error or "failed"})
    mine = and_(T.c.id == bindparam("b_id"), T.c.state == bindparam("b_was"))
    conn = await s.connection()
    if delivered:
        await conn.execute(
            update(T).where(mine).values(state=DeliveryState.DELIVERED.value, delivered_at=bindparam("b_at")),
            delivered,
        )
    if failed:
        await conn.execute(
            update(T).where(mine).values(state=DeliveryState.FAILED.value, error=bindparam("b_error")), failed
        )
