"""The emergency-broadcast gateway (应急广播), against a fake gateway on a loopback port.

The story: a red 暴雨 warning goes to 凤凰镇's broadcast zone; the gateway checks our signature,
plays it three times, and reports back that it played — which is the zone's answer. A resend of the
same delivery plays nothing twice; a forged or replayed report records nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime

import pytest

from alerting.answer.events import Answer, InboundEvent, StatusUpdate
from alerting.deliver.port import Address, Channel, DeliveryError, OutboundMessage, Receipt, WebhookReply
from alerting.model.domain import ChannelKind, Level, Purpose, TaskKind
from channels.broadcast import BroadcastChannel
from tests.channels.contract import ChannelContract, Failure, make_message
from tests.fakes.broadcast import FakeBroadcastGateway
from tests.fakes.server import free_port, serve_app

pytestmark = pytest.mark.timeout(30)

SECRET = "gw-shared-secret-巫溪"
PUBLIC_URL = "https://jy.example.test"
ZONE = "zone-500238101"


def zone_message(**overrides: object) -> OutboundMessage:
    fields: dict[str, object] = {"address": Address(device_id=ZONE, device_kind="broadcast_zone")}
    fields.update(overrides)
    return make_message(ChannelKind.BROADCAST, **fields)


@dataclass
class BroadcastHarness:
    channel: Channel  # the port's view: what the core sees of the adapter
    gateway: FakeBroadcastGateway

    def message(self) -> OutboundMessage:
        return zone_message()

    def fail_next(self, how: Failure) -> None:
        self.gateway.fail_next(how)

    async def good_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        return await self.report(message.delivery_id, "played")

    async def bad_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        return await self.report(message.delivery_id, "played", forged=True)

    async def report(
        self, request_id: str, status: str, *, detail: str | None = None, forged: bool = False, age_s: float = 0.0
    ) -> list[InboundEvent]:
        reply = await self.webhook_reply(request_id, status, detail=detail, forged=forged, age_s=age_s)
        return list(reply.events)

    async def webhook_reply(
        self, request_id: str, status: str, *, detail: str | None = None, forged: bool = False, age_s: float = 0.0
    ) -> WebhookReply:
        """The gateway reports on a broadcast; what the engine's webhook answers."""
        [webhook] = self.channel.webhooks
        callback = self.gateway.playback_callback(request_id, status, detail=detail, forged=forged, age_s=age_s)
        return await webhook.handle(callback)


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[FakeBroadcastGateway, str]]:
    fake = FakeBroadcastGateway(SECRET)
    async with serve_app(fake.app) as base_url:
        yield fake, base_url


@pytest.fixture
async def harness(gateway: tuple[FakeBroadcastGateway, str]) -> AsyncIterator[BroadcastHarness]:
    fake, base_url = gateway
    channel = BroadcastChannel(base_url, SECRET, public_url=PUBLIC_URL, timeout=5.0)
    await channel.start(_no_events)
    try:
        yield BroadcastHarness(channel, fake)
    finally:
        await channel.close()


async def _no_events(event: InboundEvent) -> None:
    raise AssertionError(f"events come through the webhook, not the sink: {event}")


class TestBroadcastContract(ChannelContract):
    pass


# ---- what the gateway receives -------------------------------------------------------------


async def test_the_gateway_gets_a_signed_request_to_play_the_warning(harness: BroadcastHarness) -> None:
    message = harness.message()
    receipt = await harness.channel.send(message)

    [arrival] = harness.gateway.arrivals
    assert arrival.status == 202  # the gateway checked the signature itself
    assert arrival.headers["x-jiaoying-signature"].startswith("sha256=")
    assert arrival.headers["x-jiaoying-timestamp"].isdigit()
    assert arrival.json == {
        "request_id": message.delivery_id,
        "alert_id": 7,
        "zone_id": ZONE,
        "text": message.spoken_text,
        "level": "red",
        "level_label": "红色",
        "exercise": False,
        "repeat": 3,
        "action": "play",
        "callback_url": "https://jy.example.test/webhooks/broadcast/playback",
        "issued_at": "2026-07-01T02:00:00+00:00",
    }
    assert receipt.provider_id == harness.gateway.broadcasts[message.delivery_id].broadcast_id
    assert not receipt.delivered


@pytest.mark.parametrize(("level", "repeat"), [(Level.ORANGE, 2), (Level.YELLOW, 1), (Level.BLUE, 1)])
async def test_the_graver_the_warning_the_more_it_is_repeated(
    harness: BroadcastHarness, level: Level, repeat: int
) -> None:
    await harness.channel.send(zone_message(level=level))
    assert harness.gateway.arrivals[0].json["repeat"] == repeat


async def test_an_exercise_and_a_lift_say_so(harness: BroadcastHarness) -> None:
    await harness.channel.send(zone_message(exercise=True, spoken_text="【演练】红色暴雨预警。"))
    await harness.channel.send(zone_message(purpose=Purpose.LIFT, ack_url=None, spoken_text="红色暴雨预警已解除。"))
    drill, lift = (a.json for a in harness.gateway.arrivals)
    assert drill["exercise"] is True and drill["text"].startswith("【演练】")
    assert lift["action"] == "stop" and lift["repeat"] == 1


async def test_a_resend_of_the_same_delivery_plays_once(harness: BroadcastHarness) -> None:
    message = harness.message()
    first = await harness.channel.send(message)
    again = await harness.channel.send(message)  # the engine crashed before recording the first

    assert len(harness.gateway.arrivals) == 2
    assert len(harness.gateway.played) == 1
    assert again.provider_id == first.provider_id

    harness.gateway.progress(message.delivery_id, "played")
    late = await harness.channel.send(message)
    assert late.delivered and late.provider_id == first.provider_id
    assert len(harness.gateway.played) == 1


async def test_a_request_the_gateway_could_not_play_is_not_sent_again(harness: BroadcastHarness) -> None:
    message = harness.message()
    await harness.channel.send(message)
    harness.gateway.progress(message.delivery_id, "failed")
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(message)
    assert (failed.value.retryable, failed.value.code) == (False, "playback_failed")


# ---- refusals ------------------------------------------------------------------------------


async def test_a_wrong_secret_is_refused_by_the_gateway_for_good(gateway: tuple[FakeBroadcastGateway, str]) -> None:
    fake, base_url = gateway
    channel = BroadcastChannel(base_url, "not-the-secret", public_url=PUBLIC_URL)
    try:
        with pytest.raises(DeliveryError) as failed:
            await channel.send(zone_message())
    finally:
        await channel.close()
    assert (failed.value.retryable, failed.value.code) == (False, "bad_signature")
    assert fake.played == []


async def test_the_gateways_own_error_code_is_kept(harness: BroadcastHarness) -> None:
    harness.gateway.zones = {"zone-other"}
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    assert (failed.value.retryable, failed.value.code) == (False, "unknown_zone")


async def test_rate_limiting_waits_as_long_as_the_gateway_asks(harness: BroadcastHarness) -> None:
    harness.fail_next("rate_limited")
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    assert failed.value.retryable and failed.value.retry_after == 7.0


async def test_an_unreachable_gateway_is_retried_later() -> None:
    channel = BroadcastChannel(f"http://127.0.0.1:{free_port()}", SECRET, public_url=PUBLIC_URL, timeout=2.0)
    try:
        with pytest.raises(DeliveryError) as failed:
            await channel.send(zone_message())
    finally:
        await channel.close()
    assert failed.value.retryable and failed.value.code == "connection"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (zone_message(address=Address(person_id="g1", phone="+8613900000008")), "bad_address"),
        (zone_message(purpose=Purpose.TASK, task=TaskKind.GONG), "unsupported"),
    ],
)
async def test_what_a_zone_cannot_carry_is_refused_before_sending(
    harness: BroadcastHarness, message: OutboundMessage, code: str
) -> None:
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(message)
    assert (failed.value.retryable, failed.value.code) == (False, code)
    assert harness.gateway.arrivals == []


# ---- playback reports ----------------------------------------------------------------------


async def test_a_zone_that_played_the_warning_has_answered(harness: BroadcastHarness) -> None:
    message = harness.message()
    receipt = await harness.channel.send(message)
    events = await harness.report(message.delivery_id, "played")

    status, answer = events
    assert isinstance(status, StatusUpdate) and status.delivered
    assert (status.delivery_id, status.provider_id) == (message.delivery_id, receipt.provider_id)
    assert isinstance(answer, Answer)
    assert (answer.channel, answer.delivery_id) == (ChannelKind.BROADCAST, message.delivery_id)
    assert isinstance(answer.at, datetime) and answer.at.tzinfo is not None


async def test_a_failed_playback_is_a_failed_delivery_not_an_answer(harness: BroadcastHarness) -> None:
    message = harness.message()
    await harness.channel.send(message)
    [event] = await harness.report(message.delivery_id, "failed", detail="功放故障")

    assert isinstance(event, StatusUpdate)
    assert not event.delivered and event.delivery_id == message.delivery_id
    assert event.error is not None and "功放故障" in event.error


async def test_a_replayed_report_from_long_ago_is_refused(harness: BroadcastHarness) -> None:
    message = harness.message()
    await harness.channel.send(message)
    reply = await harness.webhook_reply(message.delivery_id, "played", age_s=6 * 60)
    assert reply.status == 403 and reply.events == ()

    fresh = await harness.webhook_reply(message.delivery_id, "played", age_s=60)
    assert fresh.status == 200 and fresh.events


async def test_a_forged_report_is_refused(harness: BroadcastHarness) -> None:
    message = harness.message()
    await harness.channel.send(message)
    reply = await harness.webhook_reply(message.delivery_id, "played", forged=True)
    assert reply.status == 403 and reply.events == ()


async def test_a_report_whose_body_was_changed_after_signing_is_refused(harness: BroadcastHarness) -> None:
    message = harness.message()
    await harness.channel.send(message)
    genuine = harness.gateway.playback_callback(message.delivery_id, "failed", detail="功放故障")
    tampered = replace(genuine, body=genuine.body.replace(b'"failed"', b'"played"'))
    [webhook] = harness.channel.webhooks
    reply = await webhook.handle(tampered)
    assert reply.status == 403 and reply.events == ()


async def test_a_signed_report_that_makes_no_sense_is_refused_without_events(harness: BroadcastHarness) -> None:
    message = harness.message()
    await harness.channel.send(message)
    reply = await harness.webhook_reply(message.delivery_id, "exploded")
    assert reply.status == 400 and reply.events == ()
