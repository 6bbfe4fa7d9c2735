"""Twilio SMS: the warning as a text with its answer link; a reply of 收到 (or 1, ok) counts as the answer.

Out: POST /2010-04-01/Accounts/{AccountSid}/Messages.json with To, From, Body and a StatusCallback
that carries the delivery id. Back, under /webhooks/twilio:
  /sms/status   Twilio's delivery reports (MessageStatus, ErrorCode)
  /sms/inbound  what recipients text back to the From number (From, Body)
A delivery report is not an answer; only a reply the recipient typed is.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import ClassVar, Literal

import structlog
from twilio.twiml.messaging_response import MessagingResponse

from alerting.answer.events import Answer, InboundEvent, InboundText, StatusUpdate
from alerting.deliver.port import ChannelLimits, OutboundMessage, Receipt, WebhookReply
from alerting.model.domain import ChannelKind
from alerting.model.privacy import mask_phone
from channels.twilio.common import (
    EMPTY_TWIML,
    TWIML,
    Callback,
    Route,
    TwilioChannel,
    call_twilio,
    callback_url,
)

log = structlog.get_logger()

STATUS_PATH = "/sms/status"
INBOUND_PATH = "/sms/inbound"

# Chinese text travels as UCS-2: 70 units fit one SMS, 67 each once it is split into parts.
SINGLE_SMS_UNITS = 70
SEGMENT_UNITS = 67
MAX_SEGMENTS = 10  # a warning that needs more parts than this is cut, never the link

DEFAULT_LIMITS = ChannelLimits(concurrency=20, per_second=10.0, burst=10)

DELIVERED = frozenset({"delivered", "read"})
NOT_DELIVERED = frozenset({"undelivered", "failed"})

# Compared after NFKC and case folding with spaces, punctuation and symbols dropped, so "ＯＫ！",
# " 1 " and "收到。" all read as an answer.
ANSWER_WORDS = frozenset({"1", "收到", "已收到", "收到了", "ok"})
HELP_WORDS = frozenset({"2", "求助", "需要帮助"})
HELP_TEXT = "回复1或“收到”确认已收到预警；回复2或“求助”表示需要帮助。"


# ---- the text that goes out ---------------------------------------------------------------


def ucs2_units(text: str) -> int:
    """Length as an SMS counts it: characters outside the BMP (emoji) take two units."""
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, units: int) -> str:
    out: list[str] = []
    used = 0
    for char in text:
        used += ucs2_units(char)
        if used > units:
            break
        out.append(char)
    return "".join(out)


def fit_sms(text: str, ack_url: str | None, max_segments: int = MAX_SEGMENTS) -> str:
    """`text` if it fits in max_segments parts; otherwise shortened before the answer link, which stays whole."""
    if ucs2_units(text) <= max(SINGLE_SMS_UNITS, SEGMENT_UNITS * max_segments):
        return text
    limit = SEGMENT_UNITS * max_segments
    at = text.rfind(ack_url) if ack_url else -1
    if at < 0:
        return _cut(text, limit - 1) + "…"
    # keep the short sentence that leads into the link ("请回复收到：") with it
    lead = max(text.rfind(mark, 0, at) for mark in "。！；!;") + 1
    if at - lead > 30:
        lead = at
    head, tail = text[:lead], text[lead:]
    return _cut(head, max(0, limit - ucs2_units(tail) - 1)) + "…" + tail


# ---- what comes back ----------------------------------------------------------------------


def normalize_reply(body: str) -> str:
    folded = unicodedata.normalize("NFKC", body).casefold()
    return "".join(c for c in folded if unicodedata.category(c)[0] not in "PZSC")


def reply_kind(body: str) -> Literal["answer", "help"] | None:
    """What a recipient's text means: an answer, a call for help, or neither."""
    word = normalize_reply(body)
    if word in ANSWER_WORDS:
        return "answer"
    if word in HELP_WORDS:
        return "help"
    return None


def message_status(callback: Callback) -> WebhookReply:
    """Twilio's report on one message: delivered, or why not. Queued, sent and the like say nothing new."""
    params = callback.params
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    sid = params.get("MessageSid") or params.get("SmsSid") or None
    if not (callback.delivery_id or sid):
        return WebhookReply()
    event: StatusUpdate | None = None
    if status in DELIVERED:
        event = StatusUpdate(
            ChannelKind.SMS,
            callback.at,
            True,
            delivery_id=callback.delivery_id,
            provider_id=sid,
            detail={"status": status},
        )
    elif status in NOT_DELIVERED:
        code = params.get("ErrorCode") or ""
        event = StatusUpdate(
            ChannelKind.SMS,
            callback.at,
            False,
            delivery_id=callback.delivery_id,
            provider_id=sid,
            error=f"twilio_{code}" if code else status,
            detail={"status": status, **({"error_code": code} if code else {})},
        )
    return WebhookReply(events=(event,) if event else ())


def inbound_message(callback: Callback) -> WebhookReply:
    """A text to our number: an answer (by phone number; the core finds the open alert), or kept and helped."""
    phone = callback.params.get("From") or ""
    body = callback.params.get("Body") or ""
    if not phone:
        return WebhookReply(body=EMPTY_TWIML, content_type=TWIML)
    kind = reply_kind(body)
    sid = callback.params.get("MessageSid") or callback.params.get("SmsSid")
    event_id = f"twilio-sms:{sid}" if sid else None
    event: InboundEvent
    if kind is None:
        event = InboundText(ChannelKind.SMS, callback.at, text=body, from_phone=phone, event_id=event_id)
        reply = MessagingResponse()
        reply.message(HELP_TEXT)
        return WebhookReply(body=str(reply), content_type=TWIML, events=(event,))
    event = Answer(ChannelKind.SMS, callback.at, from_phone=phone, help_needed=kind == "help", event_id=event_id)
    log.info("twilio.sms.reply", from_phone=mask_phone(phone), kind=kind)
    # No confirmation text: only the core knows whether this reply answered an open warning.
    return WebhookReply(body=EMPTY_TWIML, content_type=TWIML, events=(event,))


# ---- the adapter --------------------------------------------------------------------------


class TwilioSms(TwilioChannel):
    """SMS through Twilio's Messages API. Give TwilioVoice the same TwilioWebhook: both answer at /webhooks/twilio."""

    kind = ChannelKind.SMS
    default_limits = DEFAULT_LIMITS
    routes: ClassVar[Mapping[str, Route]] = {STATUS_PATH: message_status, INBOUND_PATH: inbound_message}
    no_phone = "no phone number for an SMS"
    max_segments = MAX_SEGMENTS

    async def send(self, message: OutboundMessage) -> Receipt:
        phone = self.phone_of(message)
        body = fit_sms(message.short_text, message.ack_url, self.max_segments)
        status_url = callback_url(self.public_url, STATUS_PATH, message.delivery_id)
        created = await call_twilio(
            lambda: self._client.messages.create_async(
                to=phone, from_=self.from_number, body=body, status_callback=status_url
            )
        )
        sid = str(created.sid)
        self.queued(message, sid)
        return Receipt(
            provider=self.provider,
            provider_id=sid,
            detail={"status": str(created.status), "segments": str(created.num_segments)},
        )
