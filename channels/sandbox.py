"""Sandbox adapters: one per channel kind whose provider is not configured.

They record what would have been sent and say so (Receipt.sandbox), and never claim to have reached
anyone. For the demo only, an AnswerSimulator may play the recipients answering.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import structlog

from alerting.answer.events import EventSink
from alerting.deliver.port import ChannelLimits, OutboundMessage, Receipt, Webhook
from alerting.model.domain import ChannelKind
from alerting.model.privacy import mask_phone
from channels.sim.simulation import AnswerSimulator

log = structlog.get_logger()


@dataclass(frozen=True)
class SandboxRecord:
    message: OutboundMessage
    provider_id: str


class SandboxChannel:
    provider = "sandbox"
    sandbox = True
    webhooks: tuple[Webhook, ...] = ()

    def __init__(
        self,
        kind: ChannelKind,
        *,
        simulator: AnswerSimulator | None = None,
        limits: ChannelLimits | None = None,
        keep: int = 10_000,
    ) -> None:
        self.kind = kind
        self.limits = limits or ChannelLimits(concurrency=200, per_second=100_000, burst=10_000)
        self.simulator = simulator
        self.outbox: deque[SandboxRecord] = deque(maxlen=keep)  # the most recent, for the demo and tests
        self.sent = 0
        self._events: EventSink | None = None

    async def start(self, events: EventSink) -> None:
        self._events = events
        log.warning("channel.sandbox", channel=self.kind.value, note="not configured: nothing will reach anyone")

    async def send(self, message: OutboundMessage) -> Receipt:
        self.sent += 1
        record = SandboxRecord(message, f"sandbox-{self.kind.value}-{message.delivery_id}")
        self.outbox.append(record)
        log.debug(
            "sandbox.would_send",
            channel=self.kind.value,
            alert_id=message.alert_id,
            delivery_id=message.delivery_id,
            to=mask_phone(message.address.phone) or message.address.device_id or message.address.wecom_userid,
        )
        if self.simulator is not None and self._events is not None:
            self.simulator.on_sent(message, self._events)
        return Receipt(provider=self.provider, provider_id=record.provider_id, sandbox=True)

    async def close(self) -> None:
        if self.simulator is not None:
            await self.simulator.close()
