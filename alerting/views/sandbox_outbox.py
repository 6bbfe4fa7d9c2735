"""The sandbox outbox (模拟发件箱): what the sandbox channels of this process would have sent, newest first.

Read-only, for the API and the console alike. It holds only what sandbox channels recorded in this process
since it started, and of that only the most recent records each channel keeps; it is empty when every channel
is a real provider. Each item carries the answer link the message would have carried, so a load test or a
newcomer can answer through /ack/ exactly as the grid worker would.

Phone numbers are masked as on the alert pages and the board: the link, not the number, is what this is for.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlmodel import col

from alerting.deliver.outbox import SandboxOutbox, WouldHaveSent
from alerting.deliver.port import Address
from alerting.model.clock import utc
from alerting.model.domain import ChannelKind, Purpose
from alerting.model.privacy import mask_phone
from alerting.store.db import Database
from alerting.store.tables import Delivery
from alerting.views.labels import PURPOSE_LABEL, channel_label, label

_PURPOSE_LABEL = {**PURPOSE_LABEL, Purpose.HELP.value: "求助"}
_LONG_AGO = datetime.min.replace(tzinfo=UTC)


class OutboxItem(BaseModel):
    delivery_id: str
    alert_id: int
    target_id: str | None = Field(description="the target the delivery is for; null if its row is gone")
    channel: ChannelKind
    channel_label: str
    purpose: Purpose
    purpose_label: str
    step: int = Field(description="0 = first wave, k = escalation step k")
    name: str = Field(description="who (or which device) it would have reached")
    to: str | None = Field(description="the address used: phone numbers masked; WeCom user id, email or device id")
    title: str
    text: str = Field(description="the full message text, as the channel would have sent it")
    ack_url: str | None = Field(description="the answer link in the message; null when it asks for no answer")
    ack_path: str | None = Field(description="the same link without the site, to open on whichever host serves it")
    recorded_at: datetime | None = Field(description="when the engine handed it to the sandbox (UTC)")


async def outbox_page(
    db: Database,
    sources: Sequence[SandboxOutbox],
    *,
    alert_id: int | None = None,
    channel: ChannelKind | None = None,
    limit: int,
    offset: int,
) -> tuple[list[OutboxItem], int]:
    """One page, newest first, and how many records match in all.

    Each channel's outbox is in the order it took messages, so the page is among the newest `offset + limit`
    records of each channel: only those are looked up (their target, the time they were handed over) and
    merged by that time, each channel keeping its own order."""
    window = offset + limit
    matching: list[list[WouldHaveSent]] = []
    for source in sources:
        if channel is not None and source.kind != channel:
            continue
        # copied before anything awaits: the dispatcher appends to the outbox meanwhile
        records = list(source.outbox)
        matching.append([r for r in records if alert_id is None or r.message.alert_id == alert_id])
    total = sum(len(m) for m in matching)
    newest = [m[::-1][:window] for m in matching]
    rows = await _deliveries(db, {r.message.delivery_id for m in newest for r in m})

    def handed(r: WouldHaveSent) -> datetime:
        return rows.get(r.message.delivery_id, (None, None))[1] or _LONG_AGO

    merged = heapq.merge(*newest, key=handed, reverse=True)
    page = list(itertools.islice(merged, offset, window))
    return [_item(r, *rows.get(r.message.delivery_id, (None, None))) for r in page], total


async def _deliveries(db: Database, ids: Iterable[str]) -> dict[str, tuple[str, datetime | None]]:
    """delivery id -> (target id, when it was handed over), for the rows that still exist."""
    wanted = sorted(ids)
    found: dict[str, tuple[str, datetime | None]] = {}
    async with db.session() as s:
        for i in range(0, len(wanted), 500):
            q = select(col(Delivery.id), col(Delivery.target_id), col(Delivery.handed_at), col(Delivery.sent_at)).where(
                col(Delivery.id).in_(wanted[i : i + 500])
            )
            for delivery_id, target_id, handed_at, sent_at in await s.execute(q):
                at = handed_at or sent_at
                found[delivery_id] = (target_id, utc(at) if at else None)
    return found


def _item(record: WouldHaveSent, target_id: str | None, recorded_at: datetime | None) -> OutboxItem:
    m = record.message
    return OutboxItem(
        delivery_id=m.delivery_id,
        alert_id=m.alert_id,
        target_id=target_id,
        channel=m.channel,
        channel_label=channel_label(m.channel),
        purpose=m.purpose,
        purpose_label=label(_PURPOSE_LABEL, m.purpose),
        step=m.step,
        name=m.address.name,
        to=_to(m.channel, m.address),
        title=m.title,
        text=m.text,
        ack_url=m.ack_url,
        ack_path=_path(m.ack_url),
        recorded_at=recorded_at,
    )


def _to(channel: ChannelKind, a: Address) -> str | None:
    if channel is ChannelKind.WECOM and a.wecom_userid:
        return a.wecom_userid
    if channel is ChannelKind.EMAIL and a.email:
        return a.email
    return a.device_id or mask_phone(a.phone) or a.wecom_userid or a.email or None


def _path(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
