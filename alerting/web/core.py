"""The core's services bundled for whoever serves them (the HTTP API, the CLI). Built by config/wiring."""

from __future__ import annotations

from dataclasses import dataclass, field

from alerting.answer.acks import AckService
from alerting.answer.events import EventSink
from alerting.cap.export import CapIdentity
from alerting.cap.mapping import CapMapping
from alerting.deliver.breaker import CircuitBreaker
from alerting.deliver.link import LinkHealth
from alerting.deliver.outbox import SandboxOutbox
from alerting.deliver.port import Webhook
from alerting.deliver.tokens import TokenSigner
from alerting.issue.alerts import AlertService
from alerting.model.clock import Clock
from alerting.people.accounts import AccountService
from alerting.people.directory_port import DirectoryImporter
from alerting.store.db import Database


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
    links: dict[str, LinkHealth] = field(default_factory=dict)  # standing connections by channel kind, for /metrics
    directory: DirectoryImporter | None = None  # the console's file import; None hides it
    outboxes: list[SandboxOutbox] = field(default_factory=list)  # sandbox channels' records (模拟发件箱)
    cap_mapping: CapMapping = field(default_factory=CapMapping)  # how CAP messages map to alerts (settings)
    cap_identity: CapIdentity = field(default_factory=CapIdentity)  # who CAP exports say they are from
    duty_phone: str | None = None  # the county duty room's number, on the answer page
