"""Answers applied in batches: whatever has arrived when the writer gets to it, in a handful of statements.

The first answer to reach an open target of an active alert counts; every later one is kept (an
acknowledgement and an audit event) and what it reports is merged into the target's feedback. Within a batch the
order of arrival decides. The alerts and targets are read under row locks (PostgreSQL) or inside the write lock
(SQLite), so an answer applied by another process at the same moment cannot count the same target too, and the
last two answers of an alert, wherever they are applied, see each other and close it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from alerting.answer.outcomes import AlreadyTaken, AnswerRejected, AnswerResult, Outcome
from alerting.answer.seen import SEEN, new_keys, seen_key
from alerting.audit import chain as audit
from alerting.model import deadlines
from alerting.model.actor import Actor, ActorKind
from alerting.model.deliveries import not_handed_over
from alerting.model.domain import (
    TASK_SHARED_WITH,
    AlertStatus,
    ChannelKind,
    DeliveryState,
    Purpose,
    TargetState,
)
from alerting.model.ids import new_id
from alerting.model.privacy import mask_phone
from alerting.store.db import Database
from alerting.store.tables import (
    Acknowledgement,
    Alert,
    Delivery,
    Person,
    Target,
    core_table,
)

ACK, ALERT, DELIVERY = core_table(Acknowledgement), core_table(Alert), core_table(Delivery)
PERSON, TARGET = core_table(Person), core_table(Target)
OPEN, ACTIVE = TargetState.OPEN.value, AlertStatus.ACTIVE.value


@dataclass(frozen=True, eq=False)  # one per arrival, told apart by identity
class Incoming:
    """An answer as it arrived: about a delivery (link, key press, button, siren ack) or from a number (SMS)."""

    channel: ChannelKind
    at: datetime
    delivery_id: str | None = None
    phone: str | None = None
    feedback: Mapping[str, Any] | None = None
    once: str | None = None  # the key of a report that may come more than once
    device_id: str | None = None  # a siren's ack counts only on a command sent to that siren


@dataclass(frozen=True)
class Resolved:
    """An answer matched to the target it answers."""

    alert_id: int
    target_id: str
    by: Actor
    channel: ChannelKind
    at: datetime
    delivery_id: str | None = None
    feedback: Mapping[str, Any] | None = None
    reason: str | None = None  # an officer answering on someone's behalf says why


def apply_answers_job(db: Database) -> Callable[[AsyncSession, list[Incoming]], Awaitable[dict[Incoming, Outcome]]]:
    """Applies a batch of answers in the caller's transaction; an outcome for each."""

    async def apply(s: AsyncSession, incoming: list[Incoming]) -> dict[Incoming, Outcome]:
        outcomes: dict[Incoming, Outcome] = {}
        fresh = await _first_time(s, db, incoming, outcomes)
        matched = await _resolve(s, fresh, outcomes)
        results = await record_answers(s, [r for _, r in matched])
        for (i, _), result in zip(matched, results, strict=True):
            # an SMS reply may answer several requests: its caller hears of the newest one it counted for
            earlier = outcomes.get(i)
            if not isinstance(earlier, AnswerResult) or (result.counted and not earlier.counted):
                outcomes[i] = result
        refused = [i.once for i in incoming if i.once and isinstance(outcomes[i], AnswerRejected)]
        if refused:  # a refused answer leaves no trace of having been taken in: its retry is judged afresh
            await s.execute(delete(SEEN).where(SEEN.c.key.in_([seen_key(k) for k in refused])))
        return {i: outcomes[i] for i in incoming}

    return apply


async def _first_time(
    s: AsyncSession, db: Database, incoming: list[Incoming], out: dict[Incoming, Outcome]
) -> list[Incoming]:
    """The answers not taken in before, by any process; a key seen twice counts its first arrival only."""
    first: dict[str, Incoming] = {}
    for i in incoming:
        if i.once is not None:
            if seen_key(i.once) in first:
                out[i] = AlreadyTaken(i.once)
            else:
                first[seen_key(i.once)] = i
    new = await new_keys(s, db, {k: i.at for k, i in first.items()})
    fresh: list[Incoming] = []
    for i in incoming:
        if i in out:
            continue
        if i.once is not None and seen_key(i.once) not in new:
            out[i] = AlreadyTaken(i.once)  # a replayed reply must not answer an alert issued since
        else:
            fresh.append(i)
    return fresh


async def _resolve(
    s: AsyncSession, incoming: list[Incoming], out: dict[Incoming, Outcome]
) -> list[tuple[Incoming, Resolved]]:
    by_phone = await _open_by_phone(s, {i.phone for i in incoming if i.delivery_id is None and i.phone})
    ids = {i.delivery_id for i in incoming if i.delivery_id} | {
        d for found in by_phone.values() if isinstance(found, list) for d in found
    }
    deliveries = {
        r.id: r
        for r in await s.execute(
            select(
                DELIVERY.c.id, DELIVERY.c.alert_id, DELIVERY.c.target_id, DELIVERY.c.person_id,
                DELIVERY.c.device_id, DELIVERY.c.purpose,
            ).where(DELIVERY.c.id.in_(ids))
        )
    }  # fmt: skip
    matched: list[tuple[Incoming, Resolved]] = []
    tasks: list[tuple[Incoming, Resolved]] = []
    for i in incoming:
        if i.delivery_id is not None:
            asked = [i.delivery_id]
        elif isinstance(found := by_phone.get(i.phone or ""), list):
            asked = found
        else:
            out[i] = found or AnswerRejected("an answer names neither a delivery nor a phone number")
            continue
        for delivery_id in asked:
            d = deliveries.get(delivery_id)
            if d is None:
                out[i] = AnswerRejected(f"no delivery {delivery_id}")
            elif i.device_id is not None and d.device_id != i.device_id:
                out[i] = AnswerRejected(f"device {i.device_id} reported on a command that was not sent to it")
            elif d.purpose == Purpose.LIFT.value:
                out[i] = AnswerRejected("a lifted notice needs no answer")
            else:
                by = Actor.person(d.person_id) if d.person_id else Actor.device()
                matched.append((i, Resolved(d.alert_id, d.target_id, by, i.channel, i.at, d.id, i.feedback)))
                if d.purpose == Purpose.TASK.value:
                    tasks.append(matched[-1])
    return matched + await _sharing(s, tasks)


async def _sharing(s: AsyncSession, tasks: list[tuple[Incoming, Resolved]]) -> list[tuple[Incoming, Resolved]]:
    """The devices whose task is one of these (escalation.shared_tasks): answering the task answers them too,
    by the same person; what was reported (households, people moved) stays with the task's own target only."""
    if not tasks:
        return []
    rows = await s.execute(
        select(DELIVERY.c.target_id, DELIVERY.c.detail).where(
            DELIVERY.c.alert_id.in_({r.alert_id for _, r in tasks}),
            DELIVERY.c.purpose == Purpose.TASK.value,
            DELIVERY.c.state == DeliveryState.CANCELLED.value,
        )
    )
    shared: dict[str, list[str]] = {}
    for target_id, detail in rows:
        if (with_target := (detail or {}).get(TASK_SHARED_WITH)) is not None:
            shared.setdefault(str(with_target), []).append(target_id)
    return [(i, replace(r, target_id=other, feedback=None)) for i, r in tasks for other in shared.get(r.target_id, [])]


async def _open_by_phone(s: AsyncSession, phones: set[str]) -> dict[str, list[str] | AnswerRejected]:
    """For each number: every open request sent to it, newest first, one delivery per target. A grid worker's
    "收到" answers all of them: their own warning, and the request to stand in for a silent colleague (that one
    is answered for the colleague), so nobody is called again about something they already said they have."""
    if not phones:
        return {}
    known = set((await s.execute(select(PERSON.c.phone).where(PERSON.c.phone.in_(phones)))).scalars())
    found: dict[str, list[str] | AnswerRejected] = {
        p: AnswerRejected(f"number {mask_phone(p)} belongs to nobody in the directory") for p in phones - known
    }
    rows = await s.execute(
        select(DELIVERY.c.id, DELIVERY.c.target_id, PERSON.c.phone)
        .join(PERSON, PERSON.c.id == DELIVERY.c.person_id)
        .join(TARGET, TARGET.c.id == DELIVERY.c.target_id)
        .join(ALERT, ALERT.c.id == DELIVERY.c.alert_id)
        .where(
            PERSON.c.phone.in_(known),
            DELIVERY.c.purpose != Purpose.LIFT.value,
            TARGET.c.state == OPEN,
            ALERT.c.status == ACTIVE,
        )
        .order_by(DELIVERY.c.created_at.desc(), DELIVERY.c.id)
    )
    targets: dict[str, set[str]] = {}
    for row in rows:
        asked = found.setdefault(row.phone, [])
        assert isinstance(asked, list)
        if row.target_id not in targets.setdefault(row.phone, set()):
            targets[row.phone].add(row.target_id)
            asked.append(row.id)
    for p in known - found.keys():
        found[p] = AnswerRejected(f"nothing is waiting for an answer from {mask_phone(p)}")
    return found


@dataclass
class _Target:
    """A target as this batch sees it: what it read, then what the answers before this one made of it."""

    alert_id: int
    person_id: str | None
    state: str
    answered_at: datetime | None
    answered_by: str | None
    feedback: dict[str, Any] | None
    feedback_changed: bool = False


@dataclass
class _Batch:
    targets: dict[str, _Target]
    alerts: dict[int, str]  # id -> status
    acks: list[dict[str, Any]] = field(default_factory=list)
    entries: list[audit.Entry] = field(default_factory=list)
    counted: list[tuple[Resolved, TargetState]] = field(default_factory=list)


async def record_answers(s: AsyncSession, answers: Sequence[Resolved]) -> list[AnswerResult]:
    """Record matched answers in the caller's transaction, in order; the first to reach an open target counts."""
    if not answers:
        return []
    batch = await _read(s, answers)
    counted_flags = [_take(batch, a) for a in answers]
    closed = await _write(s, batch)
    last_winner = {a.alert_id: n for n, (a, c) in enumerate(zip(answers, counted_flags, strict=True)) if c}
    results = []
    for n, (a, counted) in enumerate(zip(answers, counted_flags, strict=True)):
        t, status = batch.targets[a.target_id], AlertStatus(batch.alerts[a.alert_id])
        fb = a.feedback
        results.append(
            AnswerResult(
                alert_id=a.alert_id,
                target_id=a.target_id,
                counted=counted,
                state=TargetState(t.state),
                answered_at=t.answered_at,
                answered_by=t.answered_by,
                alert_status=status,
                alert_closed_now=a.alert_id in closed and last_winner.get(a.alert_id) == n,
                help_needed=bool(fb and fb.get("help_needed")) and status is not AlertStatus.CANCELLED,
            )
        )
    return results


async def _read(s: AsyncSession, answers: Sequence[Resolved]) -> _Batch:
    # alerts before targets, each in id order: two processes lock them in the same order and never deadlock
    alert_rows = await s.execute(
        select(ALERT.c.id, ALERT.c.status)
        .where(ALERT.c.id.in_({a.alert_id for a in answers}))
        .order_by(ALERT.c.id)
        .with_for_update()
    )
    target_rows = await s.execute(
        select(
            TARGET.c.id, TARGET.c.alert_id, TARGET.c.person_id, TARGET.c.state,
            TARGET.c.answered_at, TARGET.c.answered_by, TARGET.c.feedback,
        )
        .where(TARGET.c.id.in_({a.target_id for a in answers}))
        .order_by(TARGET.c.id)
        .with_for_update()
    )  # fmt: skip
    targets = {
        r.id: _Target(r.alert_id, r.person_id, r.state, r.answered_at, r.answered_by, r.feedback) for r in target_rows
    }
    return _Batch(targets, {r.id: r.status for r in alert_rows})


def _take(batch: _Batch, a: Resolved) -> bool:
    """One answer against the batch's view of its target; True if it counted."""
    t, status = batch.targets[a.target_id], batch.alerts[a.alert_id]
    own = a.by.kind is ActorKind.DEVICE or (a.by.person_id is not None and a.by.person_id == t.person_id)
    state = TargetState.ANSWERED if own and a.reason is None else TargetState.ANSWERED_FOR
    fb = dict(a.feedback) if a.feedback else None
    counted = status == ACTIVE and t.state == OPEN
    if counted:
        t.state, t.answered_at, t.answered_by, t.feedback = state.value, a.at, a.by.text, fb
        batch.counted.append((a, state))
        kind = f"target.{state.value}"
    elif status != ACTIVE:
        kind = "ack.after_end"  # kept, but the alert was already lifted or closed
    else:
        kind = "ack.repeated"
        if fb:  # what someone reports later (more people moved, help needed) is kept with the answer
            t.feedback, t.feedback_changed = {**(t.feedback or {}), **fb}, True
    ack_id = new_id()
    batch.acks.append(
        {
            "id": ack_id,
            "alert_id": a.alert_id,
            "target_id": a.target_id,
            "person_id": a.by.person_id,
            "delivery_id": a.delivery_id,
            "channel": a.channel.value,
            "at": a.at,
            "counted": counted,
            "on_behalf_reason": a.reason,
            "feedback": fb,
        }
    )
    data: dict[str, Any] = {"by": a.by.text, "channel": a.channel.value, "delivery": a.delivery_id, "ack": ack_id}
    if a.reason:
        data["reason"] = a.reason
    if fb:
        data["feedback"] = fb
    batch.entries.append(audit.Entry(kind, a.by.text, a.at, a.alert_id, subject=a.target_id, data=data))
    if fb and fb.get("help_needed"):  # whether first or later: help is never buried in a repeat
        batch.entries.append(audit.Entry("help.requested", a.by.text, a.at, a.alert_id, subject=a.target_id, data=fb))
    return counted


async def _write(s: AsyncSession, batch: _Batch) -> set[int]:
    """The batch's rows in a few statements; returns the alerts it closed."""
    conn = await s.connection()
    if batch.counted:
        won = await conn.execute(
            update(TARGET)
            .where(and_(TARGET.c.id == bindparam("b_id"), TARGET.c.state == OPEN))
            .values(
                state=bindparam("b_state"),
                answered_at=bindparam("b_at"),
                answered_by=bindparam("b_by"),
                answer_channel=bindparam("b_channel"),
                feedback=bindparam("b_feedback"),
            ),
            [
                {
                    "b_id": a.target_id,
                    "b_state": state.value,
                    "b_at": a.at,
                    "b_by": a.by.text,
                    "b_channel": a.channel.value,
                    "b_feedback": dict(a.feedback) if a.feedback else None,
                }
                for a, state in batch.counted
            ],
        )
        if won.rowcount not in (-1, len(batch.counted)):  # -1: the driver does not count executemany rows
            raise RuntimeError("a target counted in this batch was answered elsewhere since it was read")
        await _stop_chasing(s, [a.target_id for a, _ in batch.counted])
    changed = [{"b_id": tid, "b_feedback": t.feedback} for tid, t in batch.targets.items() if t.feedback_changed]
    if changed:
        await conn.execute(
            update(TARGET).where(TARGET.c.id == bindparam("b_id")).values(feedback=bindparam("b_feedback")), changed
        )
    await conn.execute(ACK.insert(), batch.acks)
    closed = await _close_if_done(s, batch, {a.alert_id for a, _ in batch.counted})
    await audit.append(s, batch.entries)
    return closed


async def _stop_chasing(s: AsyncSession, target_ids: list[str]) -> None:
    """An answered target gets no more warnings and no more escalation steps."""
    await s.execute(
        update(DELIVERY)
        .where(
            DELIVERY.c.target_id.in_(target_ids),
            not_handed_over(),  # one a dispatcher holds but has not handed over is stopped at its hand-over too
            DELIVERY.c.purpose != Purpose.LIFT.value,
        )
        .values(state=DeliveryState.CANCELLED.value, error="not sent: answered")
    )
    await deadlines.cancel_targets(s, target_ids)


async def _close_if_done(s: AsyncSession, batch: _Batch, alert_ids: set[int]) -> set[int]:
    """The alerts whose last open target this batch answered are closed: the loop is closed for everyone."""
    if not alert_ids:
        return set()
    still_open = set(
        (
            await s.execute(
                select(TARGET.c.alert_id)
                .where(TARGET.c.alert_id.in_(alert_ids), TARGET.c.state == OPEN)
                .group_by(TARGET.c.alert_id)
            )
        ).scalars()
    )
    done = alert_ids - still_open
    for alert_id in sorted(done):
        at = max(a.at for a, _ in batch.counted if a.alert_id == alert_id)
        await s.execute(
            update(ALERT)
            .where(ALERT.c.id == alert_id)
            .values(status=AlertStatus.CLOSED.value, ended_at=at, end_reason="every recipient answered")
        )
        batch.alerts[alert_id] = AlertStatus.CLOSED.value
        batch.entries.append(
            audit.Entry(
                "alert.closed", "system", at, alert_id, data={"reason": "the loop is closed for every recipient"}
            )
        )
    return done
