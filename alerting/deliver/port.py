"""The Channel port: what every adapter implements, and the events adapters hand back to the core.

An adapter carries; it never writes to the store. The core owns retries, rate limits, dedup,
recording and escalation. `send` either returns a Receipt or raises DeliveryError saying whether
trying again can help.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from alerting.answer.events import EventSink, InboundEvent
from alerting.model.domain import ChannelKind, Level, Purpose, TaskKind


@dataclass(frozen=True)
class Address:
    """Where a message goes: a person's contact points, or a device."""

    person_id: str | None = None
    name: str = ""
    phone: str | None = None  # E.164
    wecom_userid: str | None = None
    email: str | None = None
    device_id: str | None = None
    device_kind: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    delivery_id: str  # also the idempotency key a provider may dedup on
    alert_id: int
    channel: ChannelKind
    purpose: Purpose
    address: Address
    level: Level
    hazard: str
    exercise: bool
    title: str
    text: str  # full text, already marked 演练 for exercises
    short_text: str  # what fits an SMS with the link
    spoken_text: str  # what a voice call or a loudspeaker reads out
    ack_url: str | None
    attempt: int = 1
    step: int = 0  # 0 = first wave, k = escalation step k
    task: TaskKind | None = None
    about: str | None = None  # for escalations: whose silence this is about
    issued_at: datetime | None = None


@dataclass(frozen=True)
class Receipt:
    """The provider took the message. `delivered` only when it also confirmed it reached the recipient."""

    provider: str
    provider_id: str | None = None
    delivered: bool = False
    sandbox: bool = False
    detail: Mapping[str, Any] = field(default_factory=dict)


class DeliveryError(Exception):
    """A send failed. `retryable` says whether the same send may succeed later; `throttled` that the provider
    only asked us to slow down (429, Retry-After), which costs the delivery no attempt."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        code: str | None = None,
        retry_after: float | None = None,
        throttled: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable or throttled
        self.code = code
        self.retry_after = retry_after
        self.throttled = throttled


@dataclass(frozen=True)
class ChannelLimits:
    concurrency: int = 50  # sends in flight at once
    per_second: float = 1000.0  # token bucket rate for the provider account
    burst: int = 100
    # some providers also cap what one recipient may receive (WeCom: per member per minute)
    per_recipient_per_minute: int | None = None


# ---- provider callbacks -------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookRequest:
    """A provider's HTTP callback as the adapter needs it, free of any web framework."""

    method: str
    url: str  # as the provider called it: JIAOYING_PUBLIC_URL + path + query, which is what it signed
    path: str  # below /webhooks/{name}, e.g. "/sms/status"
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    form: Mapping[str, str]  # application/x-www-form-urlencoded bodies, parsed; empty otherwise
    body: bytes


@dataclass(frozen=True)
class WebhookReply:
    """What to answer the provider, and the events the callback carried (none when it was refused)."""

    status: int = 200
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    events: tuple[InboundEvent, ...] = ()


class Webhook(Protocol):
    name: str  # served at /webhooks/{name}/...

    async def handle(self, request: WebhookRequest) -> WebhookReply:
        """Check the signature, parse, and return the events. A bad signature is a 403 with no events."""
        ...


class Channel(Protocol):
    kind: ChannelKind
    provider: str  # "sandbox", "twilio", "wecom", "mqtt"...
    sandbox: bool
    limits: ChannelLimits
    webhooks: tuple[Webhook, ...]  # provider callbacks this adapter parses; empty when it has none

    async def start(self, events: EventSink) -> None:
        """Connect and begin handing provider events to `events`."""
        ...

    async def send(self, message: OutboundMessage) -> Receipt: ...

    async def close(self) -> None: ...
