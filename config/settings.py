"""Settings: JIAOYING_* environment variables over an optional TOML file over defaults. Read once, passed down."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from alerting.audit.keys import check_key
from config.cap_settings import CapSettings


class TwilioSettings(BaseModel):
    """SMS and voice calls through Twilio: JIAOYING_TWILIO_*. Its adapters: config.channels.Twilio."""

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    twilio_sms_per_second: float = 10.0  # the account's message throughput (MPS)
    twilio_calls_per_second: float = 1.0  # Twilio's default CPS for outbound calls
    # How long one create may take before it counts as failed and is retried. A create that timed out may
    # still have reached Twilio, so the retry can repeat it: long enough for a slow link, short enough that a
    # stuck connection does not hold a sending slot for minutes.
    twilio_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class WeComSettings(BaseModel):
    """企业微信: JIAOYING_WECOM_*. Its adapter: config.channels.WeCom."""

    wecom_corp_id: str | None = None
    wecom_secret: SecretStr | None = None
    wecom_agent_id: int | None = None
    wecom_token: SecretStr | None = None
    wecom_aes_key: SecretStr | None = None
    wecom_base_url: str = "https://qyapi.weixin.qq.com"
    wecom_card_mode: Literal["template_card", "textcard"] = "template_card"
    wecom_per_second: float = 20.0
    wecom_per_member_per_minute: int = 30  # WeCom refuses more messages to one member per minute


class EmailSettings(BaseModel):
    """Email over SMTP: JIAOYING_SMTP_*. Its adapter: config.channels.Email."""

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_starttls: bool = True
    smtp_tls: bool = False  # implicit TLS (port 465) instead of STARTTLS
    smtp_per_second: float = 5.0


class BroadcastSettings(BaseModel):
    """The emergency-broadcast gateway: JIAOYING_BROADCAST_*. Its adapter: config.channels.Broadcast."""

    broadcast_url: str | None = None
    broadcast_secret: SecretStr | None = None
    broadcast_per_second: float = 10.0


# what an unconfigured checkout has: serve and engine run refuse to sign answer links with it (config.startup)
PLACEHOLDER_SECRET = "change-me-in-production"  # noqa: S105 (the value that is refused, not one that is used)


class _Engine(BaseSettings):
    """The engine's own settings; those of the providers are in the groups above."""

    database_url: str = "sqlite+aiosqlite:///./jiaoying.db"
    public_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    ack_token_ttl_hours: int = 72
    # API keys as "key:role" pairs, roles duty | auditor | admin
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)  # decoded below, to say what is wrong
    policy_file: Path | None = None
    # names this machine in claims and the audit (default: the host name); processes on one machine may share it
    node: str | None = None
    # the audit chain's key, kept outside the database; unset, the engine refuses to start (alerting.audit.keys)
    audit_key: SecretStr | None = None
    # earlier audit keys, a JSON list: after a rotation they still verify the rows they signed
    audit_keys: list[SecretStr] = Field(default_factory=list)
    # a file, or a directory for audit-checkpoints.jsonl, outside the database: the chain's end, once a minute
    audit_checkpoints: Path | None = None
    # the county duty room's number, on every answer page so a grid worker in trouble can call it (023-51521234)
    duty_phone: str | None = None

    @field_validator("duty_phone")
    @classmethod
    def _duty_phone_is_a_number(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.fullmatch(r"\+?[0-9][0-9 -]{4,24}", value.strip()):
            raise ValueError(f"duty_phone: {value!r} is not a phone number (digits, spaces, - and a leading +)")
        return value.strip()

    @field_validator("audit_key")
    @classmethod
    def _audit_key_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_key(value.get_secret_value(), "audit_key")
        return value

    @field_validator("audit_keys")
    @classmethod
    def _earlier_audit_keys_are_long(cls, value: list[SecretStr]) -> list[SecretStr]:
        for n, key in enumerate(value, start=1):
            check_key(key.get_secret_value(), f"audit_keys[{n}]")
        return value

    mqtt_url: str | None = None  # unset: start the embedded broker
    mqtt_topic_prefix: str = "jiaoying"
    mqtt_embedded_port: int = 1883
    # unset: "jiaoying-<node>-<slot>", the same for a process and its restarts, different for live siblings
    mqtt_client_id: str | None = None
    # with an MQTT 5 broker: the engines share the siren acks on $share/<group>/..., each ack handled by one
    mqtt_shared_group: str | None = Field(default=None, pattern=r"^[^/+#\s]+$")
    # siren commands published per second; the broker takes thousands, a county's radio uplinks may not
    mqtt_commands_per_second: float = Field(default=500.0, gt=0)
    # after a start, deadlines wait at most this long for the device channel to take in what its broker kept
    startup_grace_s: float = Field(default=30.0, ge=0, le=600)
    # a device asked again after a lost link has this long to confirm before its next escalation step runs
    device_resend_window_s: float = Field(default=60.0, gt=0, le=3600)
    # the reverse proxies whose X-Forwarded-For/-Proto `serve` believes: comma-separated addresses or networks,
    # "*" for any, "" for none. The default is uvicorn's own: a proxy on this machine
    forwarded_allow_ips: str = "127.0.0.1,::1"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys_are_a_json_list(cls, value: object) -> object:
        if not isinstance(value, str):  # the TOML file's list, or keyword arguments
            return value
        if not value.strip():
            return []
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list):  # the message leaves the value out: it holds the keys
            raise ValueError(
                'a JSON list of "key:role" strings is expected, e.g. JIAOYING_API_KEYS=\'["k1:duty","k2:auditor"]\''
            )
        return parsed

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        # uvicorn would quietly take a typo for a host name no proxy ever has, and trust nobody
        for item in filter(None, (part.strip() for part in value.split(","))):
            if item != "*":
                try:
                    ipaddress.ip_network(item)  # strict, as uvicorn reads it: 10.0.0.1/8 is refused
                except ValueError:
                    raise ValueError(f"forwarded_allow_ips: {item!r} is not an IP address or network") from None
        return value

    @model_validator(mode="after")
    def _shared_group_needs_its_broker(self) -> Self:
        if self.mqtt_shared_group is not None and not self.mqtt_url:
            raise ValueError(
                "mqtt_shared_group needs an MQTT 5 broker at JIAOYING_MQTT_URL; the embedded broker speaks 3.1.1 only"
            )
        return self


# pydantic puts inherited fields first, the last base's first: listed this way, the fields keep the order in which
# they are read and reported (the engine's, Twilio's, WeCom's, email's, the broadcast gateway's, the log level)
class Settings(CapSettings, BroadcastSettings, EmailSettings, WeComSettings, TwilioSettings, _Engine):
    """Every setting, flat: each field is JIAOYING_<FIELD> in the environment and <field> in the TOML file.
    Each provider's settings are a group of their own (above), from which config.channels builds its adapters."""

    # a refused value may be a password or a key: errors name the setting, never echo what it was set to
    model_config = SettingsConfigDict(env_prefix="JIAOYING_", extra="forbid", hide_input_in_errors=True)

    log_level: str = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("JIAOYING_CONFIG", "jiaoying.toml")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
