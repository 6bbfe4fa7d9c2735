"""The core's services bundled for whoever serves them (the HTTP API, the CLI). Built by config/wiring."""

from __future__ import annotations

from dataclasses import dataclass, field

from alerting.accounts import AccountService
from alerting.acks import AckService
from alerting.alerts import AlertService
from alerting.breaker import CircuitBreaker
from alerting.clock import Clock
from alerting.directory_port import DirectoryImporter
from alerting.port import EventSink, Webhook
from alerting.store.db import Database
from alerting.tokens import TokenSigner


@dataclass(frozen=True)
class ChannelInfo:
    kind: str
    provider: str
    sandbox: bool


@dataclass
class Core:
    db: Database
    clock: Clock
    alerts: AlertService
    acks: AckService
    signer: TokenSigner
    accounts: AccountService
    api_keys: dict[str, str] = field(default_factory=dict)  # key -> role (duty | auditor | admin)
    channels: list[ChannelInfo] = field(default_factory=list)
    public_url: str = "http://127.0.0.1:8000"  # what providers call and sign
    inbound: EventSink | None = None  # where provider callbacks' events go
    webhooks: dict[str, Webhook] = field(default_factory=dict)  # served at /webhooks/{name}/...
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)  # by channel kind, for /healthz
    directory: DirectoryImporter | None = None  # the console's file import; None hides it
