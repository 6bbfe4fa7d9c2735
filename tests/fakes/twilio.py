"""A local Twilio for tests: the 2010-04-01 Messages and Calls endpoints, and the callbacks Twilio sends back.

The app checks HTTP basic auth (AccountSid, AuthToken) as Twilio does, parses the form fields, answers
201 with JSON shaped like Twilio's resources and errors with Twilio's {code, message, more_info,
status}. It records every request so tests can assert what went over the wire, and can be told to
refuse the next one. The callback builders sign with Twilio's own algorithm (RequestValidator) the
URL the adapter asked to be called at, or forge the signature.

Opt-in, `FakeTwilio(paced=Paced(...))` is the paced world a county meets on a bad night: a per-second
limit on creates answered 429 (code 20429, Retry-After) beyond it, latency on every create, and the
status callbacks Twilio posts back by itself to the StatusCallback each message or call carried,
signed like Twilio's, in the order a real network delivers them: in order, early (the reports before
the create's 201, which waits a bounded time for them), twice, or out of order (a stale report after the
final one). What each message ends as is drawn from a seed, so a test knows the provider's last word on every delivery;
every create and every callback is logged with its monotonic and wall-clock time and what our engine
answered, so a test counts at the provider's side. Off by default: existing tests see no change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from twilio.request_validator import RequestValidator

from alerting.deliver.port import WebhookRequest

API = "/2010-04-01/Accounts/{account_sid}"
CALLBACKS_AT_ONCE = 50  # status callbacks in flight to the engine; more wait their turn in the fake
# An early report is posted before the create is answered, but real Twilio does not hold its 201 until our engine
# has taken the report: past this the 201 goes anyway (a busy engine must not turn early reports into timeouts).
EARLY_HOLDS_201_S = 2.0
Resource = Literal["Messages", "Calls"]
Failure = Literal["retryable", "rate_limited", "permanent"]
# how the status callbacks of one message or call reach the engine (see Paced)
CallbackMode = Literal["in_order", "early", "twice", "out_of_order"]

# Twilio's own wording for the errors the fake gives
ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20429: (429, "Too Many Requests"),
    20503: (503, "Service Unavailable"),
    21201: (400, "No 'To' number is specified"),
    21205: (400, "Url parameter is required."),
    21211: (400, "Invalid 'To' Phone Number"),
    21213: (400, "No 'From' number is specified"),
    21217: (400, "Phone number does not appear to be valid"),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21609: (400, "Invalid 'StatusCallback'"),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21614: (400, "'To' number is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
}


def twilio_error(code: int, detail: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    status, message = ERRORS[code]
    if detail:
        message = f"{message}: {detail}"
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _e164(number: str) -> bool:
    return number.startswith("+") and number[1:].isdigit() and 8 <= len(number) <= 16


def _segments(body: str) -> int:
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


@dataclass(frozen=True)
class Report:
    """Twilio's last word on one message or call: MessageStatus (with ErrorCode) or CallStatus (with AnsweredBy)."""

    status: str
    error_code: str | None = None  # SMS: why it was not delivered (30003 unreachable handset, ...)
    answered_by: str | None = None  # calls: what answering machine detection said (human, machine_start, ...)
    duration_s: int = 0  # calls: CallDuration of a completed call

    @property
    def reached(self) -> bool:
        """The message reached the phone, or a person picked up the call."""
        if self.status in ("delivered", "read"):
            return True
        return self.status == "completed" and not (self.answered_by or "").startswith(("machine", "fax"))


# the reports the paced world draws from
DELIVERED = Report("delivered")
UNDELIVERED = Report("undelivered", error_code="30003")  # unreachable destination handset
SMS_FAILED = Report("failed", error_code="30008")  # unknown error
ANSWERED = Report("completed", answered_by="human", duration_s=38)
MACHINE = Report("completed", answered_by="machine_start", duration_s=21)
NO_ANSWER = Report("no-answer")
BUSY = Report("busy")
CALL_FAILED = Report("failed")


@dataclass(frozen=True)
class Paced:
    """The paced world: how real Twilio treats a burst. Every field is opt-in; the default changes nothing.

    `callbacks` lists the ways reports may travel; each message or call gets one of them, drawn with its final
    report from `seed`, the number it went to and how many creates to that number came before it.
    """

    messages_per_second: int | None = None  # creates accepted per 1 s window; beyond: 429, code 20429
    calls_per_second: int | None = None
    retry_after_s: int = 1  # the Retry-After of a 429
    latency_s: float = 0.0  # every create waits this long before it is answered
    callbacks: tuple[CallbackMode, ...] = ()  # none: no status callbacks at all
    callback_delay_s: float = 0.2  # between the create's answer and each report after it
    sms_reports: tuple[tuple[Report, int], ...] = ((DELIVERED, 1),)  # (final report, weight)
    call_reports: tuple[tuple[Report, int], ...] = ((ANSWERED, 1),)
    seed: int = 2024


@dataclass
class Received:
    """One request as the fake saw it."""

    resource: Resource
    account_sid: str
    auth: tuple[str, str] | None
    form: dict[str, list[str]]
    headers: dict[str, str]
    status: int = 0  # what the fake answered
    sid: str | None = None  # set when a resource was created
    at: float = 0.0  # time.monotonic() when the request reached the fake
    wall: datetime | None = None  # the same moment on the wall clock
    answered_at: float = 0.0  # time.monotonic() when the fake answered it
    report: Report | None = None  # paced world: the final report this message or call gets
    mode: CallbackMode | None = None  # paced world: how its reports travel

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None

    def fields(self, name: str) -> list[str]:
        return list(self.form.get(name, []))

    @property
    def to(self) -> str:
        return self.field("To") or ""

    @property
    def delivery_id(self) -> str | None:
        """The `d` our engine put in the StatusCallback: which delivery this create was for."""
        url = self.field("StatusCallback")
        return parse_qs(urlsplit(url).query).get("d", [None])[0] if url else None

    @property
    def text(self) -> str:
        """What the person reads (Body) or hears (the inline Twiml)."""
        return self.field("Body") or self.field("Twiml") or ""


@dataclass
class SentCallback:
    """One status callback the paced world posted to our engine, and what the engine answered."""

    resource: Resource
    sid: str
    delivery_id: str | None
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    status: str  # MessageStatus or CallStatus
    final: bool  # the provider's last meaningful report on this message or call
    stale: bool = False  # older news than a report already sent (out of order)
    replay: bool = False  # an identical repeat of a callback already sent
    early: bool = False  # posted while its create waited for the 201 (which waits EARLY_HOLDS_201_S at most)
    at: float = 0.0  # time.monotonic() when posted
    wall: datetime | None = None
    answered: int = 0  # the HTTP status our engine answered; 0: no answer at all
    answered_at: float = 0.0
    error: str | None = None  # why there was no answer (connection refused, timeout)


@dataclass
class _Refusal:
    code: int
    headers: dict[str, str] = field(default_factory=dict)


class FakeTwilio:
    def __init__(
        self, account_sid: str | None = None, auth_token: str | None = None, *, paced: Paced | None = None
    ) -> None:
        self.account_sid = account_sid or _sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.received: list[Received] = []
        self._refusals: deque[_Refusal] = deque()
        self._validator = RequestValidator(self.auth_token)
        # the paced world (off unless `paced` is given; throttle() works either way)
        self.paced = paced or Paced()
        self.callbacks: list[SentCallback] = []
        self._windows: dict[Resource, tuple[int, int]] = {}  # resource -> (1 s window, creates accepted in it)
        self._epoch = time.monotonic()
        self._storm_until = 0.0
        self._storm_share = 0.0
        self._storm_rng = random.Random(self.paced.seed)
        self._nth: dict[tuple[Resource, str], int] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        # below the client's connection limit: requests queued inside httpx's pool cost time quadratic in their
        # number, and at a few hundred callbacks the fake's own loop (the test's) stalled seconds on them
        self._posting = asyncio.Semaphore(CALLBACKS_AT_ONCE)
        self.app = FastAPI()
        self.app.add_api_route(API + "/Messages.json", self._messages, methods=["POST"])
        self.app.add_api_route(API + "/Calls.json", self._calls, methods=["POST"])

    # ---- levers -------------------------------------------------------------------------

    def fail_next(self, how: Failure = "permanent", *, code: int | None = None, retry_after: str = "3") -> None:
        """Refuse the next create: 503, 429 with Retry-After, or a 400 with a Twilio code (default 21211)."""
        if how == "retryable":
            self._refusals.append(_Refusal(code or 20503))
        elif how == "rate_limited":
            self._refusals.append(_Refusal(code or 20429, {"Retry-After": retry_after}))
        else:
            self._refusals.append(_Refusal(code or 21211))

    def throttle(self, duration_s: float, *, share: float = 0.9) -> None:
        """A 429 storm: for the next `duration_s` seconds refuse `share` of all creates (drawn from the seed)."""
        self._storm_until = time.monotonic() + duration_s
        self._storm_share = share

    # ---- what was sent ------------------------------------------------------------------

    def created(self, resource: Resource) -> list[Received]:
        return [r for r in self.received if r.resource == resource and r.sid]

    def by_sid(self, sid: str) -> Received:
        return next(r for r in self.received if r.sid == sid)

    def idle_s(self) -> float:
        """Seconds since the last create request reached the fake (since it started, if none did)."""
        last = max((r.at for r in self.received), default=self._epoch)
        return time.monotonic() - last

    @property
    def reporting(self) -> bool:
        """Status callbacks are still on their way."""
        return any(not t.done() for t in self._pending)

    async def settle(self) -> None:
        """Wait until every status callback scheduled so far has been posted and answered."""
        while pending := [t for t in self._pending if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Drop the callbacks not yet posted and close the client that posts them."""
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ---- the API ------------------------------------------------------------------------

    async def _receive(self, resource: Resource, account_sid: str, request: Request) -> Received:
        at, wall = time.monotonic(), datetime.now(UTC)
        form = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True)
        received = Received(resource, account_sid, _basic_auth(request), form, dict(request.headers), at=at, wall=wall)
        self.received.append(received)
        return received

    def _refuse(self, received: Received) -> JSONResponse | None:
        if received.auth != (self.account_sid, self.auth_token) or received.account_sid != self.account_sid:
            received.status = 401
            return twilio_error(20003, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if self._refusals:
            refusal = self._refusals.popleft()
            received.status = ERRORS[refusal.code][0]
            return twilio_error(refusal.code, headers=refusal.headers)
        if self._throttled(received):
            received.status = 429
            return twilio_error(20429, headers={"Retry-After": str(self.paced.retry_after_s)})
        return None

    def _throttled(self, received: Received) -> bool:
        """The storm's share, then the account's per-second limit (counting the creates it let through)."""
        if received.at < self._storm_until and self._storm_rng.random() < self._storm_share:
            return True
        limit = self.paced.messages_per_second if received.resource == "Messages" else self.paced.calls_per_second
        if limit is None:
            return False
        window = int(received.at - self._epoch)
        current, count = self._windows.get(received.resource, (window, 0))
        if current != window:
            count = 0
        if count >= limit:
            return True
        self._windows[received.resource] = (window, count + 1)
        return False

    async def _answer(self, received: Received, response: JSONResponse) -> JSONResponse:
        """Answer after the paced world's latency; a created message or call then reports back by itself."""
        if self.paced.latency_s:
            await asyncio.sleep(self.paced.latency_s)
        if received.sid and self.paced.callbacks and received.field("StatusCallback"):
            await self._report(received)
        received.answered_at = time.monotonic()
        return response

    async def _messages(self, account_sid: str, request: Request) -> JSONResponse:
        received = await self._receive("Messages", account_sid, request)
        refused = self._refuse(received)
        if refused is not None:
            return await self._answer(received, refused)
        to, from_, body = received.field("To"), received.field("From"), received.field("Body")
        callback = received.field("StatusCallback")
        checks = (
            (not to, 21604),
            (not _e164(to or ""), 21211),
            (not from_, 21603),
            (not body, 21602),
            (len(body or "") > 1600, 21617),
            (callback is not None and urlsplit(callback).scheme not in ("http", "https"), 21609),
        )
        problem = next((code for failed, code in checks if failed), None)
        if problem is not None:
            received.status = ERRORS[problem][0]
            return await self._answer(received, twilio_error(problem))
        assert to and from_ and body
        received.sid = sid = _sid("SM")
        received.status = 201
        return await self._answer(received, JSONResponse(self._message_json(sid, to, from_, body), status_code=201))

    async def _calls(self, account_sid: str, request: Request) -> JSONResponse:
        received = await self._receive("Calls", account_sid, request)
        refused = self._refuse(received)
        if refused is not None:
            return await self._answer(received, refused)
        to, from_ = received.field("To"), received.field("From")
        checks = (
            (not to, 21201),
            (not _e164(to or ""), 21217),
            (not from_, 21213),
            (not (received.field("Url") or received.field("Twiml") or received.field("ApplicationSid")), 21205),
        )
        problem = next((code for failed, code in checks if failed), None)
        if problem is not None:
            received.status = ERRORS[problem][0]
            return await self._answer(received, twilio_error(problem))
        assert to and from_
        received.sid = sid = _sid("CA")
        received.status = 201
        return await self._answer(received, JSONResponse(self._call_json(sid, to, from_), status_code=201))

    def _message_json(self, sid: str, to: str, from_: str, body: str) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }

    def _call_json(self, sid: str, to: str, from_: str) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}"
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": "2010-04-01",
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": from_,
            "from_formatted": from_,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": _sid("PN"),
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {"notifications": f"{uri}/Notifications.json", "recordings": f"{uri}/Recordings.json"},
            "to": to,
            "to_formatted": to,
            "trunk_sid": None,
            "uri": f"{uri}.json",
        }

    # ---- callbacks Twilio would send ------------------------------------------------------

    def sign(self, url: str, params: dict[str, str]) -> str:
        """X-Twilio-Signature as Twilio computes it: HMAC-SHA1 of the URL and the sorted fields, keyed by the token."""
        return str(self._validator.compute_signature(url, params))

    def forge(self, url: str, params: dict[str, str]) -> str:
        """A well-formed signature made without the account's token."""
        return str(RequestValidator("not-" + self.auth_token).compute_signature(url, params))

    def callback(self, url: str, params: dict[str, str], *, forged: bool = False) -> WebhookRequest:
        """The POST Twilio makes to `url`, as the core's /webhooks route hands it to the adapter."""
        signature = self.forge(url, params) if forged else self.sign(url, params)
        parts = urlsplit(url)
        _, _, below = parts.path.partition("/webhooks/twilio")
        return WebhookRequest(
            method="POST",
            url=url,
            path=below,
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "user-agent": "TwilioProxy/1.1",
                "i-twilio-idempotency-token": secrets.token_hex(16),
                "x-twilio-signature": signature,
            },
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            form=dict(params),
            body=urlencode(params).encode(),
        )

    def message_status(
        self, sid: str, status: str, *, error_code: str | None = None, forged: bool = False
    ) -> WebhookRequest:
        """The delivery report for a sent message, to the StatusCallback it was sent with."""
        sent = self.by_sid(sid)
        url = sent.field("StatusCallback")
        assert url, "the message was sent without a StatusCallback"
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": sent.field("From") or "",
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": sent.field("To") or "",
        }
        if error_code:
            params["ErrorCode"] = error_code
        return self.callback(url, params, forged=forged)

    def inbound_sms(
        self, public_url: str, from_phone: str, body: str, *, to: str = "+15005550006", forged: bool = False
    ) -> WebhookRequest:
        """Someone texts our number; Twilio calls the number's "a message comes in" webhook."""
        sid = _sid("SM")
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "Body": body,
            "From": from_phone,
            "FromCountry": "CN",
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
            "ToCountry": "US",
        }
        return self.callback(f"{public_url.rstrip('/')}/webhooks/twilio/sms/inbound", params, forged=forged)

    def _call_params(self, sid: str, status: str, answered_by: str | None) -> dict[str, str]:
        call = self.by_sid(sid)
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": sid,
            "CallStatus": status,
            "Called": call.field("To") or "",
            "Caller": call.field("From") or "",
            "Direction": "outbound-api",
            "From": call.field("From") or "",
            "To": call.field("To") or "",
        }
        if answered_by:
            params["AnsweredBy"] = answered_by
        return params

    def call_status(
        self,
        sid: str,
        status: str,
        *,
        answered_by: str | None = None,
        duration_s: int | None = None,
        forged: bool = False,
    ) -> WebhookRequest:
        """A call progress event, to the call's StatusCallback (a StatusCallbackEvent the call asked for)."""
        call = self.by_sid(sid)
        url = call.field("StatusCallback")
        assert url, "the call was placed without a StatusCallback"
        event = {"ringing": "ringing", "in-progress": "answered", "initiated": "initiated"}.get(status, "completed")
        assert event in call.fields("StatusCallbackEvent") or event == "completed"
        params = self._call_params(sid, status, answered_by)
        params["CallbackSource"] = "call-progress-events"
        params["SequenceNumber"] = "0"
        if duration_s is not None:
            params["CallDuration"] = str(duration_s)
            params["Duration"] = str(-(-duration_s // 60))
        return self.callback(url, params, forged=forged)

    # ---- the paced world: callbacks Twilio posts by itself ---------------------------------

    def _draw(self, received: Received) -> tuple[Report, CallbackMode]:
        """This create's final report and how its reports travel: the same for the same seed, number and count."""
        key = (received.resource, received.to)
        nth = self._nth.get(key, 0)
        self._nth[key] = nth + 1
        rng = random.Random(f"{self.paced.seed}:{received.resource}:{received.to}:{nth}")
        reports = self.paced.sms_reports if received.resource == "Messages" else self.paced.call_reports
        report = rng.choices([r for r, _ in reports], weights=[w for _, w in reports])[0]
        return report, rng.choice(self.paced.callbacks)

    async def _report(self, received: Received) -> None:
        """Draw the create's fate; post its reports now (early, before the 201) or schedule them after it."""
        report, mode = self._draw(received)
        received.report, received.mode = report, mode
        steps = (
            self._message_steps(received, report)
            if received.resource == "Messages"
            else self._call_steps(received, report)
        )
        if mode == "early":
            for step in steps:
                step.early = True
            early = self._schedule(self._post_now(steps))
            await asyncio.wait({early}, timeout=EARLY_HOLDS_201_S)
            return
        if mode == "out_of_order":  # the final report overtakes the ones before it
            order = [steps[-1], *(replace(step, stale=True) for step in steps[:-1])]
        elif mode == "twice":  # the final report again, byte for byte (Twilio retrying a callback)
            order = [*steps, replace(steps[-1], replay=True)]
        else:
            order = steps
        self._schedule(self._post_later(order))

    def _schedule(self, posting: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(posting)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _post_now(self, callbacks: list[SentCallback]) -> None:
        for callback in callbacks:
            await self._post(callback)

    async def _post_later(self, callbacks: list[SentCallback]) -> None:
        for callback in callbacks:
            await asyncio.sleep(self.paced.callback_delay_s)
            await self._post(callback)

    def _signed(self, received: Received, params: dict[str, str]) -> dict[str, str]:
        url = received.field("StatusCallback") or ""
        return {
            "content-type": "application/x-www-form-urlencoded",
            "user-agent": "TwilioProxy/1.1",
            "i-twilio-idempotency-token": secrets.token_hex(16),
            "x-twilio-signature": self.sign(url, params),
        }

    def _message_steps(self, sms: Received, report: Report) -> list[SentCallback]:
        """queued/sent, then the final MessageStatus (with ErrorCode when it did not arrive)."""
        assert sms.sid
        url = sms.field("StatusCallback") or ""
        steps: list[SentCallback] = []
        for status in ("queued" if report.status == "failed" else "sent", report.status):
            final = status == report.status
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": "2010-04-01",
                "From": sms.field("From") or "",
                "MessageSid": sms.sid,
                "MessageStatus": status,
                "SmsSid": sms.sid,
                "SmsStatus": status,
                "To": sms.to,
            }
            if final and report.error_code:
                params["ErrorCode"] = report.error_code
            steps.append(
                SentCallback(
                    "Messages", sms.sid, sms.delivery_id, url, params, self._signed(sms, params), status, final
                )
            )
        return steps

    def _call_steps(self, call: Received, report: Report) -> list[SentCallback]:
        """initiated, ringing, in-progress (when picked up), then how the call ended: Twilio's call progress events,
        only those the call asked for (StatusCallbackEvent) and always the last."""
        assert call.sid
        url = call.field("StatusCallback") or ""
        progress = {"completed": ["initiated", "ringing", "in-progress"], "failed": ["initiated"]}
        statuses = [*progress.get(report.status, ["initiated", "ringing"]), report.status]
        asked = set(call.fields("StatusCallbackEvent"))
        event = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}
        steps: list[SentCallback] = []
        for status in statuses:
            final = status == report.status
            if not final and event[status] not in asked:
                continue
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": "2010-04-01",
                "CallSid": call.sid,
                "CallStatus": status,
                "Called": call.to,
                "Caller": call.field("From") or "",
                "Direction": "outbound-api",
                "From": call.field("From") or "",
                "To": call.to,
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(len(steps)),
                "Timestamp": format_datetime(datetime.now(UTC), usegmt=True),
            }
            if report.answered_by and status in ("in-progress", "completed"):
                params["AnsweredBy"] = report.answered_by
            if final:
                params["CallDuration"] = str(report.duration_s)
                params["Duration"] = str(-(-report.duration_s // 60))
            steps.append(
                SentCallback(
                    "Calls", call.sid, call.delivery_id, url, params, self._signed(call, params), status, final
                )
            )
        return steps

    async def _post(self, callback: SentCallback) -> None:
        """POST one callback, form-encoded, to the engine; only ever to a loopback address."""
        if self._http is None:
            limits = httpx.Limits(max_connections=CALLBACKS_AT_ONCE, max_keepalive_connections=CALLBACKS_AT_ONCE)
            self._http = httpx.AsyncClient(timeout=10.0, trust_env=False, limits=limits)
        async with self._posting:
            callback.at, callback.wall = time.monotonic(), datetime.now(UTC)
            self.callbacks.append(callback)
            if urlsplit(callback.url).hostname not in ("127.0.0.1", "localhost"):
                callback.error = "not a loopback address: the fake posts nowhere else"
                return
            try:
                answer = await self._http.post(
                    callback.url, content=urlencode(callback.params), headers=callback.headers
                )
                callback.answered = answer.status_code
            except httpx.HTTPError as exc:
                callback.error = f"{type(exc).__name__}: {exc}"
            callback.answered_at = time.monotonic()

    async def replay(self, callback: SentCallback) -> SentCallback:
        """Post a callback already sent once more, identical (same fields, signature and idempotency token)."""
        again = replace(callback, replay=True, early=False, answered=0, answered_at=0.0, error=None)
        await self._post(again)
        return again

    def gather_actions(self, sid: str) -> list[str]:
        """The action URLs of the <Gather> verbs in the TwiML the call was placed with."""
        return [g.attrib["action"] for g in self.twiml(sid).iter("Gather")]

    def twiml(self, sid: str) -> ET.Element:
        twiml = self.by_sid(sid).field("Twiml")
        assert twiml, "the call was placed without inline Twiml"
        return parse_twiml(twiml)

    def key_press(
        self,
        sid: str,
        digits: str,
        *,
        answered_by: str | None = None,
        action: str | None = None,
        forged: bool = False,
    ) -> WebhookRequest:
        """The person pressed `digits` ("" = none) at the call's first <Gather>, or at `action`."""
        url = action or self.gather_actions(sid)[0]
        params = self._call_params(sid, "in-progress", answered_by)
        params["Digits"] = digits
        if digits:
            params["FinishedOnKey"] = ""
        return self.callback(url, params, forged=forged)


def parse_twiml(text: str) -> ET.Element:
    """TwiML as Twilio reads it: XML with <Response> at the root."""
    root = ET.fromstring(text)  # noqa: S314 -- the adapter's own output, in a test
    assert root.tag == "Response", text
    return root


def _basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
