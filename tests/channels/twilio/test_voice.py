"""Twilio voice (智能外呼) against a local Twilio.

The story: a red warning; the grid worker's phone rings and a Mandarin voice reads the warning twice,
then asks "收到请按1，需要帮助请按2". Pressing 1 is the answer and 2 the answer with a call for help.
Picking up without pressing is delivered, not answered; an answering machine is neither; busy or
no answer is a failed call the core can redial.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlsplit

import pytest

from alerting.answer.events import Answer, InboundEvent, StatusUpdate
from alerting.deliver.port import DeliveryError, OutboundMessage, Receipt
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind
from channels.twilio.common import TwilioWebhook
from channels.twilio.sms import TwilioSms
from channels.twilio.voice import PROMPT, TwilioVoice
from tests.channels.contract import ChannelContract, Failure, make_message
from tests.channels.twilio_setup import FROM_NUMBER, PUBLIC_URL, on_fake_twilio
from tests.fakes.server import serve_app
from tests.fakes.twilio import FakeTwilio, parse_twiml

pytestmark = pytest.mark.timeout(30)

GRID_WORKER = "+8613900000008"


@dataclass
class VoiceHarness:
    channel: TwilioVoice
    fake: FakeTwilio
    clock: ManualClock

    def message(self) -> OutboundMessage:
        return make_message(ChannelKind.VOICE)

    def fail_next(self, how: Failure) -> None:
        self.fake.fail_next(how)

    async def good_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        assert receipt.provider_id
        reply = await self.channel.webhook.handle(self.fake.key_press(receipt.provider_id, "1"))
        return list(reply.events)

    async def bad_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        assert receipt.provider_id
        reply = await self.channel.webhook.handle(self.fake.key_press(receipt.provider_id, "1", forged=True))
        return list(reply.events)

    async def call(self) -> tuple[OutboundMessage, str]:
        message = self.message()
        receipt = await self.channel.send(message)
        assert receipt.provider_id
        return message, receipt.provider_id


@pytest.fixture
async def harness(clock: ManualClock) -> AsyncIterator[VoiceHarness]:
    async with on_fake_twilio(TwilioVoice, clock) as (channel, fake):
        yield VoiceHarness(channel, fake, clock)


class TestTwilioVoiceContract(ChannelContract):
    pass


# ---- the call -----------------------------------------------------------------------------


async def test_the_call_reads_the_warning_in_mandarin_twice_then_asks_for_a_key(harness: VoiceHarness) -> None:
    message, sid = await harness.call()

    [placed] = harness.fake.created("Calls")
    assert placed.sid == sid and sid.startswith("CA")
    assert placed.auth == (harness.fake.account_sid, harness.fake.auth_token)
    assert (placed.field("To"), placed.field("From")) == (GRID_WORKER, FROM_NUMBER)
    assert placed.field("MachineDetection") == "Enable"
    assert placed.field("StatusCallback") == f"{PUBLIC_URL}/webhooks/twilio/voice/status?d={message.delivery_id}"
    assert "completed" in placed.fields("StatusCallbackEvent")
    assert placed.field("Url") is None  # the script travels inline, nothing for Twilio to fetch

    twiml = harness.fake.twiml(sid)
    says = list(twiml.iter("Say"))
    assert all(say.get("language") == "zh-CN" for say in says)
    first = twiml[0]
    assert (first.tag, first.text, first.get("loop")) == ("Say", message.spoken_text, "2")
    gather = twiml.find("Gather")
    assert gather is not None
    assert gather.get("numDigits") == "1" and gather.get("method") == "POST"
    assert gather.get("action") == f"{PUBLIC_URL}/webhooks/twilio/voice/gather?d={message.delivery_id}"
    assert [say.text for say in gather.iter("Say")] == [PROMPT] == ["收到请按1，需要帮助请按2"]
    assert twiml[-1].tag == "Hangup"


async def test_a_very_long_warning_still_fits_twilios_inline_script_limit(harness: VoiceHarness) -> None:
    spoken = "红色暴雨预警。凤凰镇、宁河街道、城厢镇强降雨，请立即转移危险区群众。" * 200
    receipt = await harness.channel.send(replace(harness.message(), spoken_text=spoken))
    assert receipt.provider_id

    raw = harness.fake.by_sid(receipt.provider_id).field("Twiml") or ""
    assert len(raw) <= 4000
    twiml = parse_twiml(raw)
    assert (twiml[0].text or "").startswith("红色暴雨预警。凤凰镇")
    assert twiml.find("Gather") is not None


async def test_a_person_without_a_phone_number_is_not_called(harness: VoiceHarness) -> None:
    message = harness.message()
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(replace(message, address=replace(message.address, phone=None)))
    assert not failed.value.retryable and harness.fake.received == []


async def test_twilio_refusing_the_number_to_call_is_final(harness: VoiceHarness) -> None:
    harness.fake.fail_next("permanent", code=21217)
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    assert (failed.value.code, failed.value.retryable) == ("twilio_21217", False)


async def test_calls_over_the_accounts_rate_wait_as_twilio_says(harness: VoiceHarness) -> None:
    harness.fake.fail_next("rate_limited", retry_after="2")
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    assert (failed.value.retryable, failed.value.retry_after) == (True, 2.0)


# ---- keys ---------------------------------------------------------------------------------


async def test_pressing_1_is_the_answer(harness: VoiceHarness) -> None:
    message, sid = await harness.call()

    reply = await harness.channel.webhook.handle(harness.fake.key_press(sid, "1"))

    assert reply.status == 200
    pressed = Answer(
        ChannelKind.VOICE, harness.clock.now(), delivery_id=message.delivery_id, event_id=f"twilio-gather:{sid}:1"
    )
    assert reply.events == (pressed,)
    twiml = parse_twiml(reply.body)
    assert [say.text for say in twiml.iter("Say")] == ["已确认收到，谢谢。"]
    assert twiml[-1].tag == "Hangup"
    assert reply.content_type.startswith("text/xml")


async def test_pressing_2_is_an_answer_that_asks_for_help(harness: VoiceHarness) -> None:
    message, sid = await harness.call()
    reply = await harness.channel.webhook.handle(harness.fake.key_press(sid, "2"))
    [event] = reply.events
    assert isinstance(event, Answer)
    assert (event.delivery_id, event.help_needed, event.channel) == (message.delivery_id, True, ChannelKind.VOICE)


@pytest.mark.parametrize("digits", ["", "9", "*"])
async def test_no_key_or_another_key_gets_one_more_chance_then_goodbye(harness: VoiceHarness, digits: str) -> None:
    message, sid = await harness.call()
    webhook = harness.channel.webhook

    reply = await webhook.handle(harness.fake.key_press(sid, digits))
    assert reply.events == ()
    gather = parse_twiml(reply.body).find("Gather")
    assert gather is not None
    again = gather.get("action") or ""
    assert parse_qs(urlsplit(again).query) == {"d": [message.delivery_id], "r": ["1"]}

    # a wrong key at the second chance ends the call without an answer...
    last = await webhook.handle(harness.fake.key_press(sid, digits, action=again))
    assert last.events == () and parse_twiml(last.body)[-1].tag == "Hangup"
    assert parse_twiml(last.body).find("Gather") is None

    # ...and 1 at the second chance is the answer (Twilio signs the follow-up URL like any other)
    answered = await webhook.handle(harness.fake.key_press(sid, "1", action=again))
    assert answered.events == (
        Answer(
            ChannelKind.VOICE, harness.clock.now(), delivery_id=message.delivery_id, event_id=f"twilio-gather:{sid}:1"
        ),
    )


@pytest.mark.parametrize("answered_by", ["machine_start", "machine_end_beep", "machine_end_silence", "fax"])
async def test_an_answering_machine_never_answers(harness: VoiceHarness, answered_by: str) -> None:
    message, sid = await harness.call()
    webhook = harness.channel.webhook

    keyed = await webhook.handle(harness.fake.key_press(sid, "1", answered_by=answered_by))
    assert keyed.events == ()
    assert parse_twiml(keyed.body)[-1].tag == "Hangup"

    ended = await webhook.handle(harness.fake.call_status(sid, "completed", answered_by=answered_by, duration_s=31))
    [event] = ended.events
    assert isinstance(event, StatusUpdate)
    assert (event.delivered, event.error, event.delivery_id) == (False, "answering_machine", message.delivery_id)


# ---- how the call ended -------------------------------------------------------------------


@pytest.mark.parametrize("answered_by", [None, "human", "unknown"])
async def test_a_call_picked_up_without_a_key_is_delivered_but_not_answered(
    harness: VoiceHarness, answered_by: str | None
) -> None:
    message, sid = await harness.call()

    reply = await harness.channel.webhook.handle(
        harness.fake.call_status(sid, "completed", answered_by=answered_by, duration_s=42)
    )

    [event] = reply.events
    assert isinstance(event, StatusUpdate)
    assert (event.delivered, event.delivery_id, event.provider_id) == (True, message.delivery_id, sid)
    assert event.detail["duration_s"] == "42"


@pytest.mark.parametrize("status", ["no-answer", "busy", "failed", "canceled"])
async def test_a_call_that_did_not_reach_anyone_fails_so_the_core_can_redial(
    harness: VoiceHarness, status: str
) -> None:
    message, sid = await harness.call()
    reply = await harness.channel.webhook.handle(harness.fake.call_status(sid, status))
    assert reply.events == (
        StatusUpdate(
            ChannelKind.VOICE,
            harness.clock.now(),
            False,
            delivery_id=message.delivery_id,
            provider_id=sid,
            error=status,
            detail={"status": status},
        ),
    )


@pytest.mark.parametrize("status", ["initiated", "ringing", "in-progress"])
async def test_progress_events_record_nothing(harness: VoiceHarness, status: str) -> None:
    _, sid = await harness.call()
    reply = await harness.channel.webhook.handle(harness.fake.call_status(sid, status))
    assert reply.status == 200 and reply.events == ()


async def test_forged_key_presses_and_call_reports_are_refused(harness: VoiceHarness) -> None:
    _, sid = await harness.call()
    webhook = harness.channel.webhook
    genuine = harness.fake.key_press(sid, "9")
    for request in (
        harness.fake.key_press(sid, "1", forged=True),
        harness.fake.call_status(sid, "completed", forged=True),
        replace(genuine, form={**genuine.form, "Digits": "1"}),  # the key changed after Twilio signed it
    ):
        reply = await webhook.handle(request)
        assert (reply.status, reply.events) == (403, ())


# ---- one webhook for SMS and voice --------------------------------------------------------


async def test_sms_and_voice_callbacks_arrive_at_one_twilio_webhook(clock: ManualClock) -> None:
    fake = FakeTwilio()
    async with serve_app(fake.app) as base_url:
        webhook = TwilioWebhook(fake.auth_token, clock=clock)
        sid, token = fake.account_sid, fake.auth_token
        sms = TwilioSms(
            account_sid=sid,
            auth_token=token,
            from_number=FROM_NUMBER,
            public_url=PUBLIC_URL,
            base_url=base_url,
            webhook=webhook,
        )
        voice = TwilioVoice(
            account_sid=sid,
            auth_token=token,
            from_number=FROM_NUMBER,
            public_url=PUBLIC_URL,
            base_url=base_url,
            webhook=webhook,
        )
        try:
            assert sms.webhooks == voice.webhooks == (webhook,)
            assert webhook.paths == ("/sms/inbound", "/sms/status", "/voice/gather", "/voice/status")
            text = await sms.send(make_message(ChannelKind.SMS))
            call = await voice.send(make_message(ChannelKind.VOICE))
            assert text.provider_id and call.provider_id
            delivered = await webhook.handle(fake.message_status(text.provider_id, "delivered"))
            answered = await webhook.handle(fake.key_press(call.provider_id, "1"))
        finally:
            await sms.close()
            await voice.close()
    assert [type(e) for e in delivered.events + answered.events] == [StatusUpdate, Answer]
