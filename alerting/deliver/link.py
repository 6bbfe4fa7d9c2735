"""What a channel with a standing connection (the MQTT broker) tells whoever keeps the engine running: is the line
up, how often it came up, and what came in on it that was refused. A channel that has one sets `link`; /metrics and
the engine's own metrics port read it. Counted in this process only: each engine has its own connection."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from alerting.model.domain import ChannelKind

REFUSALS = ("malformed", "too_large")  # why an inbound message can be refused


@dataclass
class LinkHealth:
    up: bool = False
    connections: int = 0  # times the line came up since the process started
    rejected: Counter[str] = field(default_factory=Counter)  # inbound messages refused, by reason

    def came_up(self) -> None:
        self.up = True
        self.connections += 1

    def went_down(self) -> None:
        self.up = False

    def refused(self, reason: str) -> None:
        assert reason in REFUSALS, reason
        self.rejected[reason] += 1


@runtime_checkable
class Linked(Protocol):
    """A channel that keeps a connection open."""

    link: LinkHealth


def links_of(channels: Mapping[ChannelKind, object]) -> dict[str, LinkHealth]:
    """The links of those `channels` that keep a connection, by channel kind."""
    return {kind.value: c.link for kind, c in channels.items() if isinstance(c, Linked)}
