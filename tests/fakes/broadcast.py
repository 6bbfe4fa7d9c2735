"""A county emergency-broadcast gateway as the README's gateway contract describes it, for tests.

It checks the signature and timestamp on every request (its own HMAC code, not the adapter's, so
a mistake on either side shows), records what arrived, plays each request_id once, can be told to
fail the next request, and builds the playback callbacks a real gateway would send: signed,
forged, or signed too long ago.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from alerting.deliver.port import WebhookRequest

Failure = Literal["retryable", "rate_limited", "permanent"]
REQUIRED = ("request_id", "alert_id", "zone_id", "text", "level", "action", "callback_url", "issued_at")
MAX_SKEW_S = 300


def _sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


@dataclass
class Broadcast:
    broadcast_id: str
    request: dict[str, Any]
    status: str = "accepted"  # accepted | playing | played | failed


@dataclass
class Arrival:
    """One POST as it reached the gateway, whether or not it was let in."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


@dataclass
class FakeBroadcastGateway:
    secret: str
    zones: set[str] | None = None  # None: every zone exists
    arrivals: list[Arrival] = field(default_factory=list)
    broadcasts: dict[str, Broadcast] = field(default_factory=dict)  # by request_id
    _failures: deque[Failure] = field(default_factory=deque)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.app = FastAPI()
        self.app.add_api_route("/v1/broadcasts", self._broadcast, methods=["POST"])

    # -- levers -----------------------------------------------------------------------------

    def fail_next(self, how: Failure) -> None:
        self._failures.append(how)

    def progress(self, request_id: str, status: str) -> None:
        """The zone got on with it: later resends of this request are answered with this status."""
        self.broadcasts[request_id].status = status

    @property
    def played(self) -> list[dict[str, Any]]:
        """Each broadcast the gateway took on, once, whatever number of times it was sent."""
        return [b.request for b in self.broadcasts.values()]

    # -- the gateway's endpoint ---------------------------------------------------------------

    async def _broadcast(self, request: Request) -> JSONResponse:
        body = await request.body()
        reply = self._answer(request.headers, body)
        self.arrivals.append(Arrival({k.lower(): v for k, v in request.headers.items()}, body, reply.status_code))
        return reply

    def _answer(self, headers: Headers, body: bytes) -> JSONResponse:
        timestamp = headers.get("x-jiaoying-timestamp", "")
        given = headers.get("x-jiaoying-signature", "")
        if not timestamp.isdigit() or not hmac.compare_digest(given, _sign(self.secret, timestamp, body)):
            return _error(401, "bad_signature", "signature does not match the body")
        if abs(time.time() - int(timestamp)) > MAX_SKEW_S:
            return _error(401, "stale_request", "timestamp more than 5 minutes away")
        if self._failures:
            how = self._failures.popleft()
            if how == "retryable":
                return _error(503, "busy", "playout controller busy")
            if how == "rate_limited":
                return _error(429, "rate_limited", "too many broadcasts", {"Retry-After": "7"})
            return _error(422, "zone_offline", "the zone's loudspeakers are out of service")
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, "invalid_request", "body is not JSON")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            return _error(400, "invalid_request", f"missing {', '.join(missing)}")
        if data["action"] not in ("play", "stop"):
            return _error(400, "invalid_request", f"unknown action {data['action']!r}")
        if self.zones is not None and data["zone_id"] not in self.zones:
            return _error(404, "unknown_zone", f"no zone {data['zone_id']}")
        seen = self.broadcasts.get(data["request_id"])
        if seen is not None:
            return JSONResponse({"broadcast_id": seen.broadcast_id, "status": seen.status}, status_code=200)
        taken = Broadcast(f"bc-{next(self._ids):06d}", data)
        self.broadcasts[data["request_id"]] = taken
        return JSONResponse({"broadcast_id": taken.broadcast_id, "status": "accepted"}, status_code=202)

    # -- callbacks the gateway sends ----------------------------------------------------------

    def playback_callback(
        self,
        request_id: str,
        status: str,
        *,
        detail: str | None = None,
        forged: bool = False,
        age_s: float = 0.0,
    ) -> WebhookRequest:
        """The gateway's report on a broadcast, as the engine's /webhooks/broadcast/playback receives it."""
        taken = self.broadcasts[request_id]
        if not forged:
            taken.status = status
        report = {
            "request_id": request_id,
            "broadcast_id": taken.broadcast_id,
            "zone_id": taken.request["zone_id"],
            "status": status,
            "at": datetime.now(UTC).isoformat(),
            "detail": detail,
        }
        body = json.dumps(report, ensure_ascii=False).encode()
        timestamp = str(int(time.time() - age_s))
        sig = _sign("not-the-shared-secret" if forged else self.secret, timestamp, body)
        return WebhookRequest(
            method="POST",
            url=taken.request["callback_url"],
            path="/playback",
            headers={
                "content-type": "application/json",
                "x-jiaoying-timestamp": timestamp,
                "x-jiaoying-signature": sig,
            },
            query={},
            form={},
            body=body,
        )
