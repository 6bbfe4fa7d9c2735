"""Answers. At most one counts per target (the first); every later one is kept as an event.

Counting is a conditional UPDATE (open -> answered) inside the transaction, so two answers racing
in from two channels cannot both count, on SQLite or PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.model.actor import Actor, ActorKind
from alerting.model.deliveries import not_handed_over
from alerting.model.domain import AlertStatus, ChannelKind, DeadlineState, DeliveryState, Purpose, TargetState
from alerting.model.ids import new_id
from alerting.model.privacy import mask_phone
from alerting.store.db import Database, rowcount
from alerting.store.tables import Acknowledgement, Alert, Deadline, Delivery, InboundSeen, Person, Target

log = structlog.get_logger()


async def take_once(s: AsyncSession, key: str, at: datetime) -> bool:
    """Record that the inbound event with this key was taken in; False if it was before (by any process).

    A savepoint keeps the caller's transaction usable when the key is already there."""
    try:
        async with s.begin_nested():
            s.add(InboundSeen(key=key[:200], at=at))
            await s.flush()
    except IntegrityError:
        return False
    return True


class AlreadyTaken(Exception):
    """This very report was taken in before (by this process or another one that received it too)."""


class AnswerRejected(LookupError):
    """The answer cannot be matched to anything that can be answered; the message says why."""


@dataclass(frozen=True)
class AnswerResult:
    alert_id: int
    target_id: str
    counted: bool  # this answer closed the target
    state: TargetState  # the target's state after the answer
    answered_at: datetime | None
    answered_by: str | None
    alert_status: AlertStatus
    alert_closed_now: bool = False
    help_needed: bool = False  # this answer asked for help (on an alert not lifted)


HelpHandler = Callable[[int, str], Awaitable[None]]


async def _no_help(alert_id: int, target_id: str) -> None:
    return None


class AckService:
    def __init__(self, db: Database, on_help: HelpHandler = _no_help) -> None:
        # on_help runs after the answer is committed: a call for help goes up the hierarchy at once
        self.db, self.on_help = db, on_help

    async def answer_delivery(
        self,
        delivery_id: str,
        *,
        channel: ChannelKind,
        at: datetime,
        feedback: Mapping[str, Any] | None = None,
        once: str | None = None,
        device_id: str | None = None,
    ) -> AnswerResult:
        """An answer through the link, a key press, a button or a device ack: the delivery says who and about whom.

        `once` keys a report that may arrive more than once (a device ack goes to every engine subscribed, and
        QoS 1 may repeat it): the first to store the key records the answer, any other raises AlreadyTaken.
        `device_id`, for a device's ack: the device the command went to, since one device cannot answer for another."""

        async def job(s: AsyncSession) -> AnswerResult:
            # first of all: a second process inserting the same key waits here for this transaction
            if once is not None and not await take_once(s, once, at):
                raise AlreadyTaken(once)
            d = await s.get(Delivery, delivery_id)
            if d is None:
                raise AnswerRejected(f"no delivery {delivery_id}")
            if device_id is not None and d.device_id != device_id:
                raise AnswerRejected(f"device {device_id} reported on a command that was not sent to it")
            if d.purpose == Purpose.LIFT.value:
                raise AnswerRejected("a lifted notice needs no answer")
            return await self._answer(
                s,
                d.alert_id,
                d.target_id,
                by=Actor.person(d.person_id) if d.person_id else Actor.device(),
                channel=channel,
                at=at,
                delivery_id=d.id,
                feedback=feedback,
            )

        return await self._batched(job)

    async def answer_by_phone(
        self,
        phone: str,
        *,
        channel: ChannelKind,
        at: datetime,
        feedback: Mapping[str, Any] | None = None,
        once: str | None = None,
    ) -> AnswerResult:
        """An SMS reply: it answers the most recent open target this number was contacted about."""

        async def job(s: AsyncSession) -> AnswerResult:
            if once is not None and not await take_once(s, once, at):
                raise AlreadyTaken(once)  # a replayed reply must not answer an alert issued since
            person_ids = list((await s.execute(select(col(Person.id)).where(col(Person.phone) == phone))).scalars())
            if not person_ids:
                raise AnswerRejected(f"number {mask_phone(phone)} belongs to nobody in the directory")
            row = (
                await s.execute(
                    select(col(Delivery.id), col(Delivery.alert_id), col(Delivery.target_id), col(Delivery.person_id))
                    .join(Target, col(Target.id) == Delivery.target_id)
                    .join(Alert, col(Alert.id) == Delivery.alert_id)
                    .where(
                        col(Delivery.person_id).in_(person_ids),
                        col(Delivery.purpose) != Purpose.LIFT.value,
                        col(Target.state) == TargetState.OPEN.value,
                        col(Alert.status) == AlertStatus.ACTIVE.value,
                    )
                    .order_by(col(Delivery.created_at).desc())
                    .limit(1)
                )
            ).first()
            if row is None:
                raise AnswerRejected(f"nothing is waiting for an answer from {mask_phone(phone)}")
            return await self._answer(
                s,
                row.alert_id,
                row.target_id,
                by=Actor.person(row.person_id),
                channel=channel,
                at=at,
                delivery_id=row.id,
                feedback=feedback,
            )

        return await self._batched(job)

    async def _batched(self, job: Callable[[AsyncSession], Awaitable[AnswerResult]]) -> AnswerResult:
        """Run one answer in the group-committing writer, so a burst of answers shares commits; it returns
        once the answer is durable. Each runs in its own savepoint: one refused or already taken rolls back
        alone (its take-once key with it) and the answers batched with it still commit."""

        async def isolated(s: AsyncSession) -> AnswerResult | AlreadyTaken | AnswerRejected:
            try:
                async with s.begin_nested():
                    return await job(s)
            except (AlreadyTaken, AnswerRejected) as refused:
                return refused

        outcome = await self.db.writer.run(isolated)
        if isinstance(outcome, Exception):
            raise outcome
        await self._changed(outcome)
        return outcome

    async def answer_on_behalf(
        self, alert_id: int, target_id: str, *, by: Actor, reason: str, at: datetime
    ) -> AnswerResult:
        """The duty officer answers for someone (they phoned in, or were reached in person). A reason is required."""
        if not reason.strip():
            raise ValueError("answering on someone's behalf needs a reason")
        async with self.db.session() as s:
            target = await s.get(Target, target_id)
            if target is None or target.alert_id != alert_id:
                raise AnswerRejected(f"alert {alert_id} has no recipient {target_id}")
            result = await self._answer(
                s, alert_id, target_id, by=by, channel=ChannelKind.MANUAL, at=at, reason=reason.strip()
            )
        await self._changed(result)
        return result

    async def _changed(self, result: AnswerResult) -> None:
        log.info("ack.recorded", alert_id=result.alert_id, target_id=result.target_id, counted=result.counted)
        if result.help_needed:
            await self.on_help(result.alert_id, result.target_id)

    async def _answer(
        self,
        s: AsyncSession,
        alert_id: int,
        target_id: str,
        *,
        by: Actor,
        channel: ChannelKind,
        at: datetime,
        delivery_id: str | None = None,
        feedback: Mapping[str, Any] | None = None,
        reason: str | None = None,
    ) -> AnswerResult:
        alert = await s.get(Alert, alert_id)
        target = await s.get(Target, target_id)
        assert alert is not None
        assert target is not None
        own = by.kind is ActorKind.DEVICE or (by.person_id is not None and by.person_id == target.person_id)
        state = TargetState.ANSWERED if own and reason is None else TargetState.ANSWERED_FOR
        fb = dict(feedback) if feedback else None
        counted = False
        if alert.status == AlertStatus.ACTIVE.value:
            won = await s.execute(
                update(Target)
                .where(col(Target.id) == target_id, col(Target.state) == TargetState.OPEN.value)
                .values(
                    state=state.value, answered_at=at, answered_by=by.text, answer_channel=channel.value, feedback=fb
                )
            )
            counted = rowcount(won) == 1
        ack_id = new_id()
        s.add(
            Acknowledgement(
                id=ack_id,
                alert_id=alert_id,
                target_id=target_id,
                person_id=by.person_id,
                delivery_id=delivery_id,
                channel=channel.value,
                at=at,
                counted=counted,
                on_behalf_reason=reason,
                feedback=fb,
            )
        )
        data: dict[str, Any] = {"by": by.text, "channel": channel.value, "delivery": delivery_id, "ack": ack_id}
        if reason:
            data["reason"] = reason
        if fb:
            data["feedback"] = fb
        closed_now = False
        if counted:
            await _stop_chasing(s, target_id)
            kind = f"target.{state.value}"
        elif alert.status != AlertStatus.ACTIVE.value:
            kind = "ack.after_end"  # kept, but the alert was already lifted or closed
        else:
            kind = "ack.repeated"
            if fb:  # what someone reports later (more people moved, help needed) is kept with the answer
                target.feedback = {**(target.feedback or {}), **fb}
                s.add(target)
        await audit.record(s, kind, actor=by.text, at=at, alert_id=alert_id, subject=target_id, data=data)
        if fb and fb.get("help_needed"):  # whether first or later: help is never buried in a repeat
            await audit.record(s, "help.requested", actor=by.text, at=at, alert_id=alert_id, subject=target_id, data=fb)
        if counted:
            closed_now = await _close_if_done(s, alert, at)
        await s.flush()
        await s.refresh(target)
        return AnswerResult(
            alert_id=alert_id,
            target_id=target_id,
            counted=counted,
            state=TargetState(target.state),
            answered_at=target.answered_at,
            answered_by=target.answered_by,
            alert_status=AlertStatus(alert.status),
            alert_closed_now=closed_now,
            help_needed=bool(fb and fb.get("help_needed")) and alert.status != AlertStatus.CANCELLED.value,
        )


async def _stop_chasing(s: AsyncSession, target_id: str) -> None:
    """An answered target gets no more warnings and no more escalation steps."""
    await s.execute(
        update(Delivery)
        .where(
            col(Delivery.target_id) == target_id,
            not_handed_over(),  # one a dispatcher holds but has not handed over is stopped at its hand-over too
            col(Delivery.purpose) != Purpose.LIFT.value,
        )
        .values(state=DeliveryState.CANCELLED.value, error="not sent: answered")
    )
    await s.execute(
        update(Deadline)
        .where(col(Deadline.target_id) == target_id, col(Deadline.state) == DeadlineState.PENDING.value)
        .values(state=DeadlineState.CANCELLED.value)
    )


async def _close_if_done(s: AsyncSession, alert: Alert, at: datetime) -> bool:
    open_left = await s.scalar(
        select(func.count())
        .select_from(Target)
        .where(col(Target.alert_id) == alert.id, col(Target.state) == TargetState.OPEN.value)
    )
    if open_left:
        return False
    alert.status, alert.ended_at, alert.end_reason = AlertStatus.CLOSED.value, at, "every recipient answered"
    s.add(alert)
    await audit.record(
        s,
        "alert.closed",
        actor="system",
        at=at,
        alert_id=alert.id,
        data={"reason": "the loop is closed for every recipient"},
    )
    return True
