"""Manual tasks (鸣锣吹哨, 敲门入户): the task reaches the village's responsible person over their own channels.

The adapter carries the task through the first carrier (WeCom, then SMS, by default) that can reach
the person; the answer link opens the page that asks what was done (households reached, people moved).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import structlog

from alerting.answer.events import EventSink
from alerting.deliver.port import Channel, ChannelLimits, DeliveryError, OutboundMessage, Receipt, Webhook
from alerting.model.domain import ChannelKind

log = structlog.get_logger()


def _reaches(channel: Channel, message: OutboundMessage) -> bool:
    a = message.address
    return {
        ChannelKind.WECOM: bool(a.wecom_userid),
        ChannelKind.SMS: bool(a.phone),
        ChannelKind.VOICE: bool(a.phone),
        ChannelKind.EMAIL: bool(a.email),
    }.get(channel.kind, False)


class ManualTaskChannel:
    kind = ChannelKind.MANUAL
    webhooks: tuple[Webhook, ...] = ()  # answers come back through the carriers and the answer page

    def __init__(self, carriers: Sequence[Channel], *, limits: ChannelLimits | None = None) -> None:
        if not carriers:
            raise ValueError("manual tasks need at least one carrier channel")
        self.carriers = list(carriers)
        self.limits = limits or ChannelLimits(concurrency=20, per_second=10, burst=20)
        self.provider = "manual+" + "+".join(c.provider for c in self.carriers)
        # a task is only as real as what carries it
        self.sandbox = all(c.sandbox for c in self.carriers)

    async def start(self, events: EventSink) -> None:
        return None  # the carriers are started by the engine as channels of their own

    async def send(self, message: OutboundMessage) -> Receipt:
        last: DeliveryError | None = None
        for carrier in self.carriers:
            if not _reaches(carrier, message):
                continue
            try:
                receipt = await carrier.send(dataclasses.replace(message, channel=carrier.kind))
            except DeliveryError as exc:
                if exc.retryable:
                    raise  # the same carrier may take it shortly; the core retries the task
                log.warning(
                    "manual.carrier_refused", carrier=carrier.kind.value, code=exc.code, delivery_id=message.delivery_id
                )
                last = exc
                continue
            return Receipt(
                provider=self.provider,
                provider_id=receipt.provider_id,
                sandbox=receipt.sandbox,
                detail={"carrier": carrier.kind.value, "task": str(message.task)},
            )
        if last is not None:
            raise DeliveryError(f"no carrier took the task: {last}", retryable=False, code=last.code)
        raise DeliveryError("the person has no contact any carrier can use", retryable=False, code="no_carrier")

    async def close(self) -> None:
        return None
