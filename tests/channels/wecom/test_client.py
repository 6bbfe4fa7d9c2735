"""WeCom: the adapter against a local WeCom that speaks qyapi's wire format and sends its encrypted callbacks."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from alerting.answer.events import Answer, InboundEvent, InboundText
from alerting.deliver.port import Address, DeliveryError, OutboundMessage, Receipt
from alerting.model.clock import ManualClock
from alerting.model.domain import ChannelKind, Purpose
from channels.wecom.client import WeComChannel, template_card_body
from channels.wecom.crypto import WeComCrypto, WeComCryptoError, parse_xml, signature, xml_text
from tests.channels.contract import ChannelContract, Failure, make_message
from tests.fakes.server import serve_app
from tests.fakes.wecom import FakeWeCom, Lever

PUBLIC_URL = "https://jy.example.test"
LEVERS: dict[Failure, Lever] = {"retryable": "busy", "rate_limited": "freq", "permanent": "invalid_user"}


@dataclass
class WeComHarness:
    channel: WeComChannel
    fake: FakeWeCom

    def message(self, **overrides: Any) -> OutboundMessage:
        return make_message(ChannelKind.WECOM, **overrides)

    def fail_next(self, how: Failure) -> None:
        self.fake.fail_next(LEVERS[how])

    async def click(self, delivery_id: str, **kwargs: Any) -> list[InboundEvent]:
        query, body = self.fake.button_click(delivery_id, **kwargs)
        reply = await self.channel.callback.handle(self.fake.webhook_request("POST", query, body))
        return list(reply.events)

    async def good_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        return await self.click(message.delivery_id)

    async def bad_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        return await self.click(message.delivery_id, forged=True)


def make_channel(fake: FakeWeCom, base_url: str, **kwargs: Any) -> WeComChannel:
    return WeComChannel(
        fake.corp_id,
        fake.secret,
        fake.agent_id,
        token=fake.token,
        aes_key=fake.aes_key,
        base_url=base_url,
        public_url=PUBLIC_URL,
        **kwargs,
    )


@pytest.fixture
async def harness() -> AsyncIterator[WeComHarness]:
    fake = FakeWeCom()
    async with serve_app(fake.app) as base_url:
        channel = make_channel(fake, base_url)

        async def ignore(event: InboundEvent) -> None:
            pass

        await channel.start(ignore)
        try:
            yield WeComHarness(channel, fake)
        finally:
            await channel.close()


class TestWeComContract(ChannelContract):
    pass


# ---- sending ---------------------------------------------------------------------------------


async def test_the_grid_worker_gets_a_button_card_with_the_warning(harness: WeComHarness) -> None:
    message = harness.message()
    receipt = await harness.channel.send(message)

    body = harness.fake.sent[-1]
    assert body["touser"] == "wx8"
    assert body["msgtype"] == "template_card"
    assert body["agentid"] == harness.fake.agent_id
    assert body["enable_duplicate_check"] == 1 and body["duplicate_check_interval"] == 1800
    card = body["template_card"]
    assert card["card_type"] == "button_interaction"
    assert card["main_title"]["title"] == "红色暴雨预警：凤凰镇强降雨"
    assert "立即转移危险区群众" in card["sub_title_text"]
    assert message.delivery_id in card["task_id"]
    assert [(b["text"], b["key"]) for b in card["button_list"]] == [
        ("收到", f"ack:{message.delivery_id}"),
        ("需要帮助", f"help:{message.delivery_id}"),
    ]
    assert card["card_action"] == {"type": 1, "url": message.ack_url}
    assert receipt.provider_id and receipt.provider == "wecom" and not receipt.delivered
    # the Chinese travels as UTF-8: WeCom refuses \uXXXX escapes
    assert "凤凰镇".encode() in harness.fake.raw_bodies[-1]


async def test_a_retry_of_the_same_delivery_gets_a_new_task_id(harness: WeComHarness) -> None:
    first = harness.message()
    retry = harness.message(delivery_id=first.delivery_id, attempt=2)
    await harness.channel.send(first)
    await harness.channel.send(retry)
    ids = [card["task_id"] for card in harness.fake.cards()]
    assert len(set(ids)) == 2 and all(first.delivery_id in i for i in ids)


async def test_one_token_serves_many_concurrent_sends(harness: WeComHarness) -> None:
    await asyncio.gather(*(harness.channel.send(harness.message()) for _ in range(20)))
    assert len(harness.fake.sent) == 20
    assert harness.fake.gettoken_calls == 1


async def test_the_token_is_kept_until_five_minutes_before_it_expires() -> None:
    fake, clock = FakeWeCom(), ManualClock()
    async with serve_app(fake.app) as base_url:
        channel = make_channel(fake, base_url, clock=clock)
        try:
            await channel.send(make_message(ChannelKind.WECOM))
            clock.advance(seconds=7200 - 300 - 1)
            await channel.send(make_message(ChannelKind.WECOM))
            assert fake.gettoken_calls == 1
            clock.advance(seconds=2)
            await channel.send(make_message(ChannelKind.WECOM))
            assert fake.gettoken_calls == 2
        finally:
            await channel.close()


async def test_an_expired_token_is_fetched_again_once_and_the_send_goes_through(harness: WeComHarness) -> None:
    await harness.channel.send(harness.message())
    harness.fake.expire_tokens()
    await asyncio.gather(*(harness.channel.send(harness.message()) for _ in range(5)))
    assert len(harness.fake.sent) == 6
    assert harness.fake.gettoken_calls == 2  # one refresh, shared by the five sends that hit 42001


async def test_a_token_that_stays_refused_fails_the_send_without_looping(harness: WeComHarness) -> None:
    harness.fake.expires_in = 0  # every token it issues is already expired
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    assert failed.value.code == "wecom_42001" and failed.value.retryable
    assert harness.fake.gettoken_calls == 2


async def test_a_wrong_secret_is_a_permanent_failure_that_names_gettoken() -> None:
    fake = FakeWeCom()
    async with serve_app(fake.app) as base_url:
        channel = WeComChannel(
            fake.corp_id,
            "wrong",
            fake.agent_id,
            token=fake.token,
            aes_key=fake.aes_key,
            base_url=base_url,
            public_url=PUBLIC_URL,
        )
        try:
            with pytest.raises(DeliveryError) as failed:
                await channel.send(make_message(ChannelKind.WECOM))
        finally:
            await channel.close()
    assert failed.value.code == "wecom_40001" and not failed.value.retryable
    assert "gettoken" in str(failed.value) and "wrong" not in str(failed.value)


async def test_a_server_without_template_cards_gets_a_textcard_with_the_ack_link(harness: WeComHarness) -> None:
    harness.fake.supports_template_card = False
    first, second = harness.message(), harness.message()
    await harness.channel.send(first)
    await harness.channel.send(second)
    assert [b["msgtype"] for b in harness.fake.refused] == ["template_card"]  # tried once, then remembered
    cards = harness.fake.cards("textcard")
    assert len(cards) == 2
    assert cards[0]["url"] == first.ack_url and cards[0]["btntxt"] == "收到"
    assert cards[0]["title"] == first.title


async def test_textcard_mode_sends_textcards_only() -> None:
    fake = FakeWeCom()
    async with serve_app(fake.app) as base_url:
        channel = make_channel(fake, base_url, card_mode="textcard")
        try:
            long = "很长的预警正文。" * 200
            await channel.send(make_message(ChannelKind.WECOM, text=long))
        finally:
            await channel.close()
    assert [b["msgtype"] for b in fake.sent] == ["textcard"]
    assert len(fake.cards("textcard")[0]["description"].encode()) <= 512


async def test_a_lift_is_plain_text_without_buttons(harness: WeComHarness) -> None:
    await harness.channel.send(harness.message(purpose=Purpose.LIFT, text="【巫溪县应急】红色暴雨预警已解除。"))
    assert harness.fake.sent[-1]["msgtype"] == "text"
    assert harness.fake.sent[-1]["text"]["content"] == "【巫溪县应急】红色暴雨预警已解除。"


@pytest.mark.parametrize(
    ("lever", "retryable", "code", "retry_after"),
    [
        ("busy", True, "wecom_-1", None),
        ("freq", True, "wecom_45009", 60.0),
        ("invalid_user", False, "wecom_60111", None),
        ("http_503", True, "http_503", None),
        ("http_429", True, "http_429", 7.0),
        ("invaliduser_ok", False, "wecom_invaliduser", None),
    ],
)
async def test_failures_say_whether_a_retry_can_help(
    harness: WeComHarness, lever: Lever, retryable: bool, code: str, retry_after: float | None
) -> None:
    harness.fake.fail_next(lever)
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    assert (failed.value.retryable, failed.value.code, failed.value.retry_after) == (retryable, code, retry_after)


async def test_a_member_wecom_does_not_know_is_a_permanent_failure(harness: WeComHarness) -> None:
    message = harness.message(address=Address(person_id="x", wecom_userid="left"))
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(message)
    assert failed.value.code == "wecom_81013" and not failed.value.retryable


async def test_someone_without_a_wecom_account_is_not_sent_anything(harness: WeComHarness) -> None:
    message = harness.message(address=Address(person_id="x", phone="+8613900000001"))
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(message)
    assert failed.value.code == "wecom_no_userid"
    assert harness.fake.gettoken_calls == 0


async def test_the_token_and_secret_never_reach_the_log(
    harness: WeComHarness, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    # even with httpx logging every request (jiaoying's own logging setup holds it at WARNING)
    caplog.set_level(logging.DEBUG, logger="httpx")
    await harness.channel.send(harness.message())
    harness.fake.expire_tokens()
    await harness.channel.send(harness.message())
    harness.fake.fail_next("http_503")
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    out = capsys.readouterr()
    logged = caplog.text + out.out + out.err + str(failed.value)
    assert "access_token=***" in caplog.text  # httpx does log the request line, redacted
    assert harness.fake.secret not in logged
    for token in harness.fake._tokens:
        assert token not in logged


# ---- the callback ----------------------------------------------------------------------------


async def test_pressing_shou_dao_answers_the_delivery(harness: WeComHarness) -> None:
    message = harness.message()
    await harness.channel.send(message)
    query, body = harness.fake.button_click(message.delivery_id, create_time=1_782_871_200)
    reply = await harness.channel.callback.handle(harness.fake.webhook_request("POST", query, body))

    assert reply.status == 200
    (answer,) = reply.events
    assert isinstance(answer, Answer)
    assert answer.delivery_id == message.delivery_id and answer.channel is ChannelKind.WECOM
    assert not answer.help_needed
    assert answer.at.timestamp() == 1_782_871_200
    # the encrypted passive reply turns the pressed button into "已确认"
    envelope = parse_xml(reply.body)
    crypto = harness.fake.crypto
    sealed, signed = xml_text(envelope, "Encrypt") or "", xml_text(envelope, "MsgSignature") or ""
    assert crypto.verify(signed, xml_text(envelope, "TimeStamp") or "", xml_text(envelope, "Nonce") or "", sealed)
    update = parse_xml(crypto.decrypt(sealed))
    assert xml_text(update, "MsgType") == "update_button"
    assert xml_text(update, "Button/ReplaceName") == "已确认"
    assert xml_text(update, "ToUserName") == "wx8"


async def test_pressing_help_answers_and_asks_for_help(harness: WeComHarness) -> None:
    message = harness.message()
    (answer,) = await harness.click(message.delivery_id, key="help")
    assert isinstance(answer, Answer) and answer.help_needed and answer.delivery_id == message.delivery_id


async def test_a_repeated_callback_is_one_answer(harness: WeComHarness) -> None:
    query, body = harness.fake.button_click("d1", create_time=1_782_871_200)
    request = harness.fake.webhook_request("POST", query, body)
    first = await harness.channel.callback.handle(request)
    again = await harness.channel.callback.handle(request)  # WeCom retries when we were slow
    assert len(first.events) == 1 and again.events == () and again.status == 200


async def test_a_forged_signature_is_refused_and_records_nothing(harness: WeComHarness) -> None:
    query, body = harness.fake.button_click("d1", forged=True)
    reply = await harness.channel.callback.handle(harness.fake.webhook_request("POST", query, body))
    assert (reply.status, reply.events) == (403, ())


async def test_a_tampered_body_is_refused(harness: WeComHarness) -> None:
    query, _ = harness.fake.button_click("d1")
    _, other_body = harness.fake.button_click("d2")
    reply = await harness.channel.callback.handle(harness.fake.webhook_request("POST", query, other_body))
    assert (reply.status, reply.events) == (403, ())


async def test_a_message_encrypted_for_another_corp_is_refused(harness: WeComHarness) -> None:
    query, body = harness.fake.button_click("d1", receive_id="wwsomeoneelse00000")
    reply = await harness.channel.callback.handle(harness.fake.webhook_request("POST", query, body))
    assert (reply.status, reply.events) == (403, ())


async def test_a_callback_without_signature_or_with_a_dtd_is_refused(harness: WeComHarness) -> None:
    query, body = harness.fake.button_click("d1")
    unsigned = {k: v for k, v in query.items() if k != "msg_signature"}
    assert (await harness.channel.callback.handle(harness.fake.webhook_request("POST", unsigned, body))).status == 403
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><xml><Encrypt>&a;</Encrypt></xml>'
    reply = await harness.channel.callback.handle(harness.fake.webhook_request("POST", query, bomb))
    assert (reply.status, reply.events) == (403, ())


async def test_saving_the_callback_url_in_the_admin_console_passes_the_check(harness: WeComHarness) -> None:
    reply = await harness.channel.callback.handle(harness.fake.webhook_request("GET", harness.fake.url_check("4242")))
    assert (reply.status, reply.body, reply.events) == (200, "4242", ())
    forged = await harness.channel.callback.handle(
        harness.fake.webhook_request("GET", harness.fake.url_check("4242", forged=True))
    )
    assert forged.status == 403 and "4242" not in forged.body


# ---- the crypto against Tencent's published sample (weworkapi_python callback/Sample.py) -----

SAMPLE_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
SAMPLE_AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
SAMPLE_CORP_ID = "ww1436e0e65a779aee"
SAMPLE_ECHO = "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
SAMPLE_ENCRYPT = (
    "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew"
    "+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24Yh"
    "mZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwo"
    "cugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+"
)
SAMPLE_XML = (
    "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName>"
    "<CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content>"
    "<MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>"
)


def test_the_published_sample_signs_and_decrypts() -> None:
    crypto = WeComCrypto(SAMPLE_TOKEN, SAMPLE_AES_KEY, SAMPLE_CORP_ID)
    assert signature(SAMPLE_TOKEN, "1476416373", "47744683", SAMPLE_ECHO) == "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb"
    assert crypto.open("012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "1476416373", "47744683", SAMPLE_ECHO) == (
        "1288432023552776189"
    )
    assert crypto.open("0c3914025cb4b4d68103f6bfc8db550f79dcf48e", "1476422779", "1597212914", SAMPLE_ENCRYPT) == (
        SAMPLE_XML
    )


def test_encrypting_the_sample_with_its_random_prefix_gives_the_published_ciphertext() -> None:
    crypto = WeComCrypto(SAMPLE_TOKEN, SAMPLE_AES_KEY, SAMPLE_CORP_ID)
    assert crypto.encrypt(SAMPLE_XML, random_prefix=b"694ce5a83ae07fe3") == SAMPLE_ENCRYPT
    assert crypto.decrypt(crypto.encrypt("叫应 round trip")) == "叫应 round trip"


def test_the_sample_decrypts_only_for_its_own_corp() -> None:
    with pytest.raises(WeComCryptoError, match="receive id"):
        WeComCrypto(SAMPLE_TOKEN, SAMPLE_AES_KEY, "wwanothercorp").decrypt(SAMPLE_ENCRYPT)


async def test_the_published_sample_callback_is_a_text_kept_not_an_answer() -> None:
    channel = WeComChannel(
        SAMPLE_CORP_ID,
        "s",
        1000002,
        token=SAMPLE_TOKEN,
        aes_key=SAMPLE_AES_KEY,
        base_url="http://127.0.0.1:9",
        public_url=PUBLIC_URL,
    )
    try:
        query = {"msg_signature": "0c3914025cb4b4d68103f6bfc8db550f79dcf48e", "timestamp": "1476422779"}
        query["nonce"] = "1597212914"
        body = (
            f"<xml><ToUserName><![CDATA[{SAMPLE_CORP_ID}]]></ToUserName>\n<Encrypt><![CDATA[{SAMPLE_ENCRYPT}]]>"
            "</Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>"
        ).encode()
        reply = await channel.callback.handle(FakeWeCom.webhook_request("POST", query, body))
        get = await channel.callback.handle(
            FakeWeCom.webhook_request(
                "GET",
                {
                    "msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
                    "timestamp": "1476416373",
                    "nonce": "47744683",
                    "echostr": SAMPLE_ECHO.replace("+", " "),  # an unencoded '+' arrives as a space
                },
            )
        )
    finally:
        await channel.close()
    assert reply.status == 200
    (text,) = reply.events
    assert isinstance(text, InboundText) and text.text == "你好" and text.from_user == "ChenJiaShun"
    assert (get.status, get.body) == (200, "1288432023552776189")


def test_a_bad_encoding_aes_key_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="43"):
        WeComCrypto("t", "short", SAMPLE_CORP_ID)


def test_the_card_json_is_what_the_docs_show() -> None:
    # the top-level fields of developer.work.weixin.qq.com/document/path/90236, nothing of our own
    body = template_card_body(make_message(ChannelKind.WECOM, delivery_id="abc"), "wx8", 1000002)
    assert set(body) == {
        "touser",
        "msgtype",
        "agentid",
        "template_card",
        "enable_id_trans",
        "enable_duplicate_check",
        "duplicate_check_interval",
    }
    assert json.loads(json.dumps(body))["template_card"]["task_id"] == "jy-abc-1"
