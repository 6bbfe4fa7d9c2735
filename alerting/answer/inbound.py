"""What comes back from providers and devices, turned into changes in the store. Adapters only hand events here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

import structlog
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from alerting.answer.acks import AckService, take_once
from alerting.answer.events import (
    Answer,
    DeviceReport,
    DevicesReconnected,
    DeviceStatus,
    InboundEvent,
    InboundText,
    StatusUpdate,
)
from alerting.answer.outcomes import AlreadyTaken, AnswerRejected
from alerting.answer.reconnect import resend_to_returning, resend_unconfirmed
from alerting.answer.reports import Report, apply_reports_job
from alerting.audit import chain as audit
from alerting.model.clock import Clock, SystemClock
from alerting.model.domain import ChannelKind
from alerting.model.privacy import mask_phone
from alerting.store.db import Database
from alerting.store.tables import Device, core_table
from alerting.store.writer import Coalesced

log = structlog.get_logger()

DEVICE = core_table(Device)

# a device saying it is sounding or has played the warning is its answer
DEVICE_ANSWERS = {"sounding", "done"}

# how long a device asked again after a lost link has to confirm before its next escalation step may run
RESEND_WINDOW = timedelta(seconds=60)


class StatusTaken(NamedTuple):
    known: bool  # the directory has the device
    asked_again: bool  # the device came back online and is sent again what it had not confirmed


class Inbound:
    def __init__(
        self,
        db: Database,
        acks: AckService,
        *,
        clock: Clock | None = None,
        wake: Callable[[], None] = lambda: None,
        resend_window: timedelta = RESEND_WINDOW,
    ) -> None:
        self.db, self.acks = db, acks
        self.clock: Clock = clock or SystemClock()
        self.wake = wake  # the dispatcher, for commands queued again
        self.resend_window = resend_window
        self.rejected = 0
        self._unknown_devices: set[str] = set()
        self._link_back_at: datetime | None = None  # when the device channel last said its link was back
        self._reports = Coalesced(db.writer, apply_reports_job(db))
        self._statuses = Coalesced(db.writer, self._apply_statuses)

    async def __call__(self, event: InboundEvent) -> None:
        try:
            await self.handle(event)
        except AlreadyTaken as exc:
            log.info("inbound.already_taken", key=str(exc))
        except AnswerRejected as exc:
            self.rejected += 1
            log.warning("inbound.rejected", reason=str(exc), kind=type(event).__name__)

    async def handle(self, event: InboundEvent) -> None:
        match event:
            case Answer(delivery_id=str(delivery_id)):
                await self.acks.answer_delivery(
                    delivery_id, channel=event.channel, at=event.at, feedback=_feedback(event), once=event.event_id
                )
            case Answer(from_phone=str(phone)):
                await self.acks.answer_by_phone(
                    phone, channel=event.channel, at=event.at, feedback=_feedback(event), once=event.event_id
                )
            case Answer():
                raise AnswerRejected("an answer names neither a delivery nor a phone number")
            case StatusUpdate():
                await self.status(event)
            case DeviceReport():
                await self.device_report(event)
            case InboundText():
                async with self.db.session() as s:
                    if event.event_id is not None and not await take_once(s, event.event_id, event.at):
                        raise AlreadyTaken(event.event_id)
                    await audit.record(
                        s,
                        "inbound.text",
                        actor=event.channel.value,
                        at=event.at,
                        subject=mask_phone(event.from_phone) or event.from_user,
                        data={"text": event.text[:500]},
                    )
            case DevicesReconnected():
                await self.devices_reconnected(event)
            case DeviceStatus():
                taken = await self._statuses(event)
                if not taken.known and event.device_id not in self._unknown_devices:
                    # a device the directory does not know: said once per device, not on every retained status
                    self._unknown_devices.add(event.device_id)
                    log.warning("inbound.unknown_device", device_id=event.device_id, online=event.online)
                if taken.asked_again:
                    log.info("inbound.device_asked_again", device_id=event.device_id)
                    self.wake()

    async def devices_reconnected(self, event: DevicesReconnected) -> None:
        """Ask again every device whose confirmation of an earlier command has not come (answer.reconnect)."""
        now: datetime = self.clock.now()
        self._link_back_at = now
        async with self.db.session() as s:
            resent = await resend_unconfirmed(s, event.connected_at, now, self.resend_window)
        if resent.commands:
            log.warning(
                "inbound.devices_asked_again",
                commands=resent.commands,
                deadlines_moved=resent.deadlines_moved,
                session_kept=event.session_kept,
            )
            self.wake()

    async def _apply_statuses(self, s: AsyncSession, statuses: list[DeviceStatus]) -> dict[DeviceStatus, StatusTaken]:
        """Online/offline reports in arrival order, each only over an older one. A retained status the broker hands
        over again after a reconnect does not undo a newer one; a device announcing itself online anew is sent
        again what it has not confirmed (answer.reconnect)."""
        ids = {e.device_id for e in statuses}
        heard = await s.execute(select(DEVICE.c.id, DEVICE.c.status_at).where(DEVICE.c.id.in_(ids)))
        last_heard: dict[str, datetime | None] = {r.id: r.status_at for r in heard}
        back_at: dict[str, datetime] = {}
        for e in (e for e in statuses if e.device_id in last_heard):
            before = last_heard[e.device_id]
            if before is not None and e.at <= before:
                continue  # heard already, or older than what was
            last_heard[e.device_id] = e.at
            if e.online:
                back_at[e.device_id] = e.at
            else:
                back_at.pop(e.device_id, None)  # gone again: a resend would only be lost
        newer = or_(DEVICE.c.status_at.is_(None), DEVICE.c.status_at <= bindparam("b_at"))
        rows = [
            {"b_id": e.device_id, "b_online": e.online, "b_at": e.at} for e in statuses if e.device_id in last_heard
        ]
        if rows:
            await (await s.connection()).execute(
                update(DEVICE)
                .where(DEVICE.c.id == bindparam("b_id"), newer)
                .values(online=bindparam("b_online"), status_at=bindparam("b_at")),
                rows,
            )
        now: datetime = self.clock.now()
        # a device back within a window of our own link coming back was away because of it: its time runs anew
        after_link = self._link_back_at is not None and now - self._link_back_at <= self.resend_window
        resent = await resend_to_returning(s, back_at, now, self.resend_window if after_link else None)
        return {e: StatusTaken(e.device_id in last_heard, e.device_id in resent.devices) for e in statuses}

    async def status(self, event: StatusUpdate) -> None:
        """A later word from the provider, applied once and in any order, in batches (answer.reports)."""
        await self._reports(Report(event))

    async def device_report(self, event: DeviceReport) -> None:
        """A siren's ack: "received" says the command arrived, "sounding" or "done" is its answer, "failed" is a
        failure. Both the report and the answer go through the batched writer; the device must be the command's."""
        said = {"status": event.status}
        if event.status in DEVICE_ANSWERS:
            report = StatusUpdate(
                ChannelKind.DEVICE, event.at, True, delivery_id=event.command_id, detail=said, device_id=event.device_id
            )
            # every engine subscribed gets the same ack: one status of one command is one answer, recorded once
            answer = self.acks.answer_delivery(
                event.command_id,
                channel=ChannelKind.DEVICE,
                at=event.at,
                feedback={"device_status": event.status},
                once=f"device:{event.device_id}:{event.command_id}:{event.status}",
                device_id=event.device_id,
            )
            # both, even when one is refused: the ack is acknowledged to the broker only once all of it is durable
            for outcome in await asyncio.gather(self.status(report), answer, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
            return
        delivered = event.status == "received"
        error = None if delivered else f"device reported {event.status}: {event.detail or ''}".strip()
        await self.status(
            StatusUpdate(
                ChannelKind.DEVICE,
                event.at,
                delivered,
                delivery_id=event.command_id,
                error=error,
                detail=said if delivered else {},
                device_id=event.device_id,
            )
        )


def _feedback(event: Answer) -> dict[str, object]:
    return {**event.feedback, **({"help_needed": True} if event.help_needed else {})}
