"""The contract every channel adapter passes, whatever its provider.

A test module subclasses ChannelContract and provides a `harness` fixture: the adapter wired to its
local fake, plus the few levers the contract pulls (make the next send fail this way, produce a good
or a forged callback for a receipt).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import pytest

from alerting.answer.events import InboundEvent
from alerting.deliver.port import Address, Channel, DeliveryError, OutboundMessage, Receipt
from alerting.model.domain import ChannelKind, Level, Purpose
from alerting.model.ids import new_id

Failure = Literal["retryable", "rate_limited", "permanent"]


def make_message(channel: ChannelKind, **overrides: Any) -> OutboundMessage:
    """A red warning for one grid worker, the way the core hands it to an adapter."""
    fields: dict[str, Any] = {
        "delivery_id": new_id(),
        "alert_id": 7,
        "channel": channel,
        "purpose": Purpose.WARN,
        "address": Address(
            person_id="g1",
            name="网格员甲",
            phone="+8613900000008",
            wecom_userid="wx8",
            email="g1@example.org",
            device_id=None,
        ),
        "level": Level.RED,
        "hazard": "暴雨",
        "exercise": False,
        "title": "红色暴雨预警：凤凰镇强降雨",
        "text": "【巫溪县应急】红色暴雨预警：凤凰镇强降雨。预计未来3小时降雨超过100毫米。立即转移危险区群众。",
        "short_text": "【巫溪县应急】红色暴雨预警：凤凰镇强降雨。立即转移危险区群众。请回复收到：https://jy.example.test/ack/abc",
        "spoken_text": "红色暴雨预警。凤凰镇强降雨。立即转移危险区群众。",
        "ack_url": "https://jy.example.test/ack/abc",
        "issued_at": datetime(2026, 7, 1, 2, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return OutboundMessage(**fields)


class Harness(Protocol):
    channel: Channel

    def message(self) -> OutboundMessage: ...

    def fail_next(self, how: Failure) -> None:
        """Make the fake provider refuse the next send this way."""
        ...

    async def good_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        """Have the provider report on the sent message (status or answer); the events the adapter produced."""
        ...

    async def bad_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        """The same callback forged or corrupted; the adapter must produce no event."""
        ...


class ChannelContract:
    async def test_send_is_taken_by_the_provider(self, harness: Harness) -> None:
        message = harness.message()
        receipt = await harness.channel.send(message)
        assert receipt.provider == harness.channel.provider
        assert receipt.provider_id
        assert not receipt.sandbox

    async def test_a_provider_failure_that_may_pass_is_retryable(self, harness: Harness) -> None:
        harness.fail_next("retryable")
        with pytest.raises(DeliveryError) as failed:
            await harness.channel.send(harness.message())
        assert failed.value.retryable

    async def test_rate_limiting_is_retryable_and_says_when(self, harness: Harness) -> None:
        harness.fail_next("rate_limited")
        with pytest.raises(DeliveryError) as failed:
            await harness.channel.send(harness.message())
        assert failed.value.retryable
        assert failed.value.retry_after is not None

    async def test_a_permanent_failure_is_not_retried_and_keeps_the_provider_code(self, harness: Harness) -> None:
        harness.fail_next("permanent")
        with pytest.raises(DeliveryError) as failed:
            await harness.channel.send(harness.message())
        assert not failed.value.retryable
        assert failed.value.code

    async def test_the_provider_callback_becomes_events(self, harness: Harness) -> None:
        message = harness.message()
        receipt = await harness.channel.send(message)
        events = await harness.good_callback(receipt, message)
        assert events
        for event in events:
            ids = {
                getattr(event, "delivery_id", None),
                getattr(event, "provider_id", None),
                getattr(event, "command_id", None),
            }
            assert ids & {message.delivery_id, receipt.provider_id}

    async def test_a_forged_callback_records_nothing(self, harness: Harness) -> None:
        message = harness.message()
        receipt = await harness.channel.send(message)
        assert await harness.bad_callback(receipt, message) == []
