"""What the Twilio SMS and voice adapters share: the REST client, failure classification, signed callbacks.

Both adapters talk to the 2010-04-01 REST API through the official `twilio` package with its aiohttp
client, pointed at JIAOYING_TWILIO_BASE_URL so tests reach a local fake. Both receive their callbacks
under one webhook name, "twilio": the two adapters register their paths on one TwilioWebhook, which
checks X-Twilio-Signature before any path sees the request.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import httpx
import structlog
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from alerting.answer.events import EventSink
from alerting.deliver.port import ChannelLimits, DeliveryError, OutboundMessage, Webhook, WebhookReply, WebhookRequest
from alerting.model.clock import Clock, SystemClock
from alerting.model.domain import ChannelKind
from alerting.model.privacy import mask_phone
from channels.http import error_for_status, truncate

log = structlog.get_logger()
# The package logs every request and response header at INFO; our own log lines say what was sent.
_http_log = logging.getLogger("channels.twilio.http")
_http_log.setLevel(logging.WARNING)

PROVIDER = "twilio"
TWILIO_API = "https://api.twilio.com"
WEBHOOK_NAME = "twilio"

# Twilio answers these with a 4xx, yet the same request can pass a little later.
RETRYABLE_CODES = frozenset(
    {
        20429,  # too many requests
        14107,  # SMS rate limit exceeded for the From number
        21611,  # the From number's queue of messages is full
    }
)
# Of those, the ones that only say "slower": they cost a delivery no attempt.
THROTTLED_CODES = frozenset({20429, 14107})
# Said about the recipient's number: no retry of this send can get through.
PERMANENT_CODES = frozenset(
    {
        21211,  # invalid 'To' phone number
        21610,  # the recipient replied STOP to this sender
        21614,  # 'To' is not a mobile number
        21217,  # the number to call does not appear to be valid
    }
)
_PHONE_LIKE = re.compile(r"\+?\d{7,15}")


def mask_phones(text: str) -> str:
    """Twilio's error messages quote the number; keep it out of logs and delivery records."""
    return _PHONE_LIKE.sub(lambda m: mask_phone(m.group(0)), text)


# ---- the REST client ----------------------------------------------------------------------


class TwilioRefusal(Exception):
    """Twilio answered with an error status. Carries the headers the twilio package's own exception drops."""

    def __init__(self, status: int, body: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"twilio answered {status}")
        self.status = status
        self.body = body
        self.headers = dict(headers)


class _RoutedHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """The twilio package's aiohttp client, sent to a configurable host, with bounded waits.

    The package builds absolute https://api.twilio.com URLs; rewriting the host here is the one place
    that points every resource at JIAOYING_TWILIO_BASE_URL. Its session is opened on the first request
    because aiohttp wants a running event loop.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout, logger=_http_log)
        self._base = base_url.rstrip("/")
        self.session: aiohttp.ClientSession | None = None  # what the package's request() uses

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the twilio HttpClient signature
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        parts = urlsplit(url)
        if parts.hostname == "twilio.com" or (parts.hostname or "").endswith(".twilio.com"):
            url = self._base + urlunsplit(("", "", parts.path, parts.query, ""))
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        if auth is not None:
            # aiohttp deprecates its `auth` argument (the package still uses it); the header is the same thing
            headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(auth[0], auth[1])}
        # Without an explicit timeout the package would let aiohttp wait forever.
        response: TwilioResponse = await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout or self.timeout,
            allow_redirects=allow_redirects,
        )
        if response.status_code >= 400:
            raise TwilioRefusal(response.status_code, response.text, response.headers or {})
        return response

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


def make_twilio_client(account_sid: str, auth_token: str, base_url: str = TWILIO_API, *, timeout: float = 10.0) -> Any:
    """One twilio Client per adapter for its whole life; close it with close_twilio_client."""
    client = Client(account_sid, auth_token, http_client=_RoutedHttpClient(base_url, timeout))
    # The settings say where Twilio is; TWILIO_EDGE / TWILIO_REGION in the environment must not move it.
    client.edge = None
    client.region = None
    return client


async def close_twilio_client(client: Any) -> None:
    await client.http_client.close()


def delivery_error(refusal: TwilioRefusal) -> DeliveryError:
    """Twilio's JSON error {code, message, more_info, status} as a DeliveryError with code twilio_<code>."""
    code: int | None = None
    message: str | None = None
    try:
        payload = json.loads(refusal.body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        raw_code = payload.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        raw_message = payload.get("message")
        message = str(raw_message) if raw_message else None
    response = httpx.Response(refusal.status, headers=refusal.headers, text=refusal.body)
    error = error_for_status(
        response,
        provider=PROVIDER,
        code=f"twilio_{code}" if code is not None else None,
        message=mask_phones(message if message else truncate(refusal.body)),
    )
    if code in THROTTLED_CODES:
        error.retryable = error.throttled = True
    elif code in RETRYABLE_CODES:
        error.retryable = True
    elif code in PERMANENT_CODES:
        error.retryable = False
    return error


def transport_error(exc: BaseException) -> DeliveryError:
    """No answer from Twilio at all (refused, dropped, timed out): it may be back soon."""
    kind = "timeout" if isinstance(exc, TimeoutError) else "connection"
    return DeliveryError(f"twilio unreachable ({kind}): {type(exc).__name__}", retryable=True, code=kind)


def client_error(exc: TwilioException) -> DeliveryError:
    """The twilio package refused or could not read an answer; the send may or may not have happened."""
    return DeliveryError(
        f"twilio client error: {truncate(mask_phones(str(exc)))}", retryable=True, code="twilio_client"
    )


async def call_twilio(request: Callable[[], Awaitable[Any]]) -> Any:
    """Run one create_async call (returns the created instance) and turn every failure into a DeliveryError."""
    try:
        return await request()
    except TwilioRefusal as refusal:
        raise delivery_error(refusal) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise transport_error(exc) from None
    except TwilioException as exc:
        raise client_error(exc) from None


def callback_url(public_url: str, path: str, delivery_id: str, **extra: str) -> str:
    """Where Twilio reports on one delivery: the delivery id rides in the query, which Twilio signs too."""
    query = urlencode({"d": delivery_id, **extra})
    return f"{public_url.rstrip('/')}/webhooks/{WEBHOOK_NAME}{path}?{query}"


# ---- callbacks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """A callback that passed the signature check, as a path handler sees it."""

    params: Mapping[str, str]  # the signed POST fields (or the query, for a GET)
    query: Mapping[str, str]  # our own parameters, put in the callback URL when we asked for it
    url: str  # the signed public URL, to build follow-up URLs (a re-prompt's Gather action)
    at: datetime

    @property
    def delivery_id(self) -> str | None:
        """`d`: which delivery the callback is about."""
        return self.query.get("d") or None


Route = Callable[[Callback], WebhookReply]

TWIML = "text/xml; charset=utf-8"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def signature_ok(validator: RequestValidator, request: WebhookRequest) -> bool:
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        return False
    # Twilio signs the URL it called plus the POST fields; a GET's parameters are in the URL.
    params = dict(request.form) if request.method.upper() == "POST" else {}
    return bool(validator.validate(request.url, params, signature))


class TwilioWebhook:
    """/webhooks/twilio/...: one signature check, then the path's handler. A forged call gets 403, no events."""

    name = WEBHOOK_NAME

    def __init__(self, auth_token: str, *, clock: Clock | None = None) -> None:
        self._validator = RequestValidator(auth_token)
        self._clock = clock or SystemClock()
        self._routes: dict[str, Route] = {}

    def route(self, path: str, handler: Route) -> None:
        """Register a path (e.g. "/sms/status"); the SMS and voice adapters share one webhook."""
        if path in self._routes:
            raise ValueError(f"twilio webhook path {path} is already handled")
        self._routes[path] = handler

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted(self._routes))

    async def handle(self, request: WebhookRequest) -> WebhookReply:
        handler = self._routes.get(request.path)
        if handler is None:
            return WebhookReply(status=404, body="unknown twilio callback path")
        if not signature_ok(self._validator, request):
            log.warning("twilio.webhook.bad_signature", path=request.path)
            return WebhookReply(status=403, body="bad X-Twilio-Signature")
        params = request.form if request.method.upper() == "POST" else request.query
        return handler(Callback(params=params, query=request.query, url=request.url, at=self._clock.now()))


class TwilioChannel:
    """What both Twilio adapters are: one account's REST client, a From number, and their paths on the shared
    webhook. A subclass names its kind, default limits and routes, and implements `send`."""

    kind: ChannelKind
    provider = PROVIDER
    sandbox = False
    default_limits: ChannelLimits
    routes: ClassVar[Mapping[str, Route]]
    no_phone: str  # the error when a recipient has no number

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        public_url: str,
        base_url: str = TWILIO_API,
        webhook: TwilioWebhook | None = None,
        limits: ChannelLimits | None = None,
        clock: Clock | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.limits = limits or self.default_limits
        self.from_number = from_number
        self.public_url = public_url
        self.webhook = webhook or TwilioWebhook(auth_token, clock=clock)
        for path, handler in self.routes.items():
            self.webhook.route(path, handler)
        self.webhooks: tuple[Webhook, ...] = (self.webhook,)
        self._client = make_twilio_client(account_sid, auth_token, base_url, timeout=timeout)

    async def start(self, events: EventSink) -> None:
        # Everything Twilio says comes back through the webhook; nothing to connect to here.
        log.info(f"twilio.{self.kind.value}.ready", from_number=mask_phone(self.from_number), paths=self.webhook.paths)

    def phone_of(self, message: OutboundMessage) -> str:
        if not message.address.phone:
            raise DeliveryError(self.no_phone, retryable=False, code="no_address")
        return message.address.phone

    def queued(self, message: OutboundMessage, sid: str) -> None:
        log.info(
            f"twilio.{self.kind.value}.queued",
            alert_id=message.alert_id,
            delivery_id=message.delivery_id,
            to=mask_phone(message.address.phone),
            sid=sid,
        )

    async def close(self) -> None:
        await close_twilio_client(self._client)
