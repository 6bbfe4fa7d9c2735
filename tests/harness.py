"""An engine on the test database with sandbox channels and a manual clock, driven step by step by the test."""

from __future__ import annotations

from alerting.issue.alerts import AlertRequest
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Level
from alerting.store.db import Database
from channels.sandbox import SandboxChannel
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine

# a red flash-flood warning on 凤凰镇: what the durability and multi-process tests send
RED = AlertRequest(
    level=Level.RED,
    hazard="山洪",
    title="山洪红色预警",
    text="沿河区域山洪风险极高。",
    instructions="立即转移。",
    units=["500238101"],
)


def sandbox_engine(db: Database, clock: ManualClock) -> AssembledEngine:
    settings = Settings(database_url=db.url, public_url="https://jy.example.test", secret_key="test-secret")
    engine = build_engine(settings, clock=clock, channels={k: SandboxChannel(k) for k in ChannelKind})
    return engine


def outbox(engine: AssembledEngine, kind: ChannelKind) -> list[str]:
    """Person or device ids a sandbox channel would have reached, in order."""
    channel = engine.channels[kind]
    assert isinstance(channel, SandboxChannel)
    return [r.message.address.person_id or r.message.address.device_id or "" for r in channel.outbox]
