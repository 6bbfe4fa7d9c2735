"""Issuing, reading and lifting alerts. Everything an alert needs is written before anything is sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.issue import stopping
from alerting.issue.planning import (
    DEVICE_CHANNEL,
    Page,
    PlannedTarget,
    channels_for,
    delivery_row,
    device_deliveries,
    load_contacts,
    person_deliveries,
    resolve_critical,
    resolve_grid_workers,
    target_row,
)
from alerting.model import deadlines as deadline_rows
from alerting.model.access import Forbidden
from alerting.model.clock import Clock, utc
from alerting.model.deliveries import handed_over
from alerting.model.domain import (
    PERSON_CHANNELS,
    AlertStatus,
    ChannelKind,
    DeliveryState,
    DeviceKind,
    Level,
    Purpose,
    TargetKind,
    TargetState,
)
from alerting.model.plain_text import FilledLine, FilledText, Line, Text
from alerting.model.plan import Planner, PlanSet, Who
from alerting.store.db import Database, insert_rows
from alerting.store.tables import Alert, Delivery, Device, OrgUnit, Target

if TYPE_CHECKING:
    from alerting.issue.once import RequestKey

log = structlog.get_logger()

FIRST_GRID_WORKERS = 500  # with the critical targets in the first commit: a few hundred sends to start on at once
PAGE = 1000  # grid workers per later transaction: short, so the dispatcher's writes are not held up
FIRST_PAGE = Page(0)  # resume_planning starts from the beginning and skips whoever is planned already
ANSWERED_STATES = (TargetState.ANSWERED.value, TargetState.ANSWERED_FOR.value)

# What a caller writes in the same transaction as the alert it is about, given that alert's id: a CAP message's
# record commits with the alert it issued, updated or lifted, or neither does (a crash between the two would
# leave a message taken that issued nothing, or an alert no later Cancel can name).
Within = Callable[[AsyncSession, int], Awaitable[None]]


class AlertRequest(BaseModel):
    level: Level
    hazard: FilledLine = Field(min_length=1, max_length=32, examples=["暴雨"])
    title: FilledLine = Field(min_length=1, max_length=200)
    text: FilledText = Field(min_length=1, max_length=2000)
    instructions: Text = Field(default="", max_length=1000)
    units: list[Line] = Field(min_length=1, description="unit codes; the alert reaches their whole subtree")
    exercise: bool = False

    @field_validator("units")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(c.strip() for c in v))


class AlertChange(BaseModel):
    """What an update changes; what it leaves out stays as it was."""

    level: Level | None = None
    title: FilledLine | None = Field(default=None, max_length=200)
    text: FilledText | None = Field(default=None, max_length=2000)
    instructions: Text | None = Field(default=None, max_length=1000)


class AlertNotFound(LookupError):
    def __init__(self, alert_id: int) -> None:
        super().__init__(f"no alert {alert_id}")


class AlertNotActive(ValueError):
    pass


class AlertUnchanged(ValueError):
    """An update that changes nothing would only call everyone still silent again under a new number."""


@dataclass(frozen=True)
class Issued:
    alert_id: int
    targets: int
    deliveries: int
    by_channel: dict[str, int] = field(default_factory=dict)
    unreachable: int = 0

    def plus(self, more: Issued) -> Issued:
        """This and a later page of the same alert, added up."""
        return Issued(
            self.alert_id,
            self.targets + more.targets,
            self.deliveries + more.deliveries,
            dict(Counter(self.by_channel) + Counter(more.by_channel)),
            self.unreachable + more.unreachable,
        )


@dataclass(frozen=True)
class _Written:
    targets: int
    deliveries: int
    by_channel: dict[str, int]
    unreachable: list[str]
    carried: int


@dataclass(frozen=True)
class CalledAgain:
    alert_id: int
    targets: int  # silent recipients a fresh call went to
    deliveries: int
    by_channel: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # answered, closed, or already waiting in the queue on every channel


@dataclass(frozen=True)
class Lifted:
    alert_id: int
    cancelled_deliveries: int
    lift_notices: int


class AlertService:
    def __init__(self, db: Database, clock: Clock, planner: Planner, wake: Callable[[], None] = lambda: None) -> None:
        self.db, self.clock, self.planner, self.wake = db, clock, planner, wake

    async def trigger(
        self, req: AlertRequest, *, actor: str, once: RequestKey | None = None, within: Within | None = None
    ) -> Issued:
        """Issue an alert. Its critical first wave (sirens, broadcast zones, responsible persons above the grid and
        the first grid workers) is committed first and starts going out at once; the other grid workers follow
        in pages of their own transactions. A crash between pages loses nothing: `resume_planning` goes on.

        `once`: an Idempotency-Key, taken in the alert's own transaction (issue.once); KeyTaken when it is held.
        `within`: written in that first transaction too."""
        now = self.clock.now()
        async with self.db.session() as s:
            if once is not None:
                await once.claim(s, now)  # before anything else: a twin sent at the same moment waits here
            issued, page = await self._issue(s, req, actor=actor, now=now)
            if once is not None:
                await once.settle(s, issued)
            if within is not None:
                await within(s, issued.alert_id)
        self.wake()
        paged = page is not None
        issued = await self._plan_rest(issued, page, now)
        if once is not None and paged:
            async with self.db.session() as s:
                await once.settle(s, issued)
        log.info("alert.triggered", alert_id=issued.alert_id, targets=issued.targets, deliveries=issued.deliveries)
        return issued

    async def resume_planning(self) -> int:
        """Finish planning what a process that died mid-issue left: the grid workers of its alerts still
        unplanned, and what an alert it replaced or lifted still had going. Safe to run anywhere, any time: whoever
        is already a target is not planned again, and what is stopped stays stopped."""
        for alert_id in await stopping.unfinished(self.db):
            await self._stop(alert_id, "alert ended (stopped after a restart)", actor="engine/resume")
        async with self.db.session() as s:
            rows = await s.execute(
                select(col(Alert.id), col(Alert.created_at)).where(
                    col(Alert.planning_pending), col(Alert.status) == AlertStatus.ACTIVE.value
                )
            )
            pending = [(alert_id, at) for alert_id, at in rows if alert_id is not None]
        for alert_id, created_at in pending:
            page: Page | None = FIRST_PAGE
            while page is not None:
                _, page = await self._plan_page(alert_id, page, utc(created_at))
        if pending:
            self.wake()
        return len(pending)

    async def _plan_page(self, alert_id: int, page: Page, now: datetime) -> tuple[Issued, Page | None]:
        """One page of grid workers for an alert still being planned, in its own transaction."""
        async with self.db.session() as s:
            alert = await _locked(s, alert_id)
            if alert.status != AlertStatus.ACTIVE.value or not alert.planning_pending:
                alert.planning_pending = False
                return Issued(alert_id, 0, 0), None  # lifted or replaced meanwhile: nobody else is to be called
            plans = PlanSet.stored(alert.plan)
            after = None if page is FIRST_PAGE else page
            targets, nxt = await resolve_grid_workers(s, alert.target_units, after=after, seen=set(), limit=PAGE)
            planned = set(
                (
                    await s.execute(
                        select(col(Target.person_id)).where(
                            col(Target.alert_id) == alert_id,
                            col(Target.person_id).in_([t.person_id for t in targets]),
                        )
                    )
                ).scalars()
            )
            targets = [t for t in targets if t.person_id not in planned]
            written = await self._write_targets(
                s, alert, plans, targets, now, await _carried_answers(s, alert, targets)
            )
            entries = _unreachable_entries(alert_id, now, written.unreachable)
            if nxt is None:
                alert.planning_pending = False
                entries.append(audit.Entry("alert.planned", "system", now, alert_id, data=await _planned(s, alert_id)))
            s.add(alert)
            await audit.append(s, entries)
        return Issued(alert_id, written.targets, written.deliveries, written.by_channel, len(written.unreachable)), nxt

    async def update(self, alert_id: int, change: AlertChange, *, actor: str, within: Within | None = None) -> Issued:
        """An update (e.g. orange raised to red) replaces the alert and keeps the chain.

        Whoever already answered is not called again for the same content, unless the level rose; everyone
        else gets the new alert with its new plan. The old alert stops where it is.
        """
        now = self.clock.now()
        async with self.db.session() as s:
            old = await _locked(s, alert_id)
            if old.status not in (AlertStatus.ACTIVE.value, AlertStatus.CLOSED.value):
                raise AlertNotActive(f"alert {alert_id} is {old.status}; only a running or closed alert can be updated")
            same = (
                (change.level is None or change.level.value == old.level)
                and (change.title is None or change.title == old.title)
                and (change.text is None or change.text == old.text)
                and (change.instructions is None or change.instructions == old.instructions)
            )
            if same:
                raise AlertUnchanged(f"alert {alert_id}: the update changes neither level nor text (没有任何改动)")
            req = AlertRequest(
                level=change.level or Level(old.level),
                hazard=old.hazard,
                title=change.title or old.title,
                text=change.text or old.text,
                instructions=change.instructions or old.instructions,
                units=old.target_units,
                exercise=old.exercise,
            )
            rose = req.level.rank > Level(old.level).rank
            carried = 0 if rose else await _count_answered(s, alert_id)
            issued, page = await self._issue(s, req, actor=actor, now=now, supersedes=old)
            old.status, old.ended_at = AlertStatus.SUPERSEDED.value, now
            old.end_reason = f"updated: alert {issued.alert_id}"
            s.add(old)
            await audit.record(
                s,
                "alert.updated",
                actor=actor,
                at=now,
                alert_id=alert_id,
                data={
                    "new_alert": issued.alert_id,
                    "level": req.level.value,
                    "level_rose": rose,
                    "carried_answers": carried,
                },
            )
            if within is not None:
                await within(s, issued.alert_id)
        self.wake()
        await self._stop(alert_id, f"superseded by alert {issued.alert_id}", actor=actor)
        return await self._plan_rest(issued, page, now)

    async def _stop(self, alert_id: int, why: str, *, actor: str) -> int:
        """After the commit that ended the alert: what it still had going, stopped in pages (issue.stopping)."""
        cancelled = await stopping.stop(self.db, alert_id, why)
        async with self.db.session() as s:
            data = {"stopped": cancelled, "why": why}
            await audit.record(s, "alert.stopped", actor=actor, at=self.clock.now(), alert_id=alert_id, data=data)
        return cancelled

    async def _plan_rest(self, issued: Issued, page: Page | None, now: datetime) -> Issued:
        """The grid workers after the first commit, page by page, each page sending as soon as it is written."""
        while page is not None:
            more, page = await self._plan_page(issued.alert_id, page, now)
            issued = issued.plus(more)
            self.wake()
        return issued

    async def _issue(
        self,
        s: AsyncSession,
        req: AlertRequest,
        *,
        actor: str,
        now: datetime,
        supersedes: Alert | None = None,
    ) -> tuple[Issued, Page | None]:
        """Write the alert, its critical targets (sirens, broadcast zones, every responsible person above the grid)
        and the first grid workers, their first wave and their first deadlines; return the page of grid workers
        that comes next (None: nobody is left). Nothing is sent here."""
        plans = self.planner.plan_for(req.level, req.hazard, req.units)
        targets = await resolve_critical(s, req.units, plans)
        seen = {t.person_id for t in targets if t.person_id}
        more, page = await resolve_grid_workers(s, req.units, after=None, seen=seen, limit=FIRST_GRID_WORKERS)
        targets += more
        alert = Alert(
            level=req.level.value,
            hazard=req.hazard,
            title=req.title,
            text=req.text,
            instructions=req.instructions,
            status=AlertStatus.ACTIVE.value,
            exercise=req.exercise,
            target_units=req.units,
            plan=plans.model_dump(mode="json"),
            created_at=now,
            created_by=actor,
            supersedes_id=supersedes.id if supersedes else None,
            planning_pending=page is not None,
        )
        s.add(alert)
        await s.flush()
        assert alert.id is not None
        written = await self._write_targets(s, alert, plans, targets, now, await _carried_answers(s, alert, targets))
        entries = [
            audit.Entry(
                "alert.triggered",
                actor,
                now,
                alert.id,
                data={
                    "level": req.level.value,
                    "hazard": req.hazard,
                    "title": req.title,
                    "units": req.units,
                    "exercise": req.exercise,
                    "targets": written.targets,
                    "deliveries": written.by_channel,
                    "plan": alert.plan,
                    "supersedes": supersedes.id if supersedes else None,
                    "carried_answers": written.carried,
                    **({"planning": "first wave; grid workers follow in pages"} if page else {}),
                },
            )
        ]
        entries += _unreachable_entries(alert.id, now, written.unreachable)
        await audit.append(s, entries)
        issued = Issued(alert.id, written.targets, written.deliveries, written.by_channel, len(written.unreachable))
        return issued, page

    async def _write_targets(
        self,
        s: AsyncSession,
        alert: Alert,
        plans: PlanSet,
        targets: Sequence[PlannedTarget],
        now: datetime,
        answered: Mapping[tuple[str | None, str | None], Target] | None,
    ) -> _Written:
        """Targets, their first-wave deliveries and their first deadlines, as rows, inserted in bulk."""
        assert alert.id is not None
        level = Level(alert.level)
        contacts = await load_contacts(s, (t.person_id for t in targets if t.person_id))
        target_rows: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        deadlines: list[dict[str, Any]] = []
        unreachable: list[str] = []
        for t in targets:
            row = target_row(alert.id, t)
            target_rows.append(row)
            before = (answered or {}).get((t.person_id, t.device_id))
            if before is not None:  # answered the same content already: the answer carries over
                row.update(
                    state=before.state,
                    answered_at=before.answered_at,
                    answered_by=before.answered_by,
                    answer_channel=before.answer_channel,
                    feedback=before.feedback,
                )
                continue
            plan = plans.for_path(t.path)
            if t.kind is TargetKind.PERSON:
                assert t.person_id is not None
                contact = contacts.get(t.person_id)
                rows = person_deliveries(
                    alert.id, t.id, 0, plan.person_steps[0], [contact] if contact else [], now, level
                )
                steps = plan.person_steps
                if not rows:
                    unreachable.append(t.person_id)
            else:
                rows = device_deliveries(alert.id, t, plan.device_steps[0], now, level)
                steps = plan.device_steps
            deliveries += rows
            if len(steps) > 1:
                deadlines.append(deadline_rows.pending(alert.id, t.id, 1, now + timedelta(seconds=steps[0].wait_s)))
        await insert_rows(s, Target, target_rows)
        await insert_rows(s, Delivery, deliveries)
        await deadline_rows.add(s, deadlines)
        return _Written(
            targets=len(targets),
            deliveries=len(deliveries),
            by_channel=dict(Counter(d["channel"] for d in deliveries)),
            unreachable=unreachable,
            carried=sum(1 for r in target_rows if r["state"] != TargetState.OPEN.value),
        )

    async def cancel(self, alert_id: int, *, actor: str, reason: str, within: Within | None = None) -> Lifted:
        """解除: stop everything not yet sent, close pending steps, tell whoever was reached."""
        now = self.clock.now()
        async with self.db.session() as s:
            alert = await _locked(s, alert_id)
            if alert.status != AlertStatus.ACTIVE:
                raise AlertNotActive(f"alert {alert_id} is already {alert.status}")
            alert.status, alert.ended_at, alert.end_reason = AlertStatus.CANCELLED.value, now, reason
            # Everyone a warning was handed over for (still in flight included) hears it is lifted, once per channel.
            reached = await s.execute(
                select(col(Delivery.target_id), col(Delivery.person_id), col(Delivery.device_id), col(Delivery.channel))
                .where(
                    col(Delivery.alert_id) == alert_id,
                    col(Delivery.purpose) != Purpose.LIFT.value,
                    handed_over(),
                )
                .distinct()
            )
            seen: set[tuple[str | None, str | None, str]] = set()
            lifts: list[dict[str, Any]] = []
            for r in reached:
                key = (r.person_id, r.device_id, r.channel)
                if key not in seen:
                    seen.add(key)
                    lifts.append(
                        delivery_row(
                            alert_id=alert_id,
                            target_id=r.target_id,
                            channel=ChannelKind(r.channel),
                            purpose=Purpose.LIFT,
                            step=0,
                            level=Level(alert.level),
                            now=now,
                            person_id=r.person_id,
                            device_id=r.device_id,
                        )
                    )
            await insert_rows(s, Delivery, lifts)
            await audit.record(
                s,
                "alert.cancelled",
                actor=actor,
                at=now,
                alert_id=alert_id,
                data={"reason": reason, "lift_notices": len(lifts)},
            )
            if within is not None:
                await within(s, alert_id)
        self.wake()  # the lift notices go out while the rest is stopped
        stopped = await self._stop(alert_id, "alert cancelled", actor=actor)
        return Lifted(alert_id, stopped, len(lifts))

    async def call_again(
        self,
        alert_id: int,
        target_ids: list[str] | None,
        *,
        actor: str,
        within: str | None = None,
        preview: bool = False,
    ) -> CalledAgain:
        """立即重呼: call silent recipients again now, without waiting for their next escalation step.

        Each gets fresh warnings over the channels of the step they have reached (a step that only assigns
        a manual task or reaches someone else falls back to the first wave's channels); a device gets a new
        command. `target_ids=None` means every silent recipient (inside `within`, a unit path, if given). The
        escalation schedule stays as it was: this is an extra call, not a step. With `preview`, nothing is written:
        the counts say what calling again would send, for the officer to confirm first.
        """
        now = self.clock.now()
        async with self.db.session() as s:
            alert = await _locked(s, alert_id)
            if alert.status != AlertStatus.ACTIVE:
                raise AlertNotActive(f"alert {alert_id} is {alert.status}; only a running alert can be called again")
            q = (
                select(Target, col(OrgUnit.path))
                .join(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
                .where(col(Target.alert_id) == alert_id)
            )
            if target_ids is None:
                q = q.where(col(Target.state) == TargetState.OPEN.value)
                if within is not None:
                    q = q.where(col(OrgUnit.path).startswith(within))
            else:
                q = q.where(col(Target.id).in_(target_ids))
            found = [(t, path) for t, path in (await s.execute(q)).all()]
            if target_ids is not None:
                missing = sorted(set(target_ids) - {t.id for t, _ in found})
                if missing:
                    raise LookupError(f"alert {alert_id} has no recipient {', '.join(missing)}")
                outside = [t.id for t, path in found if within is not None and not path.startswith(within)]
                if outside:
                    raise Forbidden("只能重呼本辖区内的责任人")
            silent = [(t, path) for t, path in found if t.state == TargetState.OPEN.value]
            rows = await _fresh_calls(s, alert, silent, now)
            called = sorted({r["target_id"] for r in rows})
            by_channel = dict(Counter(r["channel"] for r in rows))
            if preview:
                return CalledAgain(alert_id, len(called), len(rows), by_channel, len(found) - len(called))
            await insert_rows(s, Delivery, rows)
            await audit.record(
                s,
                "alert.called_again",
                actor=actor,
                at=now,
                alert_id=alert_id,
                subject=called[0] if len(called) == 1 else None,
                data={
                    "targets": called,
                    "deliveries": by_channel,
                    "all_silent": target_ids is None,
                    "skipped": len(found) - len(called),
                },
            )
        log.info("alert.called_again", alert_id=alert_id, targets=len(called), deliveries=len(rows))
        if rows:
            self.wake()
        return CalledAgain(alert_id, len(called), len(rows), by_channel, len(found) - len(called))

    async def get(self, alert_id: int) -> Alert:
        async with self.db.session() as s:
            alert = await s.get(Alert, alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        return alert

    async def list(self, *, limit: int = 50, active_only: bool = False) -> list[Alert]:
        q = select(Alert).order_by(col(Alert.id).desc()).limit(limit)
        if active_only:
            q = q.where(col(Alert.status) == AlertStatus.ACTIVE.value)
        async with self.db.session() as s:
            return list((await s.execute(q)).scalars())

    async def progress(self, alert_id: int, *, within: str | None = None) -> AlertProgress:
        """Counts a duty officer watches: per target state, per delivery state and channel. `within` (a unit
        path) counts only targets in that subtree, and the deliveries about them."""
        alert = await self.get(alert_id)
        mine = [col(Target.alert_id) == alert_id]
        about: list[Any] = [col(Delivery.alert_id) == alert_id]
        if within is not None:
            inside = select(col(OrgUnit.code)).where(col(OrgUnit.path).startswith(within))
            mine.append(col(Target.unit_code).in_(inside))
            about.append(col(Delivery.target_id).in_(select(col(Target.id)).where(*mine)))
        async with self.db.session() as s:
            targets = dict(
                (
                    await s.execute(select(col(Target.state), func.count()).where(*mine).group_by(col(Target.state)))
                ).all()
            )
            deliveries = (
                await s.execute(
                    select(col(Delivery.channel), col(Delivery.state), col(Delivery.sandbox), func.count())
                    .where(*about)
                    .group_by(col(Delivery.channel), col(Delivery.state), col(Delivery.sandbox))
                )
            ).all()
            escalated = await s.scalar(select(func.count()).select_from(Target).where(*mine, col(Target.step) > 0))
        return AlertProgress(
            alert=alert,
            targets={str(k): int(v) for k, v in targets.items()},
            deliveries={(str(c), str(st)): int(n) for c, st, _sb, n in deliveries},
            sandbox_channels=sorted({str(c) for c, _st, sb, _n in deliveries if sb}),
            escalated=int(escalated or 0),
        )


@dataclass(frozen=True)
class AlertProgress:
    alert: Alert
    targets: dict[str, int]
    deliveries: dict[tuple[str, str], int]
    sandbox_channels: list[str]
    escalated: int

    @property
    def total(self) -> int:
        return sum(self.targets.values())

    @property
    def closed(self) -> int:
        return self.targets.get(TargetState.ANSWERED.value, 0) + self.targets.get(TargetState.ANSWERED_FOR.value, 0)

    @property
    def silent(self) -> int:
        return self.targets.get(TargetState.OPEN.value, 0)

    def count(self, state: DeliveryState) -> int:
        return sum(n for (_c, st), n in self.deliveries.items() if st == state.value)


async def _locked(s: AsyncSession, alert_id: int) -> Alert:
    """The alert, locked for the rest of the transaction so two officers' changes to it go one after the other."""
    alert = await s.get(Alert, alert_id, with_for_update=True)
    if alert is None:
        raise AlertNotFound(alert_id)
    return alert


async def _count_answered(s: AsyncSession, alert_id: int) -> int:
    return int(
        await s.scalar(
            select(func.count()).where(col(Target.alert_id) == alert_id, col(Target.state).in_(ANSWERED_STATES))
        )
        or 0
    )


async def _carried_answers(
    s: AsyncSession, alert: Alert, targets: Sequence[PlannedTarget]
) -> dict[tuple[str | None, str | None], Target]:
    """For an update, those of `targets` who answered the alert it replaces keep their answer, unless the level
    rose (then everyone hears it again). Asked per commit (the first wave, then each page), so a county-wide update
    starts sending before every earlier answer is read."""
    if alert.supersedes_id is None or not targets:
        return {}
    old = await s.get(Alert, alert.supersedes_id)
    if old is None or Level(alert.level).rank > Level(old.level).rank:
        return {}
    persons = [t.person_id for t in targets if t.person_id]
    devices = [t.device_id for t in targets if t.device_id]
    rows = await s.execute(
        select(Target).where(
            col(Target.alert_id) == old.id,
            col(Target.state).in_(ANSWERED_STATES),
            or_(col(Target.person_id).in_(persons), col(Target.device_id).in_(devices)),
        )
    )
    return {(t.person_id, t.device_id): t for t in rows.scalars()}


async def _fresh_calls(
    s: AsyncSession, alert: Alert, silent: list[tuple[Target, str]], now: datetime
) -> list[dict[str, Any]]:
    """New warning deliveries for silent targets, leaving out a channel whose earlier warning is still queued."""
    assert alert.id is not None
    if not silent:
        return []
    plans = PlanSet.stored(alert.plan)
    queued = {
        (r.target_id, r.channel)
        for r in await s.execute(
            select(col(Delivery.target_id), col(Delivery.channel)).where(
                col(Delivery.alert_id) == alert.id,
                col(Delivery.target_id).in_([t.id for t, _ in silent]),
                col(Delivery.purpose) == Purpose.WARN.value,
                col(Delivery.state).in_([DeliveryState.PENDING.value, DeliveryState.SENDING.value]),
            )
        )
    }
    contacts = await load_contacts(s, (t.person_id for t, _ in silent if t.person_id))
    device_kinds = dict(
        (
            await s.execute(
                select(col(Device.id), col(Device.kind)).where(
                    col(Device.id).in_([t.device_id for t, _ in silent if t.device_id])
                )
            )
        ).all()
    )
    rows: list[dict[str, Any]] = []
    for t, path in silent:
        plan = plans.for_path(path)
        if t.kind == TargetKind.PERSON.value:
            contact = contacts.get(t.person_id or "")
            if contact is None:
                continue
            step = plan.person_steps[min(t.step, len(plan.person_steps) - 1)]
            if step.who is not Who.TARGET or not any(c in PERSON_CHANNELS for c in step.channels):
                step = plan.person_steps[0]
            channels = [c for c in channels_for(contact, step) if c in PERSON_CHANNELS]
            person_id, device_id = t.person_id, None
        else:
            kind = device_kinds.get(t.device_id or "")
            channels = [DEVICE_CHANNEL[DeviceKind(kind)]] if kind in DEVICE_CHANNEL else []
            person_id, device_id = None, t.device_id
        rows += [
            delivery_row(
                alert_id=alert.id,
                target_id=t.id,
                channel=ch,
                purpose=Purpose.WARN,
                step=t.step,
                level=Level(alert.level),
                now=now,
                person_id=person_id,
                device_id=device_id,
                detail={"called_again": True},
            )
            for ch in channels
            if (t.id, ch.value) not in queued
        ]
    return rows


def _unreachable_entries(alert_id: int, now: datetime, people: Sequence[str]) -> list[audit.Entry]:
    return [
        audit.Entry(
            "target.unreachable",
            "system",
            now,
            alert_id,
            subject=p,
            data={"reason": "no channel in the first wave reaches this person"},
        )
        for p in people
    ]


async def _planned(s: AsyncSession, alert_id: int) -> dict[str, Any]:
    """What the whole first wave came to, once its last page is written."""
    targets = await s.scalar(select(func.count()).select_from(Target).where(col(Target.alert_id) == alert_id))
    by_channel = dict(
        (
            await s.execute(
                select(col(Delivery.channel), func.count())
                .where(col(Delivery.alert_id) == alert_id, col(Delivery.step) == 0)
                .group_by(col(Delivery.channel))
            )
        ).all()
    )
    return {"targets": targets, "deliveries": by_channel}
