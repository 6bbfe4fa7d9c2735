"""The emergency-broadcast gateway (应急广播): play the warning over a zone's loudspeakers, hear back when it played.

The wire contract for a gateway vendor is the README section "Emergency broadcast, 应急广播". In short:
  POST {url}/v1/broadcasts              engine -> gateway, 202 {"broadcast_id", "status": "accepted"}
  POST {public_url}/webhooks/broadcast/playback   gateway -> engine: playing | played | failed
Both directions carry X-Jiaoying-Timestamp and X-Jiaoying-Signature: sha256=HMAC-SHA256(secret,
f"{timestamp}.{raw body}"), and refuse anything signed more than five minutes away from now.

request_id is the delivery id: the gateway treats a repeated request_id as the same broadcast, so a
resend after a crash or a timeout plays the warning once. A zone confirming playback is the zone's
answer (叫应) — there is nobody else there to press a key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from alerting.answer.events import Answer, EventSink, InboundEvent, StatusUpdate
from alerting.deliver.port import (
    ChannelLimits,
    DeliveryError,
    OutboundMessage,
    Receipt,
    Webhook,
    WebhookReply,
    WebhookRequest,
)
from alerting.model.clock import Clock, SystemClock, reported_time
from alerting.model.domain import ChannelKind, Level, Purpose
from channels.http import error_for_status, error_for_transport, make_client, truncate

log = structlog.get_logger()

PROVIDER = "broadcast"
BROADCASTS_PATH = "/v1/broadcasts"
PLAYBACK_PATH = "/playback"  # below /webhooks/broadcast
SIGNATURE_HEADER = "X-Jiaoying-Signature"
TIMESTAMP_HEADER = "X-Jiaoying-Timestamp"
MAX_SKEW_S = 300  # a callback signed longer ago than this may be a replay

# How many times the zone reads the warning out: the graver, the more often.
REPEATS: Mapping[Level, int] = {Level.RED: 3, Level.ORANGE: 2, Level.YELLOW: 1, Level.BLUE: 1}
PLAYBACK_STATUSES = frozenset({"playing", "played", "failed"})
REPLY_STATUSES = PLAYBACK_STATUSES | {"accepted"}

# A gateway drives a few hundred zones in a county; it is the gateway, not us, that queues playback.
DEFAULT_LIMITS = ChannelLimits(concurrency=20, per_second=10.0, burst=20)


# ---- signing ------------------------------------------------------------------------------


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Jiaoying-Signature value: the timestamp is signed with the body so it cannot be swapped."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: bytes, body: bytes, now: datetime) -> dict[str, str]:
    timestamp = str(int(now.timestamp()))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def check_signature(secret: bytes, headers: Mapping[str, str], body: bytes, now: datetime) -> str | None:
    """Why a signed request must be refused, or None when it is genuine and fresh. Headers are lower-case."""
    timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
    given = headers.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isdigit() or not given:
        return "unsigned"
    if not hmac.compare_digest(given.encode(), signature(secret, timestamp, body).encode()):
        return "bad signature"
    if abs(now.timestamp() - int(timestamp)) > MAX_SKEW_S:
        return "stale timestamp"
    return None


# ---- payloads -----------------------------------------------------------------------------


def broadcast_request(message: OutboundMessage, *, callback_url: str, issued_at: datetime) -> dict[str, Any]:
    """What the gateway gets for one delivery to one zone."""
    zone_id = message.address.device_id
    if not zone_id:
        raise DeliveryError("a broadcast needs a zone (device_id)", retryable=False, code="bad_address")
    if message.purpose is Purpose.WARN:
        action = "play"
    elif message.purpose is Purpose.LIFT:
        action = "stop"
    else:
        raise DeliveryError(
            f"a broadcast zone cannot carry a {message.purpose} message", retryable=False, code="unsupported"
        )
    return {
        "request_id": message.delivery_id,
        "alert_id": message.alert_id,
        "zone_id": zone_id,
        "text": message.spoken_text,
        "level": message.level.value,
        "level_label": message.level.label,
        "exercise": message.exercise,
        # a lift stops what is playing and reads the all-clear once, whatever the level was
        "repeat": REPEATS[message.level] if action == "play" else 1,
        "action": action,
        "callback_url": callback_url,
        "issued_at": issued_at.isoformat(),
    }


def playback_events(data: Mapping[str, Any], received_at: datetime) -> tuple[InboundEvent, ...]:
    """A playback report as core events; ValueError says what is wrong with it."""
    request_id = data.get("request_id")
    status = data.get("status")
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("playback report without a request_id")
    if status not in PLAYBACK_STATUSES:
        raise ValueError(f"playback status {status!r} is not one of {sorted(PLAYBACK_STATUSES)}")
    at = reported_time(data.get("at"), received_at)
    broadcast_id = data.get("broadcast_id")
    provider_id = broadcast_id if isinstance(broadcast_id, str) else None
    detail = {k: data[k] for k in ("broadcast_id", "zone_id", "status") if data.get(k) is not None}
    if status == "failed":
        reason = data.get("detail")
        error = f"playback failed: {reason}" if reason else "playback failed"
        return (
            StatusUpdate(
                ChannelKind.BROADCAST,
                at,
                False,
                delivery_id=request_id,
                provider_id=provider_id,
                error=error,
                detail=detail,
            ),
        )
    return (
        StatusUpdate(ChannelKind.BROADCAST, at, True, delivery_id=request_id, provider_id=provider_id, detail=detail),
        Answer(
            ChannelKind.BROADCAST,
            at,
            delivery_id=request_id,
            feedback={"broadcast_status": status},
            event_id=f"broadcast:{request_id}:{status}",
        ),
    )


# ---- callbacks ----------------------------------------------------------------------------


class PlaybackWebhook:
    """/webhooks/broadcast/playback: the gateway's word on what a zone played."""

    name = "broadcast"

    def __init__(self, secret: bytes, clock: Clock) -> None:
        self._secret = secret
        self._clock = clock

    async def handle(self, request: WebhookRequest) -> WebhookReply:
        if request.path.rstrip("/") != PLAYBACK_PATH:
            return WebhookReply(404, "no such callback")
        if request.method != "POST":
            return WebhookReply(405, "POST only")
        now = self._clock.now()
        # replay protection is about the wire, so it runs on the wall clock even when the engine's clock is not
        refused = check_signature(self._secret, request.headers, request.body, datetime.now(UTC))
        if refused is not None:
            log.warning("broadcast.callback_refused", reason=refused)
            return WebhookReply(403, refused)
        try:
            data = json.loads(request.body)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            events = playback_events(data, now)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("broadcast.callback_unreadable", error=str(exc))
            return WebhookReply(400, str(exc))
        log.info(
            "broadcast.playback", delivery_id=data["request_id"], status=data["status"], zone_id=data.get("zone_id")
        )
        return WebhookReply(200, '{"ok":true}', "application/json", events)


# ---- the channel --------------------------------------------------------------------------


def _gateway_error(response: httpx.Response) -> tuple[str | None, str | None]:
    """The gateway's {"error": {"code", "message"}}, when it sent one."""
    with contextlib.suppress(ValueError):
        data = response.json()
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            code, text = error.get("code"), error.get("message")
            return (str(code) if code else None, str(text) if text else None)
    return None, None


class BroadcastChannel:
    """The Channel for BROADCAST deliveries: one zone per delivery, through the county's broadcast gateway."""

    kind = ChannelKind.BROADCAST
    provider = PROVIDER
    sandbox = False

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        public_url: str,
        limits: ChannelLimits = DEFAULT_LIMITS,
        timeout: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the broadcast gateway needs a shared secret")
        self.url = url
        self.limits = limits
        self.callback_url = f"{public_url.rstrip('/')}/webhooks/broadcast{PLAYBACK_PATH}"
        self._secret = secret.encode()
        self._clock: Clock = clock or SystemClock()
        self._client = make_client(url, timeout=timeout)
        self.webhooks: tuple[Webhook, ...] = (PlaybackWebhook(self._secret, self._clock),)
        self._log = log.bind(channel="broadcast", provider=PROVIDER)

    async def start(self, events: EventSink) -> None:
        # Playback reports arrive as webhooks, which the core serves; nothing to listen to here.
        self._log.info("broadcast.ready", gateway=self.url, callback_url=self.callback_url)

    async def send(self, message: OutboundMessage) -> Receipt:
        now = self._clock.now()
        payload = broadcast_request(message, callback_url=self.callback_url, issued_at=message.issued_at or now)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        # the gateway checks the timestamp against its own wall clock, whatever clock the engine runs on
        signed = signed_headers(self._secret, body, datetime.now(UTC))
        headers = {"Content-Type": "application/json; charset=utf-8", **signed}
        try:
            response = await self._client.post(BROADCASTS_PATH, content=body, headers=headers)
        except httpx.TransportError as exc:
            # The gateway may have taken it; the resend carries the same request_id and it plays once.
            raise error_for_transport(exc, provider=PROVIDER) from exc
        if response.status_code not in (200, 201, 202):
            code, text = _gateway_error(response)
            error = error_for_status(response, provider=PROVIDER, code=code, message=text)
            self._log.warning(
                "broadcast.refused",
                delivery_id=message.delivery_id,
                zone_id=payload["zone_id"],
                status=response.status_code,
                code=error.code,
                retryable=error.retryable,
            )
            raise error
        return self._receipt(message, response)

    def _receipt(self, message: OutboundMessage, response: httpx.Response) -> Receipt:
        try:
            data = response.json()
        except ValueError:
            data = None
        status = data.get("status", "accepted") if isinstance(data, dict) else None
        if not isinstance(data, dict) or status not in REPLY_STATUSES:
            # Safe to ask again: the gateway dedups on request_id.
            raise DeliveryError(
                f"broadcast gateway reply unreadable: {truncate(response.text)}", retryable=True, code="bad_reply"
            )
        if status == "failed":
            # A resend of a request the gateway already tried and could not play.
            raise DeliveryError("the zone could not play this broadcast", retryable=False, code="playback_failed")
        # The request_id names the broadcast at the gateway too, should a reply leave its own id out.
        broadcast_id = str(data.get("broadcast_id") or message.delivery_id)
        self._log.info(
            "broadcast.sent",
            delivery_id=message.delivery_id,
            alert_id=message.alert_id,
            zone_id=message.address.device_id,
            broadcast_id=broadcast_id,
            status=status,
        )
        return Receipt(
            provider=PROVIDER,
            provider_id=broadcast_id,
            delivered=status in ("playing", "played"),
            detail={"status": status},
        )

    async def close(self) -> None:
        await self._client.aclose()
