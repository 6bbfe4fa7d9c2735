"""Twilio SMS against a local Twilio.

The story: the county sends a red 暴雨 warning; the grid worker's phone gets a text with the answer
link; Twilio reports it delivered; the grid worker texts back "收到" (or 1, ok, ＯＫ…) and that is
the answer. A delivery report is never an answer, and a callback not signed by Twilio records nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
import structlog.testing

from alerting.answer.events import Answer, InboundEvent, InboundText, StatusUpdate
from alerting.deliver.port import DeliveryError, OutboundMessage, Receipt
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind
from channels.twilio.common import TwilioWebhook
from channels.twilio.sms import HELP_TEXT, TwilioSms, ucs2_units
from tests.channels.contract import ChannelContract, Failure, make_message
from tests.channels.twilio_setup import FROM_NUMBER, PUBLIC_URL, on_fake_twilio
from tests.fakes.server import free_port, serve_app
from tests.fakes.twilio import FakeTwilio, parse_twiml

pytestmark = pytest.mark.timeout(30)

GRID_WORKER = "+8613900000008"


@dataclass
class SmsHarness:
    channel: TwilioSms
    fake: FakeTwilio
    clock: ManualClock

    def message(self) -> OutboundMessage:
        return make_message(ChannelKind.SMS)

    def fail_next(self, how: Failure) -> None:
        self.fake.fail_next(how)

    async def good_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        assert receipt.provider_id
        reply = await self.channel.webhook.handle(self.fake.message_status(receipt.provider_id, "delivered"))
        return list(reply.events)

    async def bad_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        assert receipt.provider_id
        forged = self.fake.message_status(receipt.provider_id, "delivered", forged=True)
        return list((await self.channel.webhook.handle(forged)).events)


@pytest.fixture
async def harness(clock: ManualClock) -> AsyncIterator[SmsHarness]:
    async with on_fake_twilio(TwilioSms, clock) as (channel, fake):
        yield SmsHarness(channel, fake, clock)


class TestTwilioSmsContract(ChannelContract):
    pass


# ---- what goes over the wire --------------------------------------------------------------


async def test_the_warning_reaches_twilio_as_one_signed_in_message_with_its_link(harness: SmsHarness) -> None:
    message = harness.message()
    receipt = await harness.channel.send(message)

    [sent] = harness.fake.received
    assert sent.resource == "Messages" and sent.status == 201
    assert sent.auth == (harness.fake.account_sid, harness.fake.auth_token)
    assert sent.field("To") == GRID_WORKER
    assert sent.field("From") == FROM_NUMBER
    assert sent.field("Body") == message.short_text
    assert message.ack_url and message.ack_url in (sent.field("Body") or "")
    assert sent.field("StatusCallback") == f"{PUBLIC_URL}/webhooks/twilio/sms/status?d={message.delivery_id}"
    assert sent.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert receipt.provider_id and receipt.provider_id == sent.sid and receipt.provider_id.startswith("SM")
    assert not receipt.delivered  # queued at Twilio is not on the phone yet


async def test_a_long_warning_is_shortened_but_keeps_its_answer_link_whole(harness: SmsHarness) -> None:
    link = "https://jy.example.test/ack/long"
    text = "【巫溪县应急】红色暴雨预警：" + "凤凰镇、宁河街道强降雨，山洪风险极高。" * 60 + "请回复收到：" + link
    receipt = await harness.channel.send(replace(harness.message(), short_text=text, ack_url=link))

    body = harness.fake.received[-1].field("Body") or ""
    assert body.startswith("【巫溪县应急】红色暴雨预警")
    assert body.endswith("请回复收到：" + link)
    assert ucs2_units(body) <= 67 * 10
    assert int(receipt.detail["segments"]) <= 10


async def test_a_person_without_a_phone_number_fails_for_good_without_calling_twilio(harness: SmsHarness) -> None:
    message = harness.message()
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(replace(message, address=replace(message.address, phone=None)))
    assert not failed.value.retryable
    assert harness.fake.received == []


@pytest.mark.parametrize("code", [21211, 21610, 21614])
async def test_twilio_refusing_the_number_is_final_and_named(harness: SmsHarness, code: int) -> None:
    harness.fake.fail_next("permanent", code=code)
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    assert failed.value.code == f"twilio_{code}"
    assert not failed.value.retryable


async def test_twilio_busy_says_when_to_come_back(harness: SmsHarness) -> None:
    harness.fake.fail_next("rate_limited", retry_after="7")
    with pytest.raises(DeliveryError) as limited:
        await harness.channel.send(harness.message())
    assert (limited.value.code, limited.value.retryable, limited.value.retry_after) == ("twilio_20429", True, 7.0)

    harness.fake.fail_next("retryable")
    with pytest.raises(DeliveryError) as down:
        await harness.channel.send(harness.message())
    assert (down.value.code, down.value.retryable) == ("twilio_20503", True)

    # and the next send goes through on the same client
    assert (await harness.channel.send(harness.message())).provider_id


async def test_wrong_credentials_are_refused_by_twilio_and_not_retried() -> None:
    fake = FakeTwilio()
    async with serve_app(fake.app) as base_url:
        channel = TwilioSms(
            account_sid=fake.account_sid,
            auth_token="not-the-token",
            from_number=FROM_NUMBER,
            public_url=PUBLIC_URL,
            base_url=base_url,
        )
        try:
            with pytest.raises(DeliveryError) as failed:
                await channel.send(make_message(ChannelKind.SMS))
        finally:
            await channel.close()
    assert (failed.value.code, failed.value.retryable) == ("twilio_20003", False)
    assert fake.received[0].status == 401 and fake.created("Messages") == []


async def test_twilio_out_of_reach_is_retryable() -> None:
    channel = TwilioSms(
        account_sid="AC" + "0" * 32,
        auth_token="token",
        from_number=FROM_NUMBER,
        public_url=PUBLIC_URL,
        base_url=f"http://127.0.0.1:{free_port()}",
    )
    try:
        with pytest.raises(DeliveryError) as failed:
            await channel.send(make_message(ChannelKind.SMS))
    finally:
        await channel.close()
    assert failed.value.retryable and failed.value.code == "connection"


# ---- delivery reports ---------------------------------------------------------------------


async def test_delivered_report_marks_the_delivery_delivered_not_answered(harness: SmsHarness) -> None:
    message = harness.message()
    receipt = await harness.channel.send(message)
    assert receipt.provider_id

    reply = await harness.channel.webhook.handle(harness.fake.message_status(receipt.provider_id, "delivered"))

    assert reply.status == 200
    assert reply.events == (
        StatusUpdate(
            ChannelKind.SMS,
            harness.clock.now(),
            True,
            delivery_id=message.delivery_id,
            provider_id=receipt.provider_id,
            detail={"status": "delivered"},
        ),
    )
    assert not any(isinstance(e, Answer) for e in reply.events)


@pytest.mark.parametrize(
    ("status", "error_code", "error"),
    [("undelivered", "30003", "twilio_30003"), ("failed", "30006", "twilio_30006"), ("failed", None, "failed")],
)
async def test_undelivered_and_failed_reports_say_why(
    harness: SmsHarness, status: str, error_code: str | None, error: str
) -> None:
    message = harness.message()
    receipt = await harness.channel.send(message)
    assert receipt.provider_id

    reply = await harness.channel.webhook.handle(
        harness.fake.message_status(receipt.provider_id, status, error_code=error_code)
    )

    [event] = reply.events
    assert isinstance(event, StatusUpdate)
    assert (event.delivered, event.error, event.delivery_id) == (False, error, message.delivery_id)


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "accepted"])
async def test_progress_reports_before_delivery_say_nothing_new(harness: SmsHarness, status: str) -> None:
    receipt = await harness.channel.send(harness.message())
    assert receipt.provider_id
    reply = await harness.channel.webhook.handle(harness.fake.message_status(receipt.provider_id, status))
    assert reply.status == 200 and reply.events == ()


# ---- replies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", ["1", "收到", "ok", "OK", "１", "ｏｋ", "ＯＫ", " 收到！", "收到。", "Ok.", " 1 ", "已收到"]
)
async def test_a_reply_of_received_is_an_answer_from_that_phone(harness: SmsHarness, body: str) -> None:
    request = harness.fake.inbound_sms(PUBLIC_URL, GRID_WORKER, body)
    reply = await harness.channel.webhook.handle(request)

    assert reply.status == 200
    # keyed by Twilio's MessageSid, so a retry or a replay of this very request is taken in once
    expected = Answer(
        ChannelKind.SMS,
        harness.clock.now(),
        from_phone=GRID_WORKER,
        event_id=f"twilio-sms:{request.form['MessageSid']}",
    )
    assert reply.events == (expected,)
    assert reply.content_type.startswith("text/xml")
    assert list(parse_twiml(reply.body)) == []  # nothing texted back: the core decides what the answer counted for


@pytest.mark.parametrize("body", ["2", "求助", "需要帮助", "２", "求助！"])
async def test_a_reply_asking_for_help_is_an_answer_that_needs_help(harness: SmsHarness, body: str) -> None:
    reply = await harness.channel.webhook.handle(harness.fake.inbound_sms(PUBLIC_URL, GRID_WORKER, body))
    [event] = reply.events
    assert isinstance(event, Answer)
    assert event.help_needed and event.from_phone == GRID_WORKER


@pytest.mark.parametrize("body", ["我在开会，稍后回电", "没收到", "3", "", "收到谢谢"])
async def test_any_other_reply_is_kept_and_gets_told_how_to_answer(harness: SmsHarness, body: str) -> None:
    request = harness.fake.inbound_sms(PUBLIC_URL, GRID_WORKER, body)
    reply = await harness.channel.webhook.handle(request)

    event_id = f"twilio-sms:{request.form['MessageSid']}"
    expected = InboundText(ChannelKind.SMS, harness.clock.now(), text=body, from_phone=GRID_WORKER, event_id=event_id)
    assert reply.events == (expected,)
    assert reply.content_type.startswith("text/xml")
    twiml = parse_twiml(reply.body)
    assert [m.text for m in twiml.iter("Message")] == [HELP_TEXT]


# ---- signatures ---------------------------------------------------------------------------


async def test_callbacks_not_signed_by_twilio_are_refused_and_record_nothing(harness: SmsHarness) -> None:
    message = harness.message()
    receipt = await harness.channel.send(message)
    assert receipt.provider_id
    webhook = harness.channel.webhook
    good = harness.fake.message_status(receipt.provider_id, "delivered")

    forged = harness.fake.message_status(receipt.provider_id, "delivered", forged=True)
    unsigned = replace(good, headers={k: v for k, v in good.headers.items() if k != "x-twilio-signature"})
    other_delivery = replace(good, url=good.url.replace(message.delivery_id, "f" * 32), query={"d": "f" * 32})
    altered_status = replace(good, form={**good.form, "MessageStatus": "failed"})
    fake_answer = harness.fake.inbound_sms(PUBLIC_URL, GRID_WORKER, "收到", forged=True)

    for request in (forged, unsigned, other_delivery, altered_status, fake_answer):
        reply = await webhook.handle(request)
        assert (reply.status, reply.events) == (403, ())
    assert (await webhook.handle(good)).events  # the genuine one still counts


async def test_an_unknown_callback_path_is_not_found(harness: SmsHarness) -> None:
    request = harness.fake.callback(f"{PUBLIC_URL}/webhooks/twilio/sms/elsewhere", {"Body": "1"})
    reply = await harness.channel.webhook.handle(request)
    assert (reply.status, reply.events) == (404, ())


def test_sms_and_voice_share_one_webhook_name() -> None:
    webhook = TwilioWebhook("token")
    TwilioSms(account_sid="AC1", auth_token="token", from_number=FROM_NUMBER, public_url=PUBLIC_URL, webhook=webhook)
    assert webhook.name == "twilio" and webhook.paths == ("/sms/inbound", "/sms/status")
    with pytest.raises(ValueError, match="already handled"):
        TwilioSms(
            account_sid="AC1", auth_token="token", from_number=FROM_NUMBER, public_url=PUBLIC_URL, webhook=webhook
        )


async def test_logs_name_neither_the_token_nor_the_whole_number(harness: SmsHarness) -> None:
    with structlog.testing.capture_logs() as logs:
        receipt = await harness.channel.send(harness.message())
        assert receipt.provider_id
        await harness.channel.webhook.handle(harness.fake.inbound_sms(PUBLIC_URL, GRID_WORKER, "收到"))
        harness.fake.fail_next("permanent")
        with pytest.raises(DeliveryError):
            await harness.channel.send(harness.message())
    written = repr(logs)
    assert logs and harness.fake.auth_token not in written and GRID_WORKER not in written
    assert "+86139****0008" in written
