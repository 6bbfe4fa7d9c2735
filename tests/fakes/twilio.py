"""A local Twilio for tests: the 2010-04-01 Messages and Calls endpoints, and the callbacks Twilio sends back.

The app checks HTTP basic auth (AccountSid, AuthToken) as Twilio does, parses the form fields, answers
201 with JSON shaped like Twilio's resources and errors with Twilio's {code, message, more_info,
status}. It records every request so tests can assert what went over the wire, and can be told to
refuse the next one. The callback builders sign with Twilio's own algorithm (RequestValidator) the
URL the adapter asked to be called at, or forge the signature.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from twilio.request_validator import RequestValidator

from alerting.deliver.port import WebhookRequest

API = "/2010-04-01/Accounts/{account_sid}"
Resource = Literal["Messages", "Calls"]
Failure = Literal["retryable", "rate_limited", "permanent"]

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

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None

    def fields(self, name: str) -> list[str]:
        return list(self.form.get(name, []))


@dataclass
class _Refusal:
    code: int
    headers: dict[str, str] = field(default_factory=dict)


class FakeTwilio:
    def __init__(self, account_sid: str | None = None, auth_token: str | None = None) -> None:
        self.account_sid = account_sid or _sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.received: list[Received] = []
        self._refusals: deque[_Refusal] = deque()
        self._validator = RequestValidator(self.auth_token)
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

    # ---- what was sent ------------------------------------------------------------------

    def created(self, resource: Resource) -> list[Received]:
        return [r for r in self.received if r.resource == resource and r.sid]

    def by_sid(self, sid: str) -> Received:
        return next(r for r in self.received if r.sid == sid)

    # ---- the API ------------------------------------------------------------------------

    async def _receive(self, resource: Resource, account_sid: str, request: Request) -> Received:
        form = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True)
        received = Received(resource, account_sid, _basic_auth(request), form, dict(request.headers))
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
        return None

    async def _messages(self, account_sid: str, request: Request) -> JSONResponse:
        received = await self._receive("Messages", account_sid, request)
        refused = self._refuse(received)
        if refused is not None:
            return refused
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
            return twilio_error(problem)
        assert to and from_ and body
        received.sid = sid = _sid("SM")
        received.status = 201
        return JSONResponse(self._message_json(sid, to, from_, body), status_code=201)

    async def _calls(self, account_sid: str, request: Request) -> JSONResponse:
        received = await self._receive("Calls", account_sid, request)
        refused = self._refuse(received)
        if refused is not None:
            return refused
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
            return twilio_error(problem)
        assert to and from_
        received.sid = sid = _sid("CA")
        received.status = 201
        return JSONResponse(self._call_json(sid, to, from_), status_code=201)

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
