"""Console page: 模拟发件箱, what the sandbox channels would have sent, with each answer link to click.

For the duty room and admins. A newcomer clicks a link and answers 收到 on the phone page as that grid worker
would, and the board moves. The same records as GET /api/v1/sandbox/outbox: only what this process's sandbox
channels recorded (the most recent of each), nothing when every channel is real.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from alerting.model.access import ACCOUNT_ROLE_LABEL, AccountRole
from alerting.model.domain import ChannelKind
from alerting.views.sandbox_outbox import outbox_page
from alerting.web.api.numbers import ROW_NUMBER_MAX, valid_alert_id
from alerting.web.console.directory_pages import pager
from alerting.web.console.web import PREFIX, PageError, Seeing, render
from alerting.web.core import Core

router = APIRouter(include_in_schema=False)

PATH = PREFIX + "/sandbox/outbox"
PAGE = 50


@router.get(PATH)
async def outbox(
    request: Request,
    who: Seeing,
    alert_id: Annotated[str, Query(max_length=12)] = "",  # a form sends its empty fields too
    channel: Annotated[str, Query(max_length=16)] = "",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    if who.principal.role not in (AccountRole.DUTY, AccountRole.ADMIN):
        raise PageError(403, f"模拟发件箱只对县值班员和管理员开放，{ACCOUNT_ROLE_LABEL[who.principal.role]}不能查看。")
    alert = alert_id.strip()
    if alert and not (alert.isascii() and alert.isdigit() and valid_alert_id(int(alert))):
        raise PageError(422, f"预警编号应是 1 到 {ROW_NUMBER_MAX} 之间的整数，收到的是“{alert}”。")
    if channel and channel not in {k.value for k in ChannelKind}:
        raise PageError(422, f"没有“{channel}”这个渠道。")
    core: Core = request.app.state.core
    items, total = await outbox_page(
        core.db,
        core.outboxes,
        alert_id=int(alert) if alert else None,
        channel=ChannelKind(channel) if channel else None,
        limit=PAGE,
        offset=offset,
    )
    kinds = [s.kind for s in core.outboxes]
    return render(
        request,
        who,
        "sandbox_outbox",
        items=items,
        alert_id=alert,
        channel=channel,
        kinds=kinds,
        keeps=bool(core.outboxes),
        pages=pager(request, total, offset, PAGE),
    )
