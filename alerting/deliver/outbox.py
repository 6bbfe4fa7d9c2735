"""What a sandbox channel would have sent, as the core reads it.

A channel whose provider is not configured records the messages it would have sent instead of sending them
(channels/sandbox.py). The web layer shows those records, answer links included, so that load tests and
newcomers can answer as a grid worker would; these two shapes let it read them without importing channels/.
config/wiring hands the sandbox channels over (Core.outboxes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from alerting.deliver.port import OutboundMessage
from alerting.model.domain import ChannelKind


class WouldHaveSent(Protocol):
    """One message a sandbox channel recorded instead of sending it."""

    @property
    def message(self) -> OutboundMessage: ...


class SandboxOutbox(Protocol):
    """A sandbox channel's records: what it took in this process, oldest first, only the most recent N."""

    @property
    def kind(self) -> ChannelKind: ...

    @property
    def outbox(self) -> Sequence[WouldHaveSent]: ...
