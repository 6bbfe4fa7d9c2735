"""企业微信 (WeCom) app messages: a button card per delivery out, the button press back as the answer.

Out: GET /cgi-bin/gettoken for an access token (cached until five minutes before it expires, shared
by concurrent sends), then POST /cgi-bin/message/send with a `template_card` of card_type
`button_interaction` whose buttons carry "ack:<delivery_id>" and "help:<delivery_id>". Where the
server does not know template cards (errcode 40008, as on older private deployments) or when
configured so, a `textcard` whose link is the ack page stands in.

Back: the app's callback URL (JIAOYING_PUBLIC_URL/webhooks/wecom/) gets WeCom's GET URL check and
POSTed encrypted XML; a `template_card_event` becomes an Answer for the delivery in its EventKey.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

import httpx
import structlog

from alerting.answer.events import Answer, EventSink, InboundEvent, InboundText
from alerting.deliver.port import (
    ChannelLimits,
    DeliveryError,
    OutboundMessage,
    Receipt,
    Webhook,
    WebhookReply,
    WebhookRequest,
)
from alerting.model.clock import Clock, SystemClock
from alerting.model.domain import ChannelKind, Level, Purpose
from channels.http import error_for_status, error_for_transport, make_client, redact, truncate
from channels.wecom.crypto import WeComCrypto, WeComCryptoError, cdata, parse_xml, xml_text

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

log = structlog.get_logger()

PROVIDER: Final = "wecom"
CardMode = Literal["template_card", "textcard"]

# errcodes (https://developer.work.weixin.qq.com/document/path/90313)
TOKEN_STALE = frozenset({40014, 42001})  # invalid / expired access_token: fetch a new one and try once more
CARD_UNSUPPORTED = frozenset({40008})  # the server does not know msgtype template_card
RATE_LIMITED: Final = {45009: 60.0, 45033: 1.0}  # api freq out of limit (per-minute windows); too many concurrent calls
RETRYABLE = frozenset({-1, 6000, *RATE_LIMITED})  # system busy; data version conflict

# WeCom: one app may send one member at most 30 messages a minute
DEFAULT_LIMITS = ChannelLimits(concurrency=20, per_second=20.0, burst=20, per_recipient_per_minute=30)
TOKEN_EARLY = timedelta(minutes=5)
DUPLICATE_CHECK_S = 1800  # WeCom drops an identical message to the same member within this window

ACK_KEY, HELP_KEY = "ack", "help"
REPLACE_NAME = {ACK_KEY: "已确认", HELP_KEY: "已请求帮助"}


# ---- the message on the wire ---------------------------------------------------------------


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _clip_bytes(text: str, limit: int) -> str:
    """WeCom counts textcard limits in UTF-8 bytes; cut on a character boundary."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "…"


def task_id(message: OutboundMessage) -> str:
    """Unique per app, as WeCom requires: a resend after a crash repeats it, a retry after a failure does not."""
    return f"jy-{message.delivery_id}-{message.attempt}"


def template_card_body(message: OutboundMessage, userid: str, agent_id: int) -> dict[str, Any]:
    card: dict[str, Any] = {
        "card_type": "button_interaction",
        "source": {"desc": "预警叫应", "desc_color": 2 if message.level in (Level.RED, Level.ORANGE) else 1},
        "main_title": {"title": _clip(message.title, 36), "desc": f"{message.level.label}预警 · {message.hazard}"},
        "sub_title_text": _clip(message.text, 160),
        "task_id": task_id(message),
        "button_list": [
            {"text": "收到", "style": 1, "key": f"{ACK_KEY}:{message.delivery_id}"},
            {"text": "需要帮助", "style": 2, "key": f"{HELP_KEY}:{message.delivery_id}"},
        ],
    }
    if message.about:
        card["horizontal_content_list"] = [{"keyname": "未回复", "value": _clip(message.about, 30)}]
    if message.ack_url:
        # tapping the card body opens the ack page, where numbers moved and needs can be filled in
        card["card_action"] = {"type": 1, "url": message.ack_url}
    return _envelope(userid, agent_id, "template_card", card)


def textcard_body(message: OutboundMessage, userid: str, agent_id: int, fallback_url: str) -> dict[str, Any]:
    card = {
        "title": _clip_bytes(message.title, 128),
        "description": _clip_bytes(message.text, 512),
        "url": message.ack_url or fallback_url,
        "btntxt": "收到",
    }
    return _envelope(userid, agent_id, "textcard", card)


def text_body(message: OutboundMessage, userid: str, agent_id: int) -> dict[str, Any]:
    return _envelope(userid, agent_id, "text", {"content": _clip_bytes(message.text, 2048)})


def _envelope(userid: str, agent_id: int, msgtype: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "touser": userid,
        "msgtype": msgtype,
        "agentid": agent_id,
        msgtype: content,
        "enable_id_trans": 0,
        "enable_duplicate_check": 1,
        "duplicate_check_interval": DUPLICATE_CHECK_S,
    }


def _encode(body: dict[str, Any]) -> bytes:
    # WeCom refuses \uXXXX escapes (errcode 40033): send the Chinese as UTF-8
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def error_for_errcode(data: dict[str, Any], what: str = "the message") -> DeliveryError:
    raw = data.get("errcode")
    errcode = raw if isinstance(raw, int) else -1
    errmsg = truncate(str(data.get("errmsg", "")), 200)
    return DeliveryError(
        redact(f"wecom refused {what}: errcode {errcode} {errmsg}"),
        retryable=errcode in RETRYABLE or errcode in TOKEN_STALE,
        code=f"wecom_{errcode}",
        retry_after=RATE_LIMITED.get(errcode),
        throttled=errcode in RATE_LIMITED,
    )


# ---- the adapter ---------------------------------------------------------------------------


class WeComChannel:
    kind = ChannelKind.WECOM
    provider = PROVIDER
    sandbox = False

    def __init__(
        self,
        corp_id: str,
        secret: str,
        agent_id: int,
        *,
        token: str,
        aes_key: str,
        base_url: str = "https://qyapi.weixin.qq.com",
        public_url: str,
        limits: ChannelLimits | None = None,
        card_mode: CardMode = "template_card",
        clock: Clock | None = None,
        timeout: float = 10.0,
    ) -> None:
        if card_mode not in ("template_card", "textcard"):
            raise ValueError(f"card_mode is template_card or textcard, not {card_mode!r}")
        self.corp_id = corp_id
        self.agent_id = agent_id
        self.limits = limits or DEFAULT_LIMITS
        self.card_mode: CardMode = card_mode
        self.public_url = public_url.rstrip("/")
        self._secret = secret
        self._clock = clock or SystemClock()
        self._client = make_client(base_url, timeout=timeout)
        self._token: str | None = None
        self._token_until = datetime.min.replace(tzinfo=UTC)
        self._token_lock = asyncio.Lock()
        self.callback = WeComCallback(WeComCrypto(token, aes_key, corp_id), agent_id=agent_id, clock=self._clock)
        self.webhooks: tuple[Webhook, ...] = (self.callback,)

    async def start(self, events: EventSink) -> None:
        # answers come in through the webhook, which the core serves and feeds to the engine
        log.info(
            "wecom.start",
            agent_id=self.agent_id,
            card_mode=self.card_mode,
            callback_url=f"{self.public_url}/webhooks/{self.callback.name}/",
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, message: OutboundMessage) -> Receipt:
        userid = message.address.wecom_userid
        if not userid:
            raise DeliveryError("the recipient has no WeCom account", retryable=False, code="wecom_no_userid")
        msgtype = self._msgtype(message)
        data = await self._send_body(self._body(message, userid, msgtype))
        if msgtype == "template_card" and data.get("errcode") in CARD_UNSUPPORTED:
            # once refused, this server will refuse every card: stay on textcards for this run
            self.card_mode = msgtype = "textcard"
            log.warning("wecom.template_card_unsupported", errcode=data.get("errcode"), fallback="textcard")
            data = await self._send_body(self._body(message, userid, msgtype))
        if data.get("errcode") != 0:
            raise error_for_errcode(data)
        for field in ("invaliduser", "unlicenseduser"):
            if data.get(field):
                # WeCom took the request but this member cannot receive it (left, not visible to the app, no licence)
                raise DeliveryError(f"wecom did not reach the member ({field})", retryable=False, code=f"wecom_{field}")
        log.debug("wecom.sent", alert_id=message.alert_id, delivery_id=message.delivery_id, msgtype=msgtype)
        detail: dict[str, Any] = {"msgtype": msgtype}
        if msgtype == "template_card":
            detail["task_id"] = task_id(message)
        return Receipt(provider=PROVIDER, provider_id=str(data.get("msgid") or task_id(message)), detail=detail)

    def _msgtype(self, message: OutboundMessage) -> str:
        # a lift needs no answer: plain text, no buttons to press
        return "text" if message.purpose is Purpose.LIFT else self.card_mode

    def _body(self, message: OutboundMessage, userid: str, msgtype: str) -> dict[str, Any]:
        if msgtype == "text":
            return text_body(message, userid, self.agent_id)
        if msgtype == "textcard":
            return textcard_body(message, userid, self.agent_id, self.public_url)
        return template_card_body(message, userid, self.agent_id)

    async def _send_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST message/send; a stale token is dropped, fetched again once, and the send repeated once."""
        token = await self._access_token()
        data = await self._post_send(token, body)
        if data.get("errcode") in TOKEN_STALE:
            log.info("wecom.token_stale", errcode=data.get("errcode"))
            self._drop_token(token)
            data = await self._post_send(await self._access_token(), body)
        return data

    async def _post_send(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(
                "/cgi-bin/message/send",
                params={"access_token": token},
                content=_encode(body),
                headers={"content-type": "application/json; charset=utf-8"},
            )
        except httpx.TransportError as exc:
            raise error_for_transport(exc, provider=PROVIDER) from None
        return self._json(response)

    # ---- access token -----------------------------------------------------------------

    async def _access_token(self) -> str:
        if self._token and self._clock.now() < self._token_until:
            return self._token
        async with self._token_lock:
            # whoever held the lock before us may have fetched it already
            if self._token and self._clock.now() < self._token_until:
                return self._token
            self._token, lifetime = await self._fetch_token()
            early = min(TOKEN_EARLY, lifetime / 2)
            self._token_until = self._clock.now() + lifetime - early
            return self._token

    def _drop_token(self, token: str) -> None:
        # only the token that was refused: a concurrent send may already have fetched its successor
        if self._token == token:
            self._token = None

    async def _fetch_token(self) -> tuple[str, timedelta]:
        try:
            response = await self._client.get(
                "/cgi-bin/gettoken", params={"corpid": self.corp_id, "corpsecret": self._secret}
            )
        except httpx.TransportError as exc:
            raise error_for_transport(exc, provider=PROVIDER) from None
        data = self._json(response)
        token = data.get("access_token")
        if data.get("errcode") != 0 or not isinstance(token, str) or not token:
            error = error_for_errcode(data, "gettoken (check the corp id and the app secret)")
            log.error("wecom.gettoken_failed", code=error.code)
            raise error
        log.info("wecom.token_fetched", expires_in=data.get("expires_in"))
        return token, timedelta(seconds=int(data.get("expires_in", 7200)))

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise error_for_status(response, provider=PROVIDER)
        try:
            data = response.json()
        except ValueError:
            raise DeliveryError(
                f"wecom answered 200 with no JSON: {truncate(response.text, 100)}",
                retryable=True,
                code="wecom_bad_json",
            ) from None
        if not isinstance(data, dict):
            raise DeliveryError("wecom answered 200 with unexpected JSON", retryable=True, code="wecom_bad_json")
        return data


# ---- the callback --------------------------------------------------------------------------


class WeComCallback:
    """The app's callback URL: GET is WeCom checking the URL, POST carries encrypted events."""

    name = PROVIDER

    def __init__(self, crypto: WeComCrypto, *, agent_id: int, clock: Clock | None = None, remember: int = 4096) -> None:
        self.crypto = crypto
        self.agent_id = agent_id
        self._clock = clock or SystemClock()
        # WeCom retries a callback it got no answer to within 5 s; drop the repeats (keyed as its docs advise)
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._remember = remember

    async def handle(self, request: WebhookRequest) -> WebhookReply:
        q = request.query
        sig, timestamp, nonce = q.get("msg_signature"), q.get("timestamp"), q.get("nonce")
        if not (sig and timestamp and nonce):
            return WebhookReply(403, "missing msg_signature, timestamp or nonce")
        if request.method == "GET":
            return self._verify_url(sig, timestamp, nonce, q.get("echostr", ""))
        if request.method != "POST":
            return WebhookReply(405)
        try:
            encrypted = xml_text(parse_xml(request.body), "Encrypt")
            if not encrypted:
                raise WeComCryptoError("no <Encrypt> in the body")
            plain = parse_xml(self.crypto.open(sig, timestamp, nonce, encrypted))
        except WeComCryptoError as exc:
            log.warning("wecom.callback_refused", reason=str(exc))
            return WebhookReply(403, "forbidden")
        return self._events(plain, nonce)

    def _verify_url(self, sig: str, timestamp: str, nonce: str, echostr: str) -> WebhookReply:
        # a '+' that was not percent-encoded arrives as a space; base64 has no spaces
        echostr = echostr.replace(" ", "+")
        try:
            return WebhookReply(200, self.crypto.open(sig, timestamp, nonce, echostr))
        except WeComCryptoError as exc:
            log.warning("wecom.url_check_refused", reason=str(exc))
            return WebhookReply(403, "forbidden")

    def _events(self, plain: Element, nonce: str) -> WebhookReply:
        agent = xml_text(plain, "AgentID")
        if agent and agent != str(self.agent_id):
            log.info("wecom.callback_other_app", agent_id=agent)
            return WebhookReply(200)
        user = xml_text(plain, "FromUserName") or ""
        created = xml_text(plain, "CreateTime") or ""
        at = self._at(created)
        msgtype, event = xml_text(plain, "MsgType"), xml_text(plain, "Event")
        if msgtype == "text":
            msg_id = xml_text(plain, "MsgId") or created
            text = InboundText(
                channel=ChannelKind.WECOM,
                at=at,
                text=xml_text(plain, "Content") or "",
                from_user=user,
                event_id=f"wecom-text:{user}:{msg_id}",
            )
            return WebhookReply(200, events=self._unseen((user, msg_id, "text"), text))
        if msgtype != "event" or event != "template_card_event":
            return WebhookReply(200)
        kind, _, delivery_id = (xml_text(plain, "EventKey") or "").partition(":")
        if kind not in (ACK_KEY, HELP_KEY) or not delivery_id:
            return WebhookReply(200)
        answer = Answer(
            channel=ChannelKind.WECOM,
            at=at,
            delivery_id=delivery_id,
            help_needed=kind == HELP_KEY,
            event_id=f"wecom-button:{user}:{created}:{kind}:{delivery_id}",
        )
        events = self._unseen((user, created, f"{kind}:{delivery_id}"), answer)
        # the passive reply turns the pressed button into a label, so the card shows it was taken
        reply = (
            f"<xml><ToUserName>{cdata(user)}</ToUserName><FromUserName>{cdata(self.crypto.receive_id)}</FromUserName>"
            f"<CreateTime>{int(self._clock.now().timestamp())}</CreateTime>"
            f"<MsgType>{cdata('update_button')}</MsgType>"
            f"<Button><ReplaceName>{cdata(REPLACE_NAME[kind])}</ReplaceName></Button></xml>"
        )
        sealed = self.crypto.seal(reply, timestamp=str(int(self._clock.now().timestamp())), nonce=nonce)
        return WebhookReply(200, sealed.envelope(), "application/xml; charset=utf-8", events)

    def _unseen(self, key: tuple[str, str, str], event: InboundEvent) -> tuple[InboundEvent, ...]:
        if key in self._seen:
            return ()
        self._seen[key] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        return (event,)

    def _at(self, create_time: str) -> datetime:
        try:
            return datetime.fromtimestamp(int(create_time), UTC)
        except (ValueError, OverflowError, OSError):
            return self._clock.now()
