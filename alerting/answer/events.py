"""What comes back from providers and devices, as typed events. Adapters parse their callbacks into these and
hand them to the core's sink; the core matches them in one place (alerting.answer.inbound)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alerting.model.domain import ChannelKind


@dataclass(frozen=True)
class StatusUpdate:
    """A provider's later word on a delivery (delivered, failed...)."""

    channel: ChannelKind
    at: datetime
    delivered: bool
    delivery_id: str | None = None
    provider_id: str | None = None
    error: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    # a device reporting on its own command: the report counts only if the command went to this device
    device_id: str | None = None


@dataclass(frozen=True)
class Answer:
    """Someone (or a device) answered 收到. Identified by the delivery it answers, or by phone for SMS replies."""

    channel: ChannelKind
    at: datetime
    delivery_id: str | None = None
    from_phone: str | None = None
    feedback: Mapping[str, Any] = field(default_factory=dict)
    help_needed: bool = False
    # the provider's own id for this callback (Twilio's MessageSid, a call's CallSid and key, WeCom's event):
    # a provider's retry or a replayed request carries the same, and is taken in once
    event_id: str | None = None


@dataclass(frozen=True)
class DeviceReport:
    """A device's ack on the command it was sent (command_id is the delivery id)."""

    device_id: str
    command_id: str
    status: str  # received | sounding | done | failed
    at: datetime
    detail: str | None = None


@dataclass(frozen=True)
class DeviceStatus:
    device_id: str
    online: bool
    at: datetime


@dataclass(frozen=True)
class DevicesReconnected:
    """The device channel is connected again and has taken in what its broker kept for it: acks of commands sent
    before `connected_at` that have not come by now were lost on the way."""

    connected_at: datetime
    session_kept: bool  # the broker still had our session (and queued what came while we were away)


@dataclass(frozen=True)
class InboundText:
    """Something a person sent that is not an answer (an SMS reply saying anything else). Kept, not acted on."""

    channel: ChannelKind
    at: datetime
    text: str
    from_phone: str | None = None
    from_user: str | None = None
    event_id: str | None = None


InboundEvent = StatusUpdate | Answer | DeviceReport | DeviceStatus | DevicesReconnected | InboundText
EventSink = Callable[[InboundEvent], Awaitable[None]]
