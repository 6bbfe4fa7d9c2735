"""The live board's numbers: active alerts, their progress per township, and who is still silent.

Every count is of recipients (targets), so a township's row adds up whichever channels reached whom,
and every read is limited to what the viewer may see: a township officer counts only their subtree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.access import Principal, alert_in_scope, in_scope, township_code
from alerting.model.clock import utc
from alerting.model.domain import AlertStatus, DeliveryState, Level, Purpose, TargetKind, TargetState
from alerting.model.plan import PlanSet
from alerting.model.privacy import mask_phone, sees_whole_numbers
from alerting.store.db import Database
from alerting.store.tables import Alert, AuditHead, Deadline, Delivery, Device, OrgUnit, Person, Target
from alerting.views.labels import ALARM_LABEL, ALERT_STATUS_LABEL, COUNTY_LEVEL, LEVEL_LABEL, label, role_label
from alerting.views.units import places

RECENT = timedelta(hours=24)
NEW_FOR = timedelta(minutes=10)  # an alert issued this recently sounds the board's alarm as new
REACHED = [DeliveryState.SENT.value, DeliveryState.DELIVERED.value]

# what each column counts; shown as the column's tooltip and in the board's legend
MEANING = {
    "planned": "应叫应：本次预警要求应答的责任人和设备（设备无回应已转人工任务的、已停止的，不计入已应答或未应答）",
    "sent": "已发出：至少有一条预警已交给服务商或设备（不含升级时发给他人的）",
    "delivered": "已送达：服务商或设备回报至少一条已送达本人/本设备",
    "answered": "已应答：本人回复“收到”，或上级代为确认",
    "escalated": "已升级：因未按时应答，叫应已进入第 1 步及以后（重拨、备岗、上级…）",
    "silent": "未应答：仍在等待应答",
}


class Progress(BaseModel):
    planned: int = 0
    sent: int = 0
    delivered: int = 0
    answered: int = 0
    escalated: int = 0
    silent: int = 0
    escalated_open: int = Field(default=0, description="silent and already escalated")

    def add(self, other: Progress) -> None:
        for k in Progress.model_fields:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @property
    def answered_pct(self) -> int:
        return round(100 * self.answered / self.planned) if self.planned else 0

    @property
    def silent_escalated_pct(self) -> int:
        """The share of the bar for silent recipients already escalated (the rest of the silent are plain)."""
        return min(self.silent_pct, round(100 * self.escalated_open / self.planned) if self.planned else 0)

    @property
    def silent_pct(self) -> int:
        return round(100 * self.silent / self.planned) if self.planned else 0


class TownshipProgress(Progress):
    code: str | None = Field(description="township code; null for units above every township")
    name: str


class SilentRecipient(BaseModel):
    target_id: str
    kind: str
    name: str
    role_label: str
    unit_name: str
    place: str = Field(description="township › village › grid of the unit")
    phone: str = Field(description="masked")
    dial: str | None = Field(
        default=None, description="the whole number, to call: for duty, township and admin; null for auditors"
    )
    step: int = Field(description="escalation step reached; 0 = first wave only")
    first_sent_at: datetime | None = Field(description="when the first warning to them went out")


class AlarmLevel(IntEnum):
    """Why the board sounds for an alert, the more urgent the higher; a console silenced at one level sounds again
    at a higher one."""

    NONE = 0
    NEW = 1  # issued in the last NEW_FOR
    LAST_STEP = 2  # someone silent has reached the last escalation step (the county duty room, by default)
    PAST_LAST_STEP = 3  # someone is still silent after the last step's wait: the loop is open past its end


class Alarm(BaseModel):
    """What the console's alarm (sound, notification, tab title) is raised for: facts read from the store."""

    level: AlarmLevel = Field(description="0 nothing to sound; 1 new alert; 2 someone at the last step; 3 past it")
    label: str = Field(description="the level in words")
    text: str = Field(description="one line for the notification and the card")
    new: bool = Field(description="issued within the last 10 minutes")
    at_last_step: int = Field(description="silent people who have reached the last escalation step of their plan")
    past_last_step: int = Field(description="of those, how many are still silent after that step's wait")
    last_step_who: str = Field(description="whom the last step reaches (县值班室 in the default plans)")


class AlertHeading(BaseModel):
    """What names an alert on the board, whether it is running or just ended."""

    id: int
    level: Level
    level_label: str
    hazard: str
    title: str
    exercise: bool
    status: str
    status_label: str
    created_at: datetime
    created_by: str

    @classmethod
    def fields_of(cls, a: Alert) -> dict[str, Any]:
        return {
            "id": a.id or 0,
            "level": Level(a.level),
            "level_label": label(LEVEL_LABEL, a.level),
            "hazard": a.hazard,
            "title": a.title,
            "exercise": a.exercise,
            "status": a.status,
            "status_label": label(ALERT_STATUS_LABEL, a.status),
            "created_at": utc(a.created_at),
            "created_by": a.created_by,
        }


class BoardAlert(AlertHeading):
    totals: Progress
    townships: list[TownshipProgress]
    silent: list[SilentRecipient] = Field(description="the silent furthest up their escalation first, at most a page")
    silent_total: int
    alarm: Alarm


class EndedAlert(AlertHeading):
    ended_at: datetime | None
    end_reason: str | None


class Board(BaseModel):
    alerts: list[BoardAlert]
    ended: list[EndedAlert] = Field(description="ended in the last 24 hours")
    generated_at: datetime

    def fingerprint(self) -> str:
        """What the board shows, without the moment it was read: equal fingerprints need no new snapshot."""
        return self.model_dump_json(exclude={"generated_at"})

    def for_viewer(self, who: Principal) -> Board:
        """The board as this viewer may read it. A scope's read is shared by every role that sees the scope, so it
        holds the numbers to dial; an auditor's copy has them taken out (the masked ones stay)."""
        if sees_whole_numbers(who):
            return self
        alerts = [
            a.model_copy(update={"silent": [r.model_copy(update={"dial": None}) for r in a.silent]})
            for a in self.alerts
        ]
        return self.model_copy(update={"alerts": alerts})


def _reached_target(target: Any) -> ColumnElement[bool]:
    """A delivery to the target itself (not to a backup or a parent about it)."""
    return and_(
        col(Delivery.alert_id) == target.alert_id,
        col(Delivery.target_id) == target.id,
        or_(col(Delivery.person_id) == target.person_id, col(Delivery.device_id) == target.device_id),
        col(Delivery.purpose).in_([Purpose.WARN.value, Purpose.TASK.value]),
    )


async def township_progress(
    s: AsyncSession, principal: Principal, alert_ids: Sequence[int]
) -> dict[int, list[TownshipProgress]]:
    """Per alert, one row per township the viewer may see, county-level units first."""
    if not alert_ids:
        return {}
    sent = exists().where(_reached_target(Target), col(Delivery.state).in_(REACHED)).label("sent")
    delivered = exists().where(_reached_target(Target), col(Delivery.state) == DeliveryState.DELIVERED.value)
    escalated = (col(Target.step) > 0).label("escalated")
    q = (
        select(
            col(Target.alert_id),
            col(Target.unit_code),
            col(Target.state),
            escalated,
            sent,
            delivered.label("delivered"),
            func.count().label("n"),
        )
        .where(col(Target.alert_id).in_(alert_ids), in_scope(principal, col(Target.unit_code)))
        .group_by(col(Target.alert_id), col(Target.unit_code), col(Target.state), "escalated", "sent", "delivered")
    )
    rows = (await s.execute(q)).all()
    townships = await _townships_of(s, {r.unit_code for r in rows})
    out: dict[int, dict[str | None, TownshipProgress]] = defaultdict(dict)
    for r in rows:
        code, name = townships.get(r.unit_code, (None, COUNTY_LEVEL))
        row = out[r.alert_id].setdefault(code, TownshipProgress(code=code, name=name))
        n = int(r.n)
        row.planned += n
        row.sent += n if r.sent else 0
        row.delivered += n if r.delivered else 0
        row.escalated += n if r.escalated else 0
        if r.state in (TargetState.ANSWERED.value, TargetState.ANSWERED_FOR.value):
            row.answered += n
        elif r.state == TargetState.OPEN.value:
            row.silent += n
            row.escalated_open += n if r.escalated else 0
    return {a: sorted(by.values(), key=lambda t: t.code or "") for a, by in out.items()}


async def _townships_of(s: AsyncSession, unit_codes: Iterable[str]) -> dict[str, tuple[str | None, str]]:
    """unit code -> (its township's code, the township's name); units above every township are left out."""
    codes = list(unit_codes)
    paths: dict[str, str] = {}
    for i in range(0, len(codes), 500):
        rows = await s.execute(
            select(col(OrgUnit.code), col(OrgUnit.path)).where(col(OrgUnit.code).in_(codes[i : i + 500]))
        )
        paths.update({r.code: r.path for r in rows})
    township_of = {code: t for code, path in paths.items() if (t := township_code(path))}
    names = dict(
        (
            await s.execute(
                select(col(OrgUnit.code), col(OrgUnit.name)).where(col(OrgUnit.code).in_(set(township_of.values())))
            )
        ).all()
    )
    return {code: (t, names.get(t, t)) for code, t in township_of.items()}


def totals(rows: Iterable[Progress]) -> Progress:
    total = Progress()
    for r in rows:
        total.add(r)
    return total


async def silent_recipients(
    s: AsyncSession, principal: Principal, alert_id: int, *, limit: int
) -> tuple[list[SilentRecipient], int]:
    """Who has not answered: people first, each kind the furthest escalated first, then down the hierarchy; and
    how many in all."""
    where = [
        col(Target.alert_id) == alert_id,
        col(Target.state) == TargetState.OPEN.value,
        in_scope(principal, col(Target.unit_code)),
    ]
    total = await s.scalar(select(func.count()).select_from(Target).where(*where))
    rows = (
        await s.execute(
            select(Target, col(Person.name), col(Person.phone), col(Device.name), col(OrgUnit.name), col(OrgUnit.path))
            .outerjoin(Person, col(Person.id) == col(Target.person_id))
            .outerjoin(Device, col(Device.id) == col(Target.device_id))
            .join(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
            .where(*where)
            # people before devices: a silent person is who the officer can still phone, and a county's sirens
            # would otherwise fill the list once they have all run out of steps
            .order_by(
                case((col(Target.kind) == TargetKind.PERSON.value, 0), else_=1),
                col(Target.step).desc(),
                col(Target.priority),
                col(OrgUnit.path),
                col(Target.id),
            )
            .limit(limit)
        )
    ).all()
    first_sent = await first_sent_at(s, alert_id, [t.id for t, *_ in rows])
    where_is = await places(s, (path for *_, path in rows))
    out = [
        SilentRecipient(
            target_id=t.id,
            kind=t.kind,
            name=person or device or t.person_id or t.device_id or "",
            role_label=role_label(t.role),
            unit_name=unit,
            place=where_is[path],
            phone=mask_phone(phone),
            dial=phone or None,  # taken out again for a viewer who may not read it (Board.for_viewer)
            step=t.step,
            first_sent_at=first_sent.get(t.id),
        )
        for t, person, phone, device, unit, path in rows
    ]
    return out, int(total or 0)


async def first_sent_at(s: AsyncSession, alert_id: int, target_ids: Sequence[str]) -> dict[str, datetime]:
    if not target_ids:
        return {}
    rows = await s.execute(
        select(col(Delivery.target_id), func.min(col(Delivery.sent_at)))
        .where(
            col(Delivery.alert_id) == alert_id,
            col(Delivery.target_id).in_(target_ids),
            col(Delivery.sent_at).is_not(None),
            col(Delivery.purpose).in_([Purpose.WARN.value, Purpose.TASK.value]),
        )
        .group_by(col(Delivery.target_id))
    )
    return {tid: utc(at) for tid, at in rows if at is not None}


async def alarm_of(s: AsyncSession, principal: Principal, alert: Alert, now: datetime) -> Alarm:
    """Whether the console should sound for this alert, and why, from what the store says now.

    A person is at the last step when their target's step is the last of their unit's plan (a plan of one step
    has no escalation to reach the end of); they are past it when that step first ran at least its wait ago and
    they are still silent, or when it left no trace of running (it could reach nobody, and the plan ended). When
    it first ran is its first fired deadline, or its first delivery when an earlier step that reached nobody ran
    it at once; the county duty room's message about several people is one delivery, so deliveries alone miss
    some. Devices are left out: their last step is a manual task to a village head, counted as a person."""
    new = utc(now) - utc(alert.created_at) < NEW_FOR
    at_last = past = 0
    who = ""
    try:
        plans: PlanSet | None = PlanSet.stored(alert.plan)
    except ValueError:
        plans = None
    if plans is not None:
        who = plans.default.person_steps[-1].who.label
        lowest = max(1, min(len(p.person_steps) - 1 for p in plans.all()))
        first_fired = (
            select(func.min(col(Deadline.fired_at)))
            .where(col(Deadline.target_id) == col(Target.id), col(Deadline.step) == col(Target.step))
            .scalar_subquery()
        )
        first_sent = (
            select(func.min(col(Delivery.created_at)))
            .where(
                col(Delivery.alert_id) == col(Target.alert_id),
                col(Delivery.target_id) == col(Target.id),
                col(Delivery.step) == col(Target.step),
            )
            .scalar_subquery()
        )
        rows = await s.execute(
            select(col(Target.step), col(OrgUnit.path), first_fired, first_sent)
            .join(OrgUnit, col(OrgUnit.code) == col(Target.unit_code))
            .where(
                col(Target.alert_id) == alert.id,
                col(Target.kind) == TargetKind.PERSON.value,
                col(Target.state) == TargetState.OPEN.value,
                col(Target.step) >= lowest,
                in_scope(principal, col(Target.unit_code)),
            )
        )
        for step, path, *traces in rows:
            steps = plans.for_path(path).person_steps
            last = len(steps) - 1
            if last < 1 or step < last:
                continue
            at_last += 1
            ran = [utc(t) for t in traces if t is not None]
            if not ran or utc(now) - min(ran) >= timedelta(seconds=steps[last].wait_s):
                past += 1
    if past:
        level, text = AlarmLevel.PAST_LAST_STEP, f"{past} 人在最后一步（{who}）等待已超时，仍未应答"
    elif at_last:
        level, text = AlarmLevel.LAST_STEP, f"{at_last} 人已升级到最后一步（{who}），仍未应答"
    elif new:
        level, text = AlarmLevel.NEW, f"新预警：{alert.title}"
    else:
        level, text = AlarmLevel.NONE, ""
    return Alarm(
        level=level,
        label=ALARM_LABEL[level],
        text=text,
        new=new,
        at_last_step=at_last,
        past_last_step=past,
        last_step_who=who,
    )


async def change_stamp(db: Database) -> int:
    """The end of the audit chain. Every change the board counts (a send, a provider report, an answer, an
    escalation step, a lift) appends to the audit in its own transaction, so while this stays put the board
    would read the same: one single-row read per poll instead of a full board read."""
    async with db.reading() as s:
        seq = await s.scalar(select(col(AuditHead.seq)).where(col(AuditHead.id) == 1))
    return int(seq or 0)


async def read_board(db: Database, principal: Principal, *, now: datetime, silent_limit: int = 20) -> Board:
    """The board as `principal` sees it at `now`. One short transaction; nothing is held between reads."""
    async with db.reading() as s:
        active = list(
            (
                await s.execute(
                    select(Alert)
                    .where(col(Alert.status) == AlertStatus.ACTIVE.value, alert_in_scope(principal, col(Alert.id)))
                    .order_by(col(Alert.created_at).desc(), col(Alert.id).desc())
                )
            ).scalars()
        )
        ids = [a.id for a in active if a.id is not None]
        progress = await township_progress(s, principal, ids)
        alerts: list[BoardAlert] = []
        for a in active:
            assert a.id is not None
            silent, silent_total = await silent_recipients(s, principal, a.id, limit=silent_limit)
            rows = progress.get(a.id, [])
            alerts.append(
                BoardAlert(
                    **AlertHeading.fields_of(a),
                    totals=totals(rows),
                    townships=rows,
                    silent=silent,
                    silent_total=silent_total,
                    alarm=await alarm_of(s, principal, a, now),
                )
            )
        ended = (
            await s.execute(
                select(Alert)
                .where(
                    col(Alert.status) != AlertStatus.ACTIVE.value,
                    col(Alert.ended_at) >= now - RECENT,
                    alert_in_scope(principal, col(Alert.id)),
                )
                .order_by(col(Alert.ended_at).desc())
                .limit(30)
            )
        ).scalars()
        recent = [
            EndedAlert(
                **AlertHeading.fields_of(a),
                ended_at=utc(a.ended_at) if a.ended_at else None,
                end_reason=a.end_reason,
            )
            for a in ended
        ]
    return Board(alerts=alerts, ended=recent, generated_at=utc(now))


def since_text(start: datetime | None, now: datetime) -> str:
    """How long ago, the way a duty officer says it: 45秒, 3分12秒, 2小时5分. board.js writes the same."""
    if start is None:
        return ""
    s = max(0, int((utc(now) - utc(start)).total_seconds()))
    if s < 60:
        return f"{s}秒"
    if s < 3600:
        return f"{s // 60}分{s % 60}秒"
    if s < 86400:
        return f"{s // 3600}小时{s % 3600 // 60}分"
    return f"{s // 86400}天{s % 86400 // 3600}小时"
