"""What comes back from providers and devices, turned into changes in the store. Adapters only hand events here."""

from __future__ import annotations

import structlog
from sqlalchemy import select, update
from sqlmodel import col

from alerting.answer.acks import AckService, AlreadyTaken, AnswerRejected, take_once
from alerting.answer.events import Answer, DeviceReport, DeviceStatus, InboundEvent, InboundText, StatusUpdate
from alerting.answer.reports import Report, apply_reports_job
from alerting.audit import chain as audit
from alerting.model.domain import ChannelKind
from alerting.model.privacy import mask_phone
from alerting.store.db import Database, rowcount
from alerting.store.tables import Delivery, Device
from alerting.store.writer import Coalesced

log = structlog.get_logger()

# a device saying it is sounding or has played the warning is its answer
DEVICE_ANSWERS = {"sounding", "done"}


class Inbound:
    def __init__(self, db: Database, acks: AckService) -> None:
        self.db, self.acks = db, acks
        self.rejected = 0
        self._unknown_devices: set[str] = set()
        self._reports = Coalesced(db.writer, apply_reports_job(db))

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
            case DeviceStatus():
                async with self.db.session() as s:
                    known = rowcount(
                        await s.execute(
                            update(Device)
                            .where(col(Device.id) == event.device_id)
                            .values(online=event.online, status_at=event.at)
                        )
                    )
                if not known and event.device_id not in self._unknown_devices:
                    # a device the directory does not know: said once per device, not on every retained status
                    self._unknown_devices.add(event.device_id)
                    log.warning("inbound.unknown_device", device_id=event.device_id, online=event.online)

    async def status(self, event: StatusUpdate) -> None:
        """A later word from the provider, applied once and in any order, in batches (answer.reports)."""
        await self._reports(Report(event))

    async def device_report(self, event: DeviceReport) -> None:
        async with self.db.session() as s:
            device = await s.scalar(select(col(Delivery.device_id)).where(col(Delivery.id) == event.command_id))
        if device != event.device_id:  # one device cannot answer for another device's command
            raise AnswerRejected(f"device {event.device_id} reported on a command that was not sent to it")
        if event.status in DEVICE_ANSWERS:
            await self.status(
                StatusUpdate(
                    ChannelKind.DEVICE, event.at, True, delivery_id=event.command_id, detail={"status": event.status}
                )
            )
            # every engine subscribed gets the same ack: one status of one command is one answer, recorded once
            await self.acks.answer_delivery(
                event.command_id,
                channel=ChannelKind.DEVICE,
                at=event.at,
                feedback={"device_status": event.status},
                once=f"device:{event.device_id}:{event.command_id}:{event.status}",
            )
        elif event.status == "received":
            await self.status(
                StatusUpdate(
                    ChannelKind.DEVICE, event.at, True, delivery_id=event.command_id, detail={"status": event.status}
                )
            )
        else:
            await self.status(
                StatusUpdate(
                    ChannelKind.DEVICE,
                    event.at,
                    False,
                    delivery_id=event.command_id,
                    error=f"device reported {event.status}: {event.detail or ''}".strip(),
                )
            )


def _feedback(event: Answer) -> dict[str, object]:
    return {**event.feedback, **({"help_needed": True} if event.help_needed else {})}
