"""What the Twilio SMS and voice tests share: an adapter started against a FakeTwilio on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from alerting.answer.events import InboundEvent
from alerting.model.clock import ManualClock
from channels.twilio.common import TwilioChannel
from tests.fakes.server import serve_app
from tests.fakes.twilio import FakeTwilio

PUBLIC_URL = "https://jy.example.test"
FROM_NUMBER = "+15005550006"

Adapter = TypeVar("Adapter", bound=TwilioChannel)


async def _ignore(event: InboundEvent) -> None:
    return None


@asynccontextmanager
async def on_fake_twilio(adapter: type[Adapter], clock: ManualClock) -> AsyncIterator[tuple[Adapter, FakeTwilio]]:
    """The adapter, started, talking to a fresh FakeTwilio; closed afterwards."""
    fake = FakeTwilio()
    async with serve_app(fake.app) as base_url:
        channel = adapter(
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            from_number=FROM_NUMBER,
            public_url=PUBLIC_URL,
            base_url=base_url,
            clock=clock,
        )
        await channel.start(_ignore)
        try:
            yield channel, fake
        finally:
            await channel.close()
