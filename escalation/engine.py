"""The escalation engine: fires each due deadline exactly once and runs the plan's next step.

Deadlines live in the database. The engine claims a batch of due deadlines (escalation.claims); firing the batch is
then one transaction that flips each deadline from pending to fired only if its fence is still the one claimed,
re-reads the alerts and the targets (an answered, closed or cancelled one gets nothing), and writes the steps'
deliveries, the next deadlines and the audit entries. A claimer that stalled past its lease finds the fence moved
and writes nothing; a crash rolls the whole batch back and its deadlines are fired again later. What a fired
deadline does (resend the command, reach whom over what, wait how long, or nothing) is decided in escalation.steps
without the database; the engine reads what the decision needs and writes what it says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.issue.planning import Contact, load_contacts, person_deliveries
from alerting.model import deadlines
from alerting.model.clock import Clock
from alerting.model.deadlines import Claim
from alerting.model.domain import (
    AlertStatus,
    ChannelKind,
    DeadlineState,
    DeliveryState,
    Purpose,
    TargetKind,
    TargetState,
)
from alerting.model.plan import PlanSet
from alerting.people.liveness import ProcessRegistry
from alerting.store.db import Database, rowcount
from alerting.store.tables import Alert, Deadline, Delivery, OrgUnit, Target
from escalation import steps
from escalation.claims import DeadlineClaims
from escalation.recipients import contacts_for
from escalation.shared_tasks import shared_task_row, task_out_already

log = structlog.get_logger()

PENDING = DeadlineState.PENDING.value


@dataclass
class _Batch:
    """What the steps of one batch write, collected so each kind of row is one statement."""

    ran: int = 0
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    deadlines: list[dict[str, Any]] = field(default_factory=list)
    entries: list[audit.Entry] = field(default_factory=list)
    # (alert, task, people) -> the device target whose task this batch sends them (escalation.shared_tasks)
    tasks: dict[tuple[int, str, frozenset[str]], str] = field(default_factory=dict)


@dataclass
class Round:
    fired: int = 0
    failed: int = 0
    late: int = 0
    max_late_s: float = 0.0


class EscalationEngine:
    """`owner` names this process in claims and the audit. With a registry it is `<role>/<registry.owner>`, and
    the claims of other `<role>/...` runs the registry knows are dead are released without waiting."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        owner: str = "escalation",
        registry: ProcessRegistry | None = None,
        on_sent: Callable[[], None] = lambda: None,
        batch_size: int = 100,
        lease: timedelta = timedelta(minutes=1),
    ) -> None:
        self.db, self.clock, self.owner, self.on_sent = db, clock, owner, on_sent
        self.batch_size = batch_size
        self.claims = DeadlineClaims(
            db, clock, owner, registry, batch_size=batch_size, lease=lease, on_released=self.wake
        )
        self.tick_s = 0.05  # wall seconds between the starts of two rounds of the loop, unless a backlog is worked off
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # plans are snapshots that never change once an alert is out, so parsing one once per alert is enough
        self._plans: dict[int, PlanSet] = {}

    def wake(self) -> None:
        self._wake.set()

    # ---- firing -----------------------------------------------------------------------------

    async def run_due(self, limit: int | None = None) -> int:
        """Claim and fire every deadline that is due, oldest first. Returns how many steps ran."""
        return (await self._run_round(limit)).fired

    async def _run_round(self, limit: int | None = None) -> Round:
        if not self.claims.resumed:
            await self.claims.resume()
        size = limit or self.batch_size
        done = Round()
        while True:
            claims = await self.claims.claim(size)
            if not claims:
                break
            try:
                done.fired += await self.fire_batch(claims)
            except Exception:  # find the one that fails; the others must not wait behind it
                log.exception("escalation.batch_failed", deadlines=len(claims))
                for c in claims:
                    try:
                        done.fired += await self.fire_batch([c])
                    except Exception:  # it stays claimed and pending: the next round tries it again
                        log.exception("escalation.fire_failed", deadline_id=c.deadline_id)
                        done.failed += 1
            now = self.clock.now()
            for c in claims:
                late_s = (now - c.due_at).total_seconds()
                if late_s >= 1:
                    done.late += 1
                    done.max_late_s = max(done.max_late_s, late_s)
            if len(claims) < size or done.failed:
                break
        if done.late:
            log.warning("escalation.late", deadlines=done.late, max_late_s=round(done.max_late_s, 3))
        if done.fired:
            self.on_sent()
        return done

    async def fire(self, claim: Claim) -> bool:
        """Run the claimed deadline's step, if the claim still holds. True when a step ran."""
        return await self.fire_batch([claim]) == 1

    async def fire_batch(self, claims: Sequence[Claim]) -> int:
        """Run the steps of the claimed deadlines whose claims still hold, in one transaction: each deadline's
        flip to fired commits with its step's deliveries, next deadline and audit entries, or none of it does.
        Returns how many steps ran (a deadline of an answered target or an ended alert fires and runs none)."""
        if not claims:
            return 0
        now = self.clock.now()
        order = {c.deadline_id: i for i, c in enumerate(claims)}
        async with self.db.session() as s:
            fired = sorted(await deadlines.fire(s, self.owner, claims, now), key=lambda r: order[r.id])
            if len(fired) < len(claims):
                lost = sorted(set(order) - {r.id for r in fired})
                log.info("escalation.claims_lost", deadlines=lost)  # fired, cancelled or claimed again meanwhile
            if not fired:
                return 0
            alerts = await self._live_alerts(s, {r.alert_id for r in fired})
            targets = {
                t.id: t
                for t in (
                    await s.execute(select(Target).where(col(Target.id).in_([r.target_id for r in fired])))
                ).scalars()
            }
            # loaded into the session, so the per-target lookups below find them without a query
            units = {
                u.code: u
                for u in (
                    await s.execute(
                        select(OrgUnit).where(col(OrgUnit.code).in_({t.unit_code for t in targets.values()}))
                    )
                ).scalars()
            }
            contacts = await load_contacts(s, (t.person_id for t in targets.values() if t.person_id))
            batch = _Batch()
            for r in fired:
                target = targets[r.target_id]
                plans = alerts.get(r.alert_id)
                unit = units.get(target.unit_code)
                plan = plans.for_path(unit.path if unit else "") if plans is not None else None
                kind = TargetKind.PERSON if target.kind == TargetKind.PERSON.value else TargetKind.DEVICE
                decision = steps.on_deadline(plan, kind, r.step, target_open=target.state == TargetState.OPEN.value)
                late_s = max(0.0, (now - r.due_at).total_seconds())
                while isinstance(decision, steps.Resend | steps.Reach):
                    assert plan is not None
                    reached = await self._run_step(
                        s, batch, contacts, r.alert_id, target, decision, now, r.due_at, late_s
                    )
                    # nobody to reach at this step: the decision is to go straight on to the next one
                    decision = steps.next_step(plan, kind, decision.step_no, reached, now)
                if isinstance(decision, steps.Skip):
                    continue  # the alert ended or the target answered: the deadline fires and nothing goes out
                target.step = decision.step_no
                batch.ran += 1
                if isinstance(decision, steps.Wait):
                    batch.deadlines.append(
                        deadlines.pending(r.alert_id, target.id, decision.next_step_no, decision.due_at)
                    )
            if batch.deliveries:
                await s.execute(insert(Delivery), batch.deliveries)
            await deadlines.add(s, batch.deadlines)
            await audit.append(s, batch.entries)
        return batch.ran

    async def _live_alerts(self, s: AsyncSession, alert_ids: set[int]) -> dict[int, PlanSet]:
        """The plans of those alerts still active, read fresh for their status, parsed once per alert."""
        rows = await s.execute(
            select(col(Alert.id), col(Alert.status)).where(
                col(Alert.id).in_(alert_ids), col(Alert.status) == AlertStatus.ACTIVE.value
            )
        )
        active = {int(r.id) for r in rows}
        missing = [a for a in active if a not in self._plans]
        if missing:
            for a in (await s.execute(select(Alert).where(col(Alert.id).in_(missing)))).scalars():
                assert a.id is not None
                self._plans[a.id] = PlanSet.stored(a.plan)
        return {a: self._plans[a] for a in active}

    async def _run_step(
        self,
        s: AsyncSession,
        batch: _Batch,
        contacts: dict[str, Contact],
        alert_id: int,
        target: Target,
        action: steps.Action,
        now: datetime,
        due_at: datetime,
        late_s: float,
    ) -> bool:
        """Do what the step decided, collecting its rows and audit entries in `batch`. True when it reached
        anyone: a command re-queued, or a delivery written."""
        step = action.step
        data: dict[str, Any] = {
            "step": action.step_no,
            "who": step.who.value,
            "channels": [c.value for c in step.channels],
            "due_at": due_at.isoformat(),
            "late_by_s": round(late_s, 3),
        }

        def record(kind: str, details: dict[str, Any]) -> None:
            batch.entries.append(audit.Entry(kind, self.owner, now, alert_id, subject=target.id, data=details))

        if isinstance(action, steps.Resend):
            resent = await _resend_device_command(s, target, action.channels, now)
            data["resent"] = resent
            record("target.escalated", data)
            return resent > 0
        if action.device_failed:
            # the device never confirmed after its resends: it counts as failed, and people stand in for it
            record("device.failed", {"device": target.device_id, "step": action.step_no})
        person_ids = await contacts_for(s, action.who, target, now)
        unknown = [p for p in person_ids if p not in contacts]
        if unknown:
            contacts.update(await load_contacts(s, unknown))
        level = self._plans[alert_id].default.level
        if step.task is not None and target.kind == TargetKind.DEVICE.value and person_ids:
            key = (alert_id, step.task.value, frozenset(person_ids))
            shared = batch.tasks.get(key) or await task_out_already(
                s, alert_id, target.unit_code, step.task.value, person_ids
            )
            if shared is not None:
                batch.deliveries.append(
                    shared_task_row(
                        alert_id, target.id, action.step_no, step.task.value, person_ids[0], shared, now, level
                    )
                )
                data.update(contacts=person_ids, deliveries=0, task=step.task.value, shared_task_of=shared)
                record("target.escalated", data)
                return True
        rows = person_deliveries(
            alert_id, target.id, action.step_no, step, [contacts[p] for p in person_ids if p in contacts], now, level
        )
        if rows and step.task is not None and target.kind == TargetKind.DEVICE.value:
            batch.tasks[(alert_id, step.task.value, frozenset(person_ids))] = target.id
        batch.deliveries += rows
        data["contacts"] = person_ids
        data["deliveries"] = len(rows)
        record("target.escalated" if rows else "escalation.nobody", data)
        return bool(rows)

    # ---- running --------------------------------------------------------------------------

    def start(
        self, poll_s: float = 1.0, *, hold: Callable[[], Awaitable[None]] | None = None, grace_s: float = 0.0
    ) -> None:
        """Run the loop. With `hold`, no deadline fires until it returns or `grace_s` wall seconds have passed."""
        self._task = asyncio.create_task(self._loop(poll_s, hold, grace_s), name="escalation")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self, poll_s: float, hold: Callable[[], Awaitable[None]] | None, grace_s: float) -> None:
        """Sleep until the next deadline is due (at most `poll_s`, so deadlines other processes add are seen),
        or until woken; with nothing due a round is one indexed read."""
        if hold is not None:
            await self._hold_at_start(hold, grace_s)
        loop = asyncio.get_running_loop()
        last_round = float("-inf")
        while True:
            self._wake.clear()  # before looking, so a wake that comes while we look is not lost
            delay: float | None = None
            try:
                await self.claims.release_stale_claims()
                due = await self.claims.next_due()
                if due is not None and due <= self.clock.now():
                    gap = self.tick_s - (loop.time() - last_round)
                    if gap > 0:  # deadlines falling due a few ms apart gather into one batch, not a round each
                        await asyncio.sleep(gap)
                    last_round = loop.time()
                    done = await self._run_round()
                    if done.failed:
                        delay = poll_s  # do not spin on a deadline that cannot fire right now
                    else:
                        continue  # more may have come due meanwhile
                elif due is not None:
                    delay = (due - self.clock.now()).total_seconds()
            except Exception:  # the deadlines stay in the database; the next round picks them up
                log.exception("escalation.round_failed")
                delay = poll_s
            await self._nap(delay, poll_s)

    async def _hold_at_start(self, hold: Callable[[], Awaitable[None]], grace_s: float) -> None:
        """Judge nobody before reading what was kept for us: after a restart, the acks the broker queued while
        the engine was down come in first, so a siren that sounded is not written off on a deadline that fell
        due meanwhile. Audited when it held back deadlines already due, or when the grace ran out."""
        loop = asyncio.get_running_loop()
        began, at = loop.time(), self.clock.now()
        caught_up = True
        try:
            async with asyncio.timeout(grace_s):
                await hold()
        except TimeoutError:
            caught_up = False
        except Exception:
            log.exception("escalation.hold_failed")
            caught_up = False
        waited_s = round(loop.time() - began, 3)
        async with self.db.session() as s:
            overdue = await s.scalar(
                select(func.count()).where(col(Deadline.state) == PENDING, col(Deadline.due_at) <= at)
            )
            if overdue or not caught_up:
                await audit.record(
                    s,
                    "escalation.held_at_start",
                    actor=self.owner,
                    at=self.clock.now(),
                    data={"waited_s": waited_s, "grace_s": grace_s, "caught_up": caught_up, "overdue": overdue},
                )
        (log.info if caught_up else log.warning)(
            "escalation.held_at_start", waited_s=waited_s, caught_up=caught_up, overdue=overdue
        )

    async def _nap(self, delay: float | None, poll_s: float) -> None:
        """Until woken, `delay` seconds of the engine's clock have passed, or `poll_s` wall seconds."""
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(self._wake.wait())]
        if delay is not None:
            waiters.append(asyncio.create_task(self.clock.sleep(max(0.0, delay))))
        try:
            await asyncio.wait(waiters, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*waiters, return_exceptions=True)


async def _resend_device_command(
    s: AsyncSession, target: Target, channels: Sequence[ChannelKind], now: datetime
) -> int:
    """Send the same command again (same delivery, so the same command_id or request_id): a device or broadcast
    gateway that already has it treats it as the same one and only confirms again."""
    result = await s.execute(
        update(Delivery)
        .where(
            col(Delivery.alert_id) == target.alert_id,  # with the target: the (alert_id, target_id) index
            col(Delivery.target_id) == target.id,
            col(Delivery.channel).in_([c.value for c in channels]),
            col(Delivery.purpose) == Purpose.WARN.value,
            col(Delivery.state).in_(
                [DeliveryState.SENT.value, DeliveryState.DELIVERED.value, DeliveryState.FAILED.value]
            ),
        )
        .values(state=DeliveryState.PENDING.value, next_attempt_at=now, claimed_by=None)
    )
    return rowcount(result)
