"""The escalation engine: fires each due deadline exactly once and runs the plan's next step.

Deadlines live in the database. Firing is one transaction that first flips the deadline from
pending to fired (a conditional UPDATE, so of two engines only one wins), then re-reads the alert
and the target: an answered, closed or cancelled one gets nothing. A crash rolls the whole step
back, and the deadline is fired again on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting import audit
from alerting.alerts import plan_of
from alerting.clock import Clock
from alerting.domain import AlertStatus, ChannelKind, DeadlineState, DeliveryState, Purpose, TargetKind, TargetState
from alerting.ids import new_id
from alerting.plan import Step, Who
from alerting.planning import load_contacts, person_deliveries
from alerting.store.db import Database
from alerting.store.tables import Alert, Deadline, Delivery, OrgUnit, Target
from escalation.recipients import contacts_for

log = structlog.get_logger()


class EscalationEngine:
    def __init__(
        self, db: Database, clock: Clock, *, owner: str = "escalation", on_sent: Callable[[], None] = lambda: None
    ) -> None:
        self.db, self.clock, self.owner, self.on_sent = db, clock, owner, on_sent
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def next_due(self) -> datetime | None:
        async with self.db.session() as s:
            due: datetime | None = await s.scalar(
                select(func.min(Deadline.due_at)).where(col(Deadline.state) == DeadlineState.PENDING.value)
            )
        return due

    async def run_due(self, limit: int = 500) -> int:
        """Fire every deadline that is due, oldest first. Returns how many steps ran."""
        fired = 0
        while True:
            now = self.clock.now()
            async with self.db.session() as s:
                ids = list(
                    (
                        await s.execute(
                            select(col(Deadline.id))
                            .where(col(Deadline.state) == DeadlineState.PENDING.value, col(Deadline.due_at) <= now)
                            .order_by(col(Deadline.due_at), col(Deadline.step))
                            .limit(limit)
                        )
                    ).scalars()
                )
            for deadline_id in ids:
                if await self.fire(deadline_id):
                    fired += 1
            if len(ids) < limit:
                break
        if fired:
            self.on_sent()
        return fired

    async def fire(self, deadline_id: str) -> bool:
        now = self.clock.now()
        async with self.db.session() as s:
            won = await s.execute(
                update(Deadline)
                .where(col(Deadline.id) == deadline_id, col(Deadline.state) == DeadlineState.PENDING.value)
                .values(
                    state=DeadlineState.FIRED.value, fired_at=now, fence=col(Deadline.fence) + 1, claimed_by=self.owner
                )
            )
            if cast(CursorResult[Any], won).rowcount != 1:
                return False  # another engine fired it, or it was cancelled meanwhile
            deadline = await s.get(Deadline, deadline_id)
            assert deadline is not None
            alert = await s.get(Alert, deadline.alert_id)
            target = await s.get(Target, deadline.target_id)
            assert alert is not None
            assert target is not None
            if alert.status != AlertStatus.ACTIVE.value or target.state != TargetState.OPEN.value:
                return False
            unit = await s.get(OrgUnit, target.unit_code)
            plan = plan_of(alert).for_path(unit.path if unit else "")
            steps = plan.person_steps if target.kind == TargetKind.PERSON.value else plan.device_steps
            late_s = max(0.0, (now - deadline.due_at).total_seconds())
            step_no = deadline.step
            while step_no < len(steps):
                reached = await self._run_step(s, alert, target, step_no, steps[step_no], now, late_s)
                if reached or step_no + 1 >= len(steps):
                    break
                step_no += 1  # nobody to reach at this step: go straight on to the next one
            target.step = step_no
            s.add(target)
            if step_no + 1 < len(steps):
                await s.execute(
                    insert(Deadline),
                    [
                        {
                            "id": new_id(),
                            "alert_id": alert.id,
                            "target_id": target.id,
                            "step": step_no + 1,
                            "due_at": now + timedelta(seconds=steps[step_no].wait_s),
                            "state": DeadlineState.PENDING.value,
                            "fence": 0,
                        }
                    ],
                )
        return True

    async def _run_step(
        self, s: AsyncSession, alert: Alert, target: Target, step_no: int, step: Step, now: datetime, late_s: float
    ) -> bool:
        assert alert.id is not None
        data: dict[str, Any] = {
            "step": step_no,
            "who": step.who.value,
            "channels": [c.value for c in step.channels],
            "late_by_s": round(late_s, 3),
        }
        if target.kind == TargetKind.DEVICE.value and step.who is Who.TARGET:
            resent = await _resend_device_command(s, target, step.channels, now)
            data["resent"] = resent
            await audit.record(
                s, "target.escalated", actor=self.owner, at=now, alert_id=alert.id, subject=target.id, data=data
            )
            return resent > 0
        if target.kind == TargetKind.DEVICE.value:
            # the device never confirmed after its resends: it counts as failed, and people stand in for it
            await audit.record(
                s,
                "device.failed",
                actor=self.owner,
                at=now,
                alert_id=alert.id,
                subject=target.id,
                data={"device": target.device_id, "step": step_no},
            )
        person_ids = await contacts_for(s, step.who, target, now)
        contacts = await load_contacts(s, person_ids)
        rows = person_deliveries(
            alert.id, target.id, step_no, step, [contacts[p] for p in person_ids if p in contacts], now
        )
        if rows:
            await s.execute(insert(Delivery), rows)
        data["contacts"] = person_ids
        data["deliveries"] = len(rows)
        kind = "target.escalated" if rows else "escalation.nobody"
        await audit.record(s, kind, actor=self.owner, at=now, alert_id=alert.id, subject=target.id, data=data)
        if late_s >= 1:
            log.warning("escalation.late", alert_id=alert.id, target_id=target.id, step=step_no, late_s=late_s)
        return bool(rows)

    # ---- running --------------------------------------------------------------------------

    def start(self, poll_s: float = 1.0) -> None:
        self._task = asyncio.create_task(self._loop(poll_s), name="escalation")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self, poll_s: float) -> None:
        while True:
            try:
                await self.run_due()
            except Exception:  # the deadlines stay in the database; the next round picks them up
                log.exception("escalation.round_failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_s)


async def _resend_device_command(
    s: AsyncSession, target: Target, channels: Sequence[ChannelKind], now: datetime
) -> int:
    """Send the same command again (same delivery, so the same command_id or request_id): a device or broadcast
    gateway that already has it treats it as the same one and only confirms again."""
    result = await s.execute(
        update(Delivery)
        .where(
            col(Delivery.target_id) == target.id,
            col(Delivery.channel).in_([c.value for c in channels]),
            col(Delivery.purpose) == Purpose.WARN.value,
            col(Delivery.state).in_(
                [DeliveryState.SENT.value, DeliveryState.DELIVERED.value, DeliveryState.FAILED.value]
            ),
        )
        .values(state=DeliveryState.PENDING.value, next_attempt_at=now, claimed_by=None)
    )
    return cast(CursorResult[Any], result).rowcount
