"""Bad or oversized input from outside is refused before it is read whole, and nothing of it is stored."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from alerting.answer.events import InboundEvent
from alerting.deliver.port import WebhookReply, WebhookRequest
from alerting.model.clock import ManualClock, reported_time
from alerting.store.db import Database
from alerting.web.api.webhook_routes import MAX_WEBHOOK_BYTES
from tests.alerting.web.test_api import make_core, serve

RECEIVED = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)


class CountingWebhook:
    name = "probe"

    def __init__(self) -> None:
        self.requests: list[WebhookRequest] = []

    async def handle(self, request: WebhookRequest) -> WebhookReply:
        self.requests.append(request)
        return WebhookReply(200, "ok")


async def test_a_webhook_body_larger_than_any_provider_callback_is_refused_unread(
    db: Database, clock: ManualClock
) -> None:
    probe = CountingWebhook()
    events: list[InboundEvent] = []

    async def sink(event: InboundEvent) -> None:
        events.append(event)

    core = dataclasses.replace(make_core(db, clock), webhooks={"probe": probe}, inbound=sink)
    async with serve(core) as client:
        small = await client.post("/webhooks/probe/x", content=b"a=1", headers={"content-type": "text/plain"})
        huge = await client.post("/webhooks/probe/x", content=b"a" * (MAX_WEBHOOK_BYTES + 1))

        async def trickle() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while streaming too
            for _ in range(MAX_WEBHOOK_BYTES // 1024 + 2):
                yield b"b" * 1024

        streamed = await client.post("/webhooks/probe/x", content=trickle())
    assert small.status_code == 200
    assert (huge.status_code, streamed.status_code) == (413, 413)
    assert len(probe.requests) == 1 and events == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-07-01T09:59:30+08:00", RECEIVED - timedelta(seconds=30)),  # ISO with its zone
        (1782871170, datetime.fromtimestamp(1782871170, UTC)),  # Unix seconds
        (1782871170.5, datetime.fromtimestamp(1782871170.5, UTC)),
        (1782871170500, datetime.fromtimestamp(1782871170.5, UTC)),  # milliseconds
        ("2026-07-01T01:59:30", RECEIVED),  # no zone: unknowable, so the time we heard it
        ("next tuesday", RECEIVED),
        (True, RECEIVED),
        (10**30, RECEIVED),
        ("2026-07-01T03:00:00+00:00", RECEIVED),  # in the future: never later than we heard of it
        (None, RECEIVED),
    ],
)
def test_a_reported_time_is_iso_with_a_zone_or_unix_seconds_and_never_in_the_future(
    raw: object, expected: datetime
) -> None:
    assert reported_time(raw, RECEIVED) == expected
