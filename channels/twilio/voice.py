"""Twilio voice (智能外呼): the warning read out in Mandarin; pressing 1 is the answer, 2 asks for help.

Out: POST /2010-04-01/Accounts/{AccountSid}/Calls.json with inline Twiml (the warning said twice,
then a <Gather> for one key), a StatusCallback and MachineDetection=Enable. Back, under /webhooks/twilio:
  /voice/gather  the key pressed (Digits), with AnsweredBy when detection ran
  /voice/status  how the call ended (CallStatus)
A call picked up without a key press was delivered, not answered; an answering machine neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog
from twilio.twiml.voice_response import VoiceResponse

from alerting.answer.events import Answer, StatusUpdate
from alerting.deliver.port import ChannelLimits, OutboundMessage, Receipt, WebhookReply
from alerting.model.domain import ChannelKind
from channels.twilio.common import (
    TWIML,
    Callback,
    Route,
    TwilioChannel,
    call_twilio,
    callback_url,
)

log = structlog.get_logger()

GATHER_PATH = "/voice/gather"
STATUS_PATH = "/voice/status"

LANGUAGE = "zh-CN"
PROMPT = "收到请按1，需要帮助请按2"
THANKS = "已确认收到，谢谢。"
HELP_NOTED = "已记录您需要帮助，值班人员会尽快联系您。"
NO_KEY = "未收到有效按键，再见。"
GATHER_TIMEOUT_S = 10
TWIML_MAX_CHARS = 4000  # Twilio refuses a longer Twiml parameter
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
NOT_REACHED = frozenset({"busy", "no-answer", "failed", "canceled"})

# Twilio's default is one call per second per account; calls last a minute or two.
DEFAULT_LIMITS = ChannelLimits(concurrency=10, per_second=1.0, burst=1)


def is_machine(answered_by: str) -> bool:
    """AnsweredBy from answering machine detection: machine_start, machine_end_beep, ..., or fax."""
    return answered_by.startswith("machine") or answered_by == "fax"


# ---- the call's script --------------------------------------------------------------------


def _say(parent: VoiceResponse, text: str, loop: int | None = None) -> None:
    parent.say(text, language=LANGUAGE, loop=loop)


def _ask(response: VoiceResponse, action: str) -> None:
    gather = response.gather(num_digits=1, action=action, method="POST", timeout=GATHER_TIMEOUT_S)
    _say(gather, PROMPT)


def _script(spoken: str, gather_url: str) -> str:
    response = VoiceResponse()
    _say(response, spoken, loop=2)
    # <Gather> falls through to the next verb when no key comes: ask once more, then say goodbye
    _ask(response, gather_url)
    _ask(response, gather_url)
    _say(response, NO_KEY)
    response.hangup()
    return str(response.to_xml(xml_declaration=False))


def call_twiml(spoken_text: str, gather_url: str) -> str:
    """The TwiML Twilio runs when the call connects, shortened to fit Twilio's 4000-character limit."""
    spoken = spoken_text
    twiml = _script(spoken, gather_url)
    while len(twiml) > TWIML_MAX_CHARS and spoken:
        spoken = spoken[: max(0, len(spoken) - (len(twiml) - TWIML_MAX_CHARS) - 1)]
        twiml = _script(spoken + "…", gather_url)
    return twiml


def _reply(*texts: str, ask_again: str | None = None) -> WebhookReply:
    response = VoiceResponse()
    if ask_again:
        _ask(response, ask_again)
    for text in texts:
        _say(response, text)
    response.hangup()
    return WebhookReply(body=str(response), content_type=TWIML)


def _with_retry_mark(url: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("r", "1")]
    return urlunsplit(parts._replace(query=urlencode(query)))


# ---- what comes back ----------------------------------------------------------------------


def key_pressed(callback: Callback) -> WebhookReply:
    """The <Gather> result: 1 answers, 2 answers and asks for help; anything else gets one more try."""
    params = callback.params
    answered_by = params.get("AnsweredBy") or ""
    if is_machine(answered_by):
        log.info("twilio.voice.machine", delivery_id=callback.delivery_id, answered_by=answered_by)
        return _reply()
    digits = (params.get("Digits") or "").strip()
    if callback.delivery_id is None:
        log.warning("twilio.voice.gather_without_delivery", call_sid=params.get("CallSid"))
        return _reply(NO_KEY)
    if digits in ("1", "2"):
        help_needed = digits == "2"
        call = params.get("CallSid")
        event = Answer(
            ChannelKind.VOICE,
            callback.at,
            delivery_id=callback.delivery_id,
            help_needed=help_needed,
            event_id=f"twilio-gather:{call}:{digits}" if call else None,
        )
        reply = _reply(HELP_NOTED if help_needed else THANKS)
        return WebhookReply(body=reply.body, content_type=reply.content_type, events=(event,))
    if callback.query.get("r"):
        return _reply(NO_KEY)
    return _reply(NO_KEY, ask_again=_with_retry_mark(callback.url))


def call_status(callback: Callback) -> WebhookReply:
    """How the call ended. Completed = delivered (unless a machine took it); busy, no-answer... = redial."""
    params = callback.params
    status = params.get("CallStatus") or ""
    sid = params.get("CallSid") or None
    answered_by = params.get("AnsweredBy") or ""
    if not (callback.delivery_id or sid):
        return WebhookReply()
    detail = {
        key: value
        for key, value in (("status", status), ("answered_by", answered_by), ("duration_s", params.get("CallDuration")))
        if value
    }
    event: StatusUpdate | None = None
    if status == "completed" and is_machine(answered_by):
        event = StatusUpdate(
            ChannelKind.VOICE,
            callback.at,
            False,
            delivery_id=callback.delivery_id,
            provider_id=sid,
            error="answering_machine",
            detail=detail,
        )
    elif status == "completed":
        event = StatusUpdate(
            ChannelKind.VOICE, callback.at, True, delivery_id=callback.delivery_id, provider_id=sid, detail=detail
        )
    elif status in NOT_REACHED:
        event = StatusUpdate(
            ChannelKind.VOICE,
            callback.at,
            False,
            delivery_id=callback.delivery_id,
            provider_id=sid,
            error=status,
            detail=detail,
        )
    return WebhookReply(events=(event,) if event else ())


# ---- the adapter --------------------------------------------------------------------------


class TwilioVoice(TwilioChannel):
    """Calls through Twilio's Calls API. Give TwilioSms the same TwilioWebhook: both answer at /webhooks/twilio."""

    kind = ChannelKind.VOICE
    default_limits = DEFAULT_LIMITS
    routes: ClassVar[Mapping[str, Route]] = {GATHER_PATH: key_pressed, STATUS_PATH: call_status}
    no_phone = "no phone number to call"

    async def send(self, message: OutboundMessage) -> Receipt:
        phone = self.phone_of(message)
        twiml = call_twiml(message.spoken_text, callback_url(self.public_url, GATHER_PATH, message.delivery_id))
        status_url = callback_url(self.public_url, STATUS_PATH, message.delivery_id)
        created = await call_twilio(
            lambda: self._client.calls.create_async(
                to=phone,
                from_=self.from_number,
                twiml=twiml,
                status_callback=status_url,
                status_callback_event=list(STATUS_EVENTS),
                status_callback_method="POST",
                machine_detection="Enable",
            )
        )
        sid = str(created.sid)
        self.queued(message, sid)
        return Receipt(provider=self.provider, provider_id=sid, detail={"status": str(created.status)})
