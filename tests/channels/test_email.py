"""Email to duty officers, against a real SMTP server (aiosmtpd) on a loopback port.

The story: the county sends a red 暴雨 warning; the township duty officer gets a mail whose HTML
shows the level and a big 收到 button, and whose plain-text twin carries the same link. The server
may refuse: a full mailbox today (4xx) is worth another try, an address that does not exist (5xx) is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alerting.answer.events import InboundEvent
from alerting.deliver.port import Address, Channel, DeliveryError, OutboundMessage, Receipt
from alerting.model.domain import ChannelKind, Level, Purpose
from channels.email import EmailChannel, throttle_delay
from tests.channels.contract import ChannelContract, Failure, Harness, make_message
from tests.fakes.server import free_port
from tests.fakes.smtp import Certificate, FakeSmtpServer, self_signed_certificate

pytestmark = [
    pytest.mark.timeout(30),
    # the fake takes AUTH over plain SMTP so the plain tests can check the login; aiosmtpd warns about it
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

SENDER = "巫溪县应急管理局 <yj@wuxi.example.gov.cn>"
USERS = {"duty-room": "s3cret-pass"}
NO_CALLBACK = "SMTP has no delivery callback: a mail server says nothing after it queued the mail"


def email_channel(server: FakeSmtpServer, **kwargs: object) -> EmailChannel:
    options: dict[str, object] = {
        "username": "duty-room",
        "password": "s3cret-pass",
        "sender": SENDER,
        "starttls": False,
        "timeout": 5.0,
    }
    options.update(kwargs)
    return EmailChannel(server.host, server.port, **options)  # type: ignore[arg-type]


@dataclass
class EmailHarness:
    channel: Channel  # the port's view: what the core sees of the adapter
    server: FakeSmtpServer

    def message(self) -> OutboundMessage:
        return make_message(ChannelKind.EMAIL)

    def fail_next(self, how: Failure) -> None:
        replies = {
            "retryable": ("DATA", "451 4.3.0 Temporary local problem, please try again"),
            "rate_limited": ("RCPT", "450 4.7.1 Too many messages from you; try again in 30 seconds"),
            "permanent": ("RCPT", "550 5.1.1 <g1@example.org>: Recipient address rejected: no such user"),
        }
        stage, reply = replies[how]
        self.server.answer_next(stage, reply)  # type: ignore[arg-type]

    async def good_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        raise NotImplementedError(NO_CALLBACK)

    async def bad_callback(self, receipt: Receipt, message: OutboundMessage) -> list[InboundEvent]:
        raise NotImplementedError(NO_CALLBACK)


@pytest.fixture
async def server() -> AsyncIterator[FakeSmtpServer]:
    async with FakeSmtpServer(users=USERS) as smtp:
        yield smtp


@pytest.fixture
async def harness(server: FakeSmtpServer) -> AsyncIterator[EmailHarness]:
    channel = email_channel(server)
    await channel.start(_no_events)
    try:
        yield EmailHarness(channel, server)
    finally:
        await channel.close()


async def _no_events(event: InboundEvent) -> None:
    raise AssertionError(f"email produced an event: {event}")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed_certificate(tmp_path_factory.mktemp("smtp-tls"))


class TestEmailContract(ChannelContract):
    @pytest.mark.skip(reason=NO_CALLBACK)
    async def test_the_provider_callback_becomes_events(self, harness: Harness) -> None:
        await super().test_the_provider_callback_becomes_events(harness)

    @pytest.mark.skip(reason=NO_CALLBACK)
    async def test_a_forged_callback_records_nothing(self, harness: Harness) -> None:
        await super().test_a_forged_callback_records_nothing(harness)


# ---- what the duty officer receives --------------------------------------------------------


async def test_the_warning_arrives_as_text_and_html_with_the_answer_link(harness: EmailHarness) -> None:
    message = harness.message()
    receipt = await harness.channel.send(message)

    [mail] = harness.server.received
    assert mail.mail_from == "yj@wuxi.example.gov.cn"
    assert mail.rcpt_tos == ("g1@example.org",)
    assert mail.login == "duty-room"
    parsed = mail.message
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Subject"] == message.title
    assert parsed["From"].addresses[0].display_name == "巫溪县应急管理局"
    assert parsed["To"] == "g1@example.org"
    assert parsed["Message-ID"] == receipt.provider_id
    assert parsed["Importance"] == "high"

    text = mail.part("text/plain")
    assert message.text in text
    assert message.ack_url is not None and message.ack_url in text

    html = mail.part("text/html")
    assert "红色暴雨预警" in html
    assert "立即转移危险区群众" in html
    assert f'<a href="{message.ack_url}"' in html
    assert ">收到</a>" in html
    assert "演练" not in html
    assert receipt.provider == "smtp" and not receipt.delivered


async def test_a_resend_of_the_same_delivery_carries_the_same_message_id(harness: EmailHarness) -> None:
    message = harness.message()
    first = await harness.channel.send(message)
    again = await harness.channel.send(message)  # the engine crashed before it recorded the first
    other = await harness.channel.send(harness.message())

    ids = [mail.message["Message-ID"] for mail in harness.server.received]
    assert ids[0] == ids[1] == first.provider_id == again.provider_id
    assert message.delivery_id in ids[0]
    assert ids[2] == other.provider_id != ids[0]


async def test_an_exercise_says_so_in_the_subject_and_the_mail(harness: EmailHarness) -> None:
    message = make_message(ChannelKind.EMAIL, exercise=True, title="红色暴雨预警：凤凰镇强降雨")
    await harness.channel.send(message)

    [mail] = harness.server.received
    assert mail.message["Subject"].startswith("【演练】")
    assert mail.message["X-Jiaoying-Exercise"] == "yes"
    assert "本邮件为应急演练，不是真实预警" in mail.part("text/html")


async def test_a_lift_notice_asks_for_nothing(harness: EmailHarness) -> None:
    text = "【巫溪县应急】红色暴雨预警已解除。凤凰镇强降雨。感谢各位坚守岗位。"
    message = make_message(
        ChannelKind.EMAIL, purpose=Purpose.LIFT, title="红色暴雨预警解除", text=text, short_text=text, ack_url=None
    )
    await harness.channel.send(message)

    [mail] = harness.server.received
    html = mail.part("text/html")
    assert "已解除" in html
    assert "<a " not in html and ">收到</a>" not in html
    assert "http" not in mail.part("text/plain")
    assert mail.message["Importance"] is None


async def test_whatever_the_text_holds_is_shown_not_run(harness: EmailHarness) -> None:
    message = make_message(ChannelKind.EMAIL, title="<b>标题</b>", text="降雨 <script>alert(1)</script> & 转移\n第二行")
    await harness.channel.send(message)

    html = harness.server.received[0].part("text/html")
    assert "<script>" not in html and "<b>标题" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; 转移<br>第二行" in html


async def test_a_warning_to_a_person_without_a_mailbox_is_refused_before_sending(harness: EmailHarness) -> None:
    message = make_message(ChannelKind.EMAIL, address=Address(person_id="g2", name="网格员乙", phone="+8613900000009"))
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(message)
    assert (failed.value.retryable, failed.value.code) == (False, "bad_address")
    assert harness.server.received == []


# ---- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "reply", "retryable", "code"),
    [
        ("RCPT", "550 5.1.1 Recipient address rejected: no such user", False, "smtp_550"),
        ("RCPT", "450 4.2.1 Mailbox busy, try again", True, "smtp_450"),
        ("RCPT", "452 4.2.2 Mailbox full", True, "smtp_452"),
        ("DATA", "451 4.3.0 Local error in processing", True, "smtp_451"),
        ("DATA", "554 5.7.1 Message rejected as spam", False, "smtp_554"),
    ],
)
async def test_a_refusal_is_retried_only_when_the_server_says_it_is_temporary(
    harness: EmailHarness, stage: str, reply: str, retryable: bool, code: str
) -> None:
    harness.server.answer_next(stage, reply)  # type: ignore[arg-type]
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    assert (failed.value.retryable, failed.value.code) == (retryable, code)

    # the channel is not stuck: the next mail goes through
    await harness.channel.send(harness.message())
    assert len(harness.server.received) == 1


async def test_a_server_asking_to_slow_down_says_for_how_long(harness: EmailHarness) -> None:
    harness.server.answer_next("RCPT", "450 4.7.1 Rate limit exceeded, try again in 2 minutes")
    with pytest.raises(DeliveryError) as failed:
        await harness.channel.send(harness.message())
    assert failed.value.retryable and failed.value.retry_after == 120.0


def test_throttle_delays() -> None:
    assert throttle_delay(421, "4.7.0 Try again later, closing connection") == 60.0
    assert throttle_delay(450, "4.7.1 too many connections; wait 45 seconds") == 45.0
    assert throttle_delay(450, "4.2.1 Mailbox busy") is None
    assert throttle_delay(550, "5.7.1 rate limited forever") is None


async def test_a_wrong_password_is_not_retried(server: FakeSmtpServer) -> None:
    channel = email_channel(server, password="wrong")
    try:
        with pytest.raises(DeliveryError) as failed:
            await channel.send(make_message(ChannelKind.EMAIL))
    finally:
        await channel.close()
    assert (failed.value.retryable, failed.value.code) == (False, "smtp_535")
    assert server.received == []


async def test_an_unreachable_server_is_retried_later() -> None:
    channel = EmailChannel("127.0.0.1", free_port(), sender=SENDER, starttls=False, timeout=2.0)
    try:
        with pytest.raises(DeliveryError) as failed:
            await channel.send(make_message(ChannelKind.EMAIL))
    finally:
        await channel.close()
    assert failed.value.retryable and failed.value.code == "connection"


# ---- sessions and TLS ----------------------------------------------------------------------


async def test_mails_in_a_row_share_one_session_and_a_burst_opens_no_more_than_allowed(
    harness: EmailHarness,
) -> None:
    await harness.channel.send(harness.message())
    await harness.channel.send(harness.message())
    first, second = harness.server.received
    assert first.peer == second.peer

    burst = [harness.message() for _ in range(12)]
    receipts = await asyncio.gather(*(harness.channel.send(m) for m in burst))
    assert len({r.provider_id for r in receipts}) == 12
    peers = {mail.peer for mail in harness.server.received}
    assert len(peers) <= harness.channel.limits.concurrency


async def test_starttls_encrypts_before_logging_in(tmp_path: Path, certificate: Certificate) -> None:
    async with FakeSmtpServer(tls="starttls", certificate=certificate, users=USERS) as server:
        channel = email_channel(server, starttls=True, tls_context=certificate.client_context())
        await channel.start(_no_events)
        try:
            await channel.send(make_message(ChannelKind.EMAIL, level=Level.ORANGE))
        finally:
            await channel.close()
        [mail] = server.received
    assert mail.tls and mail.login == "duty-room"


async def test_implicit_tls(certificate: Certificate) -> None:
    async with FakeSmtpServer(tls="implicit", certificate=certificate, users=USERS) as server:
        channel = email_channel(server, use_tls=True, tls_context=certificate.client_context())
        try:
            await channel.send(make_message(ChannelKind.EMAIL))
        finally:
            await channel.close()
        [mail] = server.received
    assert mail.tls


async def test_a_starttls_channel_never_falls_back_to_plain_text(server: FakeSmtpServer) -> None:
    # The server offers no STARTTLS; the password must not cross the wire in the clear.
    channel = email_channel(server, starttls=True)
    try:
        with pytest.raises(DeliveryError) as failed:
            await channel.send(make_message(ChannelKind.EMAIL))
    finally:
        await channel.close()
    assert not failed.value.retryable
    assert server.received == []


async def test_a_server_with_an_untrusted_certificate_is_not_sent_to(certificate: Certificate) -> None:
    async with FakeSmtpServer(tls="starttls", certificate=certificate, users=USERS) as server:
        channel = email_channel(server, starttls=True)  # the system CAs, which never signed the test certificate
        try:
            with pytest.raises(DeliveryError) as failed:
                await channel.send(make_message(ChannelKind.EMAIL))
        finally:
            await channel.close()
        assert server.received == []
    assert (failed.value.retryable, failed.value.code) == (False, "tls_certificate")
