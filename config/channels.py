"""Which adapter carries each channel kind: the real one where its provider is configured, else a sandbox.

Each provider is a model of its own settings that says when they are complete and builds its adapters
(`Provider`); MQTT devices always have a real adapter, on the configured broker or the embedded one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar, Self

from pydantic import BaseModel

from alerting.deliver.port import Channel, ChannelLimits
from alerting.model.clock import Clock
from alerting.model.domain import ChannelKind
from channels.broadcast import BroadcastChannel
from channels.email import EmailChannel
from channels.manual import ManualTaskChannel
from channels.mqtt.broker import EmbeddedBroker
from channels.mqtt.devices import DEFAULT_LIMITS as DEVICE_LIMITS
from channels.mqtt.devices import MqttDeviceChannel
from channels.sandbox import SandboxChannel
from channels.sim.simulation import AnswerSimulator
from channels.twilio.common import TwilioWebhook
from channels.twilio.sms import TwilioSms
from channels.twilio.voice import TwilioVoice
from channels.wecom.client import WeComChannel
from config.settings import BroadcastSettings, EmailSettings, Settings, TwilioSettings, WeComSettings


class IncompleteProvider(ValueError):
    """A provider given some of the settings it needs but not all: start-up stops rather than run a sandbox."""


class Provider(BaseModel):
    """A provider's settings that build its adapters. A subclass names the settings it cannot work without
    (`required`) and what start-up says when only some of them are given (`incomplete`); `build` makes its
    adapters. Adding a provider is a settings group in config.settings and one such model in PROVIDERS."""

    required: ClassVar[tuple[str, ...]]
    incomplete: ClassVar[str]

    @classmethod
    def of(cls, settings: Settings) -> Self:
        """This provider's part of the settings."""
        return cls.model_validate({name: getattr(settings, name) for name in cls.model_fields})

    @staticmethod
    def given(value: object) -> bool:
        """Whether a required setting counts as given (an empty value does not)."""
        return bool(value)

    def complete(self) -> bool:
        """True when every required setting is given, False when none is; anything between stops start-up."""
        given = [self.given(getattr(self, name)) for name in self.required]
        if all(given):
            return True
        if any(given):
            raise IncompleteProvider(self.incomplete)
        return False

    def build(self, clock: Clock, *, public_url: str) -> dict[ChannelKind, Channel]:
        """The adapters of a complete provider, by the channel kind each carries."""
        raise NotImplementedError


def _secret(value: object) -> str:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get else str(value)


class Twilio(TwilioSettings, Provider):
    required = ("twilio_account_sid", "twilio_auth_token", "twilio_from_number")
    incomplete = "Twilio needs JIAOYING_TWILIO_ACCOUNT_SID, _AUTH_TOKEN and _FROM_NUMBER together"

    def build(self, clock: Clock, *, public_url: str) -> dict[ChannelKind, Channel]:
        assert self.twilio_account_sid and self.twilio_from_number
        token = _secret(self.twilio_auth_token)
        webhook = TwilioWebhook(token, clock=clock)  # SMS and voice answer on one /webhooks/twilio
        twilio_channels = (
            (TwilioSms, 50, self.twilio_sms_per_second),  # the account's messages per second (MPS)
            (TwilioVoice, 20, self.twilio_calls_per_second),  # calls per second (CPS)
        )
        return {
            adapter.kind: adapter(
                account_sid=self.twilio_account_sid,
                auth_token=token,
                from_number=self.twilio_from_number,
                public_url=public_url,
                base_url=self.twilio_base_url,
                webhook=webhook,
                clock=clock,
                limits=ChannelLimits(concurrency=concurrency, per_second=rate, burst=max(1, int(rate))),
                timeout=self.twilio_timeout_s,
            )
            for adapter, concurrency, rate in twilio_channels
        }


class WeCom(WeComSettings, Provider):
    required = ("wecom_corp_id", "wecom_secret", "wecom_agent_id", "wecom_token", "wecom_aes_key")
    incomplete = "WeCom needs JIAOYING_WECOM_CORP_ID, _SECRET, _AGENT_ID, _TOKEN and _AES_KEY together"

    @staticmethod
    def given(value: object) -> bool:
        return value is not None  # an agent id of 0 is given

    def build(self, clock: Clock, *, public_url: str) -> dict[ChannelKind, Channel]:
        assert self.wecom_corp_id is not None and self.wecom_agent_id is not None
        channel = WeComChannel(
            self.wecom_corp_id,
            _secret(self.wecom_secret),
            self.wecom_agent_id,
            token=_secret(self.wecom_token),
            aes_key=_secret(self.wecom_aes_key),
            base_url=self.wecom_base_url,
            public_url=public_url,
            limits=ChannelLimits(
                concurrency=20,
                per_second=self.wecom_per_second,
                burst=max(1, int(self.wecom_per_second)),
                per_recipient_per_minute=self.wecom_per_member_per_minute,
            ),
            card_mode=self.wecom_card_mode,
            clock=clock,
        )
        return {ChannelKind.WECOM: channel}


class Email(EmailSettings, Provider):
    required = ("smtp_host", "smtp_from")
    incomplete = "email needs JIAOYING_SMTP_HOST and JIAOYING_SMTP_FROM together"

    def build(self, clock: Clock, *, public_url: str) -> dict[ChannelKind, Channel]:
        assert self.smtp_host and self.smtp_from
        channel = EmailChannel(
            self.smtp_host,
            self.smtp_port,
            username=self.smtp_username,
            password=_secret(self.smtp_password) if self.smtp_password else None,
            sender=self.smtp_from,
            starttls=self.smtp_starttls,
            use_tls=self.smtp_tls,
            limits=ChannelLimits(concurrency=4, per_second=self.smtp_per_second, burst=10),
            clock=clock,
        )
        return {ChannelKind.EMAIL: channel}


class Broadcast(BroadcastSettings, Provider):
    required = ("broadcast_url", "broadcast_secret")
    incomplete = "the broadcast gateway needs JIAOYING_BROADCAST_URL and _BROADCAST_SECRET together"

    def build(self, clock: Clock, *, public_url: str) -> dict[ChannelKind, Channel]:
        assert self.broadcast_url
        channel = BroadcastChannel(
            self.broadcast_url,
            _secret(self.broadcast_secret),
            public_url=public_url,
            limits=ChannelLimits(concurrency=20, per_second=self.broadcast_per_second, burst=20),
            clock=clock,
        )
        return {ChannelKind.BROADCAST: channel}


# in this order: the first half-configured one is the one start-up names
PROVIDERS: tuple[type[Provider], ...] = (Twilio, WeCom, Email, Broadcast)


def provider_channels(s: Settings, clock: Clock) -> dict[ChannelKind, Channel]:
    """The real adapters whose settings are complete. A half-configured provider is an error, not a sandbox."""
    chosen: dict[ChannelKind, Channel] = {}
    for model in PROVIDERS:
        provider = model.of(s)
        if provider.complete():
            chosen.update(provider.build(clock, public_url=s.public_url))
    return chosen


def device_channel(s: Settings, clock: Clock) -> tuple[Channel, EmbeddedBroker | None]:
    """MQTT devices: the configured broker, or the embedded one when JIAOYING_MQTT_URL is unset."""
    # without JIAOYING_MQTT_CLIENT_ID the engine names the client from its slot when it starts (config.wiring)
    rate = s.mqtt_commands_per_second
    limits = replace(DEVICE_LIMITS, per_second=rate, burst=max(1, min(DEVICE_LIMITS.burst, int(rate))))
    broker = None if s.mqtt_url else EmbeddedBroker(port=s.mqtt_embedded_port)
    url = s.mqtt_url or f"mqtt://127.0.0.1:{s.mqtt_embedded_port}"
    channel = MqttDeviceChannel(
        url,
        topic_prefix=s.mqtt_topic_prefix,
        client_id=s.mqtt_client_id,
        clock=clock,
        limits=limits,
        shared_group=s.mqtt_shared_group,
    )
    return channel, broker


def complete(given: Mapping[ChannelKind, Channel], simulator: AnswerSimulator | None) -> dict[ChannelKind, Channel]:
    """Every kind gets an adapter: sandboxes for the rest, and manual tasks carried by WeCom, then SMS."""
    chosen = dict(given)
    for kind in ChannelKind:
        if kind is not ChannelKind.MANUAL:
            chosen.setdefault(kind, SandboxChannel(kind, simulator=simulator))
    chosen.setdefault(ChannelKind.MANUAL, _manual(chosen, simulator))
    return chosen


def _manual(chosen: Mapping[ChannelKind, Channel], simulator: AnswerSimulator | None) -> Channel:
    carriers = [chosen[ChannelKind.WECOM], chosen[ChannelKind.SMS]]
    if all(c.sandbox for c in carriers):
        # nothing real to carry tasks: a sandbox of its own, so the demo's village heads can answer them
        return SandboxChannel(ChannelKind.MANUAL, simulator=simulator)
    return ManualTaskChannel([c for c in carriers if not c.sandbox])
