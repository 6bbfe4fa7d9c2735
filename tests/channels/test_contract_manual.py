"""Manual tasks (鸣锣吹哨) against the shared channel contract, carried by the real WeCom and Twilio SMS adapters.

The story: a village siren stayed silent, so the village head gets a 鸣锣吹哨 task. It goes as a WeCom
card when they have WeCom, as an SMS otherwise; the answer comes back through that carrier's own
callback (the 收到 button, or Twilio's delivery report), and a forged one records nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from alerting.answer.events import Answer, InboundEvent, StatusUpdate
from alerting.deliver.port import Address, DeliveryError, OutboundMessage, Receipt
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Purpose, TaskKind
from channels.manual import ManualTaskChannel
from channels.twilio.sms import TwilioSms
from channels.wecom.client import WeComChannel
from tests.channels.contract import ChannelContract, Failure, make_message
from tests.fakes.server import serve_app
from tests.fakes.twilio import FakeTwilio
from tests.fakes.wecom import FakeWeCom

pytestmark = pytest.mark.timeout(30)

PUBLIC_URL = "https://jy.example.test"
FROM_NUMBER = "+15005550006"
VILLAGE_HEAD = Address(person_id="v1-head", name="村主任甲", phone="+8613900000021", wecom_userid="wx9")
NO_WECOM = Address(person_id="v2-head", name="村主任乙", phone="+8613900000022")


@dataclass
class ManualHarness:
    channel: ManualTaskChannel
    wecom: WeComChannel
    sms: TwilioSms
    fake_wecom: FakeWeCom
    fake_twilio: FakeTwilio

    def message(self, address: Address = VILLAGE_HEAD) -> OutboundMessage:
        return make_message(ChannelKind.MANUAL, purpose=Purpose.TASK, task=TaskKind.GONG, address=address)

    def fail_next(self, how: Failure) -> None:
        if how == "retryable":
            self.fake_wecom.fail_next("busy")  # errcode -1, 系统繁忙
        elif how == "rate_limited":
            self.fake_wecom.fail_next("freq")  # errcode 45009, api freq out of limit
        else:
            # The member is not in WeCom (60111) and Twilio refuses the number (21211): no carrier is left.
            self.fake_wecom.fail_next("invalid_user")
            self.fake_twilio.fail_next("permanent")

    async def callback(self, receipt: Receipt, message: OutboundMessage, *, forged: bool) -> list[InboundEvent]:
        """What the carrier that took the task sends back: the 收到 button on the card, or the SMS delivery report."""
        if receipt.detail["carrier"] == ChannelKind.WECOM.value:
            query, body = self.fake_wecom.button_click(message.delivery_id, self.userid(message), forged=forged)
            reply = await self.wecom.callback.handle(self.fake_wecom.webhook_request("POST", query, body))
        else:
            assert receipt.provider_id
            reply = await self.sms.webhook.handle(
                self.fake_twilio.message_status(receipt.provider_id, "delivered", forged=forged)
            )
        return list(reply.events)

    @staticmethod
    def userid(message: OutboundMessage) -> str:
        assert message.address.wecom_userid
        return message.address.wecom_userid

    async def good_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        return await self.callback(receipt, message, forged=False)

    async def bad_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        return await self.callback(receipt, message, forged=True)


@pytest.fixture
async def harness(clock: ManualClock) -> AsyncIterator[ManualHarness]:
    fake_wecom, fake_twilio = FakeWeCom(), FakeTwilio()
    async with serve_app(fake_wecom.app) as wecom_url, serve_app(fake_twilio.app) as twilio_url:
        wecom = WeComChannel(
            fake_wecom.corp_id,
            fake_wecom.secret,
            fake_wecom.agent_id,
            token=fake_wecom.token,
            aes_key=fake_wecom.aes_key,
            base_url=wecom_url,
            public_url=PUBLIC_URL,
            clock=clock,
        )
        sms = TwilioSms(
            account_sid=fake_twilio.account_sid,
            auth_token=fake_twilio.auth_token,
            from_number=FROM_NUMBER,
            public_url=PUBLIC_URL,
            base_url=twilio_url,
            clock=clock,
        )
        manual = ManualTaskChannel([wecom, sms])
        for channel in (wecom, sms, manual):
            await channel.start(_ignore)
        try:
            yield ManualHarness(manual, wecom, sms, fake_wecom, fake_twilio)
        finally:
            await manual.close()
            await wecom.close()
            await sms.close()


async def _ignore(event: InboundEvent) -> None:
    return None


class TestManualTaskContract(ChannelContract):
    """Manual tasks over real WeCom and Twilio SMS carriers keep the contract every adapter keeps."""


# ---- the task on the wire -------------------------------------------------------------------


async def test_the_village_head_gets_the_task_as_a_wecom_card_to_answer(harness: ManualHarness) -> None:
    message = harness.message()
    receipt = await harness.channel.send(message)

    [card] = harness.fake_wecom.cards()
    assert harness.fake_wecom.sent[-1]["touser"] == "wx9"
    assert card["task_id"] == f"jy-{message.delivery_id}-1"
    assert [b["key"] for b in card["button_list"]] == [f"ack:{message.delivery_id}", f"help:{message.delivery_id}"]
    assert card["card_action"]["url"] == message.ack_url  # where the households and people moved are filled in
    assert harness.fake_twilio.received == []
    assert (receipt.provider, receipt.detail["carrier"]) == ("manual+wecom+twilio", "wecom")

    [answer] = await harness.good_callback(receipt, message)
    assert isinstance(answer, Answer)
    assert (answer.delivery_id, answer.help_needed) == (message.delivery_id, False)


async def test_without_wecom_the_task_goes_by_sms_and_its_delivery_report_comes_back(harness: ManualHarness) -> None:
    message = harness.message(NO_WECOM)
    receipt = await harness.channel.send(message)

    [sent] = harness.fake_twilio.created("Messages")
    assert (sent.field("To"), sent.field("Body")) == (NO_WECOM.phone, message.short_text)
    assert sent.field("StatusCallback") == f"{PUBLIC_URL}/webhooks/twilio/sms/status?d={message.delivery_id}"
    assert harness.fake_wecom.sent == [] and harness.fake_wecom.gettoken_calls == 0
    assert (receipt.provider, receipt.provider_id, receipt.detail["carrier"]) == (
        "manual+wecom+twilio",
        sent.sid,
        "sms",
    )

    [report] = await harness.good_callback(receipt, message)
    assert isinstance(report, StatusUpdate)
    assert (report.delivery_id, report.delivered) == (message.delivery_id, True)
    assert await harness.bad_callback(receipt, message) == []


async def test_a_member_wecom_does_not_know_gets_the_task_by_sms(harness: ManualHarness) -> None:
    harness.fake_wecom.fail_next("invalid_user")
    receipt = await harness.channel.send(harness.message())

    assert [b["touser"] for b in harness.fake_wecom.refused] == ["wx9"]
    assert [r.field("To") for r in harness.fake_twilio.created("Messages")] == [VILLAGE_HEAD.phone]
    assert receipt.detail["carrier"] == "sms"


async def test_twilio_busy_for_someone_without_wecom_says_when_to_come_back(harness: ManualHarness) -> None:
    harness.fake_twilio.fail_next("rate_limited", retry_after="7")
    with pytest.raises(DeliveryError) as limited:
        await harness.channel.send(harness.message(NO_WECOM))
    assert (limited.value.code, limited.value.retryable, limited.value.retry_after) == ("twilio_20429", True, 7.0)


async def test_wecom_busy_is_retried_on_wecom_not_pushed_to_sms(harness: ManualHarness) -> None:
    harness.fail_next("retryable")
    with pytest.raises(DeliveryError) as busy:
        await harness.channel.send(harness.message())
    assert (busy.value.code, busy.value.retryable) == ("wecom_-1", True)
    assert harness.fake_twilio.received == []  # a moment's trouble at WeCom is no reason for a second message


async def test_when_every_carrier_refuses_for_good_the_last_refusal_is_kept(harness: ManualHarness) -> None:
    harness.fail_next("permanent")
    with pytest.raises(DeliveryError) as refused:
        await harness.channel.send(harness.message())
    assert (refused.value.code, refused.value.retryable) == ("twilio_21211", False)
    assert len(harness.fake_wecom.refused) == 1 and len(harness.fake_twilio.received) == 1
