"""Answers. At most one counts per target (the first); every later one is kept as an event.

Answers come in bursts (a red alert's sirens ack within seconds, grid workers open their links together), so
they go through the group-committing writer in batches (answer.apply): whatever has arrived when the writer gets
to it is applied in a handful of statements and one commit, and each caller hears back once it is durable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from alerting.answer.apply import Incoming, Resolved, apply_answers_job, record_answers
from alerting.answer.outcomes import AnswerRejected, AnswerResult, Outcome
from alerting.audit import chain as audit
from alerting.model.actor import Actor
from alerting.model.domain import ChannelKind, TargetState
from alerting.model.privacy import mask_phone
from alerting.store.db import Database
from alerting.store.tables import InboundSeen, Person, Target
from alerting.store.writer import Coalesced

log = structlog.get_logger()

CALLED_NO_ANSWER = "target.called_no_answer"  # the audit kind of a call the duty officer made that nobody took


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


HelpHandler = Callable[[int, str], Awaitable[None]]


async def _no_help(alert_id: int, target_id: str) -> None:
    return None


class AckService:
    def __init__(self, db: Database, on_help: HelpHandler = _no_help) -> None:
        # on_help runs after the answer is committed: a call for help goes up the hierarchy at once
        self.db, self.on_help = db, on_help
        self._apply = apply_answers_job(db)
        self._answers = Coalesced(db.writer, self._apply)

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
        return await self._take(
            Incoming(channel, at, delivery_id=delivery_id, feedback=feedback, once=once, device_id=device_id)
        )

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
        return await self._take(Incoming(channel, at, phone=phone, feedback=feedback, once=once))

    async def _take(self, incoming: Incoming) -> AnswerResult:
        try:
            outcome: Outcome = await self._answers(incoming)
        except Exception as exc:
            log.warning("ack.batch_failed_retrying_alone", error=repr(exc))
            outcome = (await self.db.writer.run(lambda s: self._apply(s, [incoming])))[incoming]
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
            answer = Resolved(alert_id, target_id, by, ChannelKind.MANUAL, at, reason=reason.strip())
            [result] = await record_answers(s, [answer])
        await self._changed(result)
        return result

    async def called_no_answer(
        self, alert_id: int, target_id: str, *, by: Actor, at: datetime, note: str = ""
    ) -> TargetState:
        """The duty officer phoned a silent recipient and nobody took the call: audited (who, whom, which number,
        masked), changing nothing else, since a call not taken is no answer. Recorded whatever the target's state
        now is (the officer did call); the state is returned so the caller can say whether the call was still
        needed."""
        async with self.db.session() as s:
            target = await s.get(Target, target_id)
            if target is None or target.alert_id != alert_id or target.person_id is None:
                raise AnswerRejected(f"alert {alert_id} has no person {target_id} to call")
            person = await s.get(Person, target.person_id)
            data: dict[str, Any] = {"outcome": "no_answer", "person": target.person_id}
            data["dialled"] = mask_phone(person.phone if person else None)
            if note.strip():
                data["note"] = note.strip()
            await audit.record(
                s, CALLED_NO_ANSWER, actor=by.text, at=at, alert_id=alert_id, subject=target_id, data=data
            )
            state = TargetState(target.state)
        log.info("call.no_answer", alert_id=alert_id, target_id=target_id, actor=by.text)
        return state

    async def _changed(self, result: AnswerResult) -> None:
        log.info("ack.recorded", alert_id=result.alert_id, target_id=result.target_id, counted=result.counted)
        if result.help_needed:
            await self.on_help(result.alert_id, result.target_id)
