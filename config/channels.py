"""Which adapter carries each channel kind: the real one where its provider is configured, else a sandbox."""

from __future__ import annotations

from collections.abc import Mapping

from alerting.deliver.port import Channel, ChannelLimits
from alerting.model.clock import Clock
from alerting.model.domain import ChannelKind
from channels.broadcast import BroadcastChannel
from channels.email import EmailChannel
from channels.manual import ManualTaskChannel
from channels.mqtt.broker import EmbeddedBroker
from channels.mqtt.devices import MqttDeviceChannel
from channels.sandbox import SandboxChannel
from channels.sim.simulation import AnswerSimulator
from channels.twilio.common import TwilioWebhook
from channels.twilio.sms import TwilioSms
from channels.twilio.voice import TwilioVoice
from channels.wecom.client import WeComChannel
from config.settings import Settings


def _secret(value: object) -> str:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get else str(value)


def provider_channels(s: Settings, clock: Clock) -> dict[ChannelKind, Channel]:
    """The real adapters whose settings are complete. A half-configured provider is an error, not a sandbox."""
    chosen: dict[ChannelKind, Channel] = {}
    twilio = (s.twilio_account_sid, s.twilio_auth_token, s.twilio_from_number)
    if any(twilio):
        if not all(twilio):
            raise ValueError("Twilio needs JIAOYING_TWILIO_ACCOUNT_SID, _AUTH_TOKEN and _FROM_NUMBER together")
        assert s.twilio_account_sid and s.twilio_from_number
        token = _secret(s.twilio_auth_token)
        webhook = TwilioWebhook(token, clock=clock)  # SMS and voice answer on one /webhooks/twilio
        twilio_channels = (
            (TwilioSms, 50, s.twilio_sms_per_second),  # the account's messages per second (MPS)
            (TwilioVoice, 20, s.twilio_calls_per_second),  # calls per second (CPS)
        )
        for adapter, concurrency, rate in twilio_channels:
            chosen[adapter.kind] = adapter(
                account_sid=s.twilio_account_sid,
                auth_token=token,
                from_number=s.twilio_from_number,
                public_url=s.public_url,
                base_url=s.twilio_base_url,
                webhook=webhook,
                clock=clock,
                limits=ChannelLimits(concurrency=concurrency, per_second=rate, burst=max(1, int(rate))),
            )
    wecom = (s.wecom_corp_id, s.wecom_secret, s.wecom_agent_id, s.wecom_token, s.wecom_aes_key)
    if any(v is not None for v in wecom):
        if not all(v is not None for v in wecom):
            raise ValueError("WeCom needs JIAOYING_WECOM_CORP_ID, _SECRET, _AGENT_ID, _TOKEN and _AES_KEY together")
        assert s.wecom_corp_id is not None and s.wecom_agent_id is not None
        chosen[ChannelKind.WECOM] = WeComChannel(
            s.wecom_corp_id,
            _secret(s.wecom_secret),
            s.wecom_agent_id,
            token=_secret(s.wecom_token),
            aes_key=_secret(s.wecom_aes_key),
            base_url=s.wecom_base_url,
            public_url=s.public_url,
            limits=ChannelLimits(
                concurrency=20,
                per_second=s.wecom_per_second,
                burst=max(1, int(s.wecom_per_second)),
                per_recipient_per_minute=s.wecom_per_member_per_minute,
            ),
            card_mode=s.wecom_card_mode,
            clock=clock,
        )
    if s.smtp_host or s.smtp_from:
        if not (s.smtp_host and s.smtp_from):
            raise ValueError("email needs JIAOYING_SMTP_HOST and JIAOYING_SMTP_FROM together")
        chosen[ChannelKind.EMAIL] = EmailChannel(
            s.smtp_host,
            s.smtp_port,
            username=s.smtp_username,
            password=_secret(s.smtp_password) if s.smtp_password else None,
            sender=s.smtp_from,
            starttls=s.smtp_starttls,
            use_tls=s.smtp_tls,
            limits=ChannelLimits(concurrency=4, per_second=s.smtp_per_second, burst=10),
            clock=clock,
        )
    if s.broadcast_url or s.broadcast_secret:
        if not (s.broadcast_url and s.broadcast_secret):
            raise ValueError("the broadcast gateway needs JIAOYING_BROADCAST_URL and _BROADCAST_SECRET together")
        chosen[ChannelKind.BROADCAST] = BroadcastChannel(
            s.broadcast_url,
            _secret(s.broadcast_secret),
            public_url=s.public_url,
            limits=ChannelLimits(concurrency=20, per_second=s.broadcast_per_second, burst=20),
            clock=clock,
        )
    return chosen


def device_channel(s: Settings, clock: Clock) -> tuple[Channel, EmbeddedBroker | None]:
    """MQTT devices: the configured broker, or the embedded one when JIAOYING_MQTT_URL is unset."""
    # without JIAOYING_MQTT_CLIENT_ID the engine names the client from its slot when it starts (config.wiring)
    if s.mqtt_url:
        channel = MqttDeviceChannel(
            s.mqtt_url, topic_prefix=s.mqtt_topic_prefix, client_id=s.mqtt_client_id, clock=clock
        )
        return channel, None
    broker = EmbeddedBroker(port=s.mqtt_embedded_port)
    url = f"mqtt://127.0.0.1:{s.mqtt_embedded_port}"
    return MqttDeviceChannel(url, topic_prefix=s.mqtt_topic_prefix, client_id=s.mqtt_client_id, clock=clock), broker


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
