"""/api/v1/sandbox/outbox: what the sandbox channels would have sent, answer links included.

The same records as the console's 模拟发件箱 (/console/sandbox/outbox), for the duty room and admins: a load
test or a newcomer reads the links here and answers through /ack/ as a grid worker's phone would.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from alerting.model.access import AccountRole, Principal
from alerting.model.domain import ChannelKind
from alerting.views.sandbox_outbox import OutboxItem, outbox_page
from alerting.web.api.auth import CoreDep, require
from alerting.web.api.numbers import AlertFilter, Offset
from alerting.web.api.problems import documented
from alerting.web.api.schemas import Page

router = APIRouter(prefix="/api/v1/sandbox", tags=["sandbox"], responses=documented(401, 403, 422))

Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
DutyRoom = Annotated[Principal, Depends(require(AccountRole.DUTY, AccountRole.ADMIN))]


@router.get("/outbox", response_model=Page[OutboxItem])
async def sandbox_outbox(
    core: CoreDep,
    who: DutyRoom,
    alert_id: AlertFilter = None,
    channel: Annotated[ChannelKind | None, Query(description="only this channel, e.g. sms")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[OutboxItem]:
    """What the sandbox channels would have sent, newest first: each message's text and its answer link
    (`ack_url`; open it, then POST to it, to answer 收到 as its recipient). For duty and admin keys only.

    It holds only what sandbox channels recorded **in this process** since it started, and only the most recent
    records of each channel (10,000 by default); it is empty when every channel is a real provider, and nothing
    in it reached anyone. Phone numbers are masked."""
    items, total = await outbox_page(
        core.db, core.outboxes, alert_id=alert_id, channel=channel, limit=limit, offset=offset
    )
    return Page[OutboxItem](items=items, total=total, limit=limit, offset=offset)
